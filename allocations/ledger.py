"""The GPU-hour ledger's services: each movement of hours is one function here; nothing else writes it.

Every service guarantees:
- one database transaction, whose entries sum to zero (checked before it commits);
- account balances change only inside that transaction, under row locks, so `balance` always equals the sum
  of the account's entries;
- an idempotency key: calling again with a key already used returns the first transaction and moves nothing;
- bad input raises a `LedgerError` with a message for the user, and leaves the ledger as it was.

Lock order, the reason two services can never deadlock: pool accounts first, then allocation accounts, then
sink accounts, and inside each group by primary key. Every service names the accounts it will touch up front,
and `_record` locks them all in that order before it reads a single balance.

Pools can never go below zero (the services check, and a database CHECK backs them up). Allocations can: a job
that ran past its award still used the hours, and usage is recorded, never refused. A negative allocation
balance is that overrun, in plain sight.
"""

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from django.db import IntegrityError, connection, transaction
from django.db.models import F, Sum
from django.utils import timezone

from programmes.models import FundPool

from .models import Allocation, LedgerAccount, LedgerEntry, LedgerTransaction

SECONDS_PER_HOUR = 3600
# Far beyond any real budget (about 277 million GPU-hours), far below what a BigInteger holds.
MAX_SECONDS = 10**12

Kind = LedgerAccount.Kind
Type = LedgerTransaction.Type
USAGE_TYPES = (Type.CHARGE, Type.REFUND, Type.ADJUST)


class LedgerError(ValueError):
    """A movement the ledger refuses; the message is written for the person who asked for it."""

    field: str | None = None  # the form field the message belongs to, when there is one

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        if field is not None:
            self.field = field


class InvalidAmount(LedgerError):
    field = "hours"


class InsufficientHours(LedgerError):
    field = "hours"


class OutsideWindow(LedgerError):
    field = "effective_date"


class SystemMismatch(LedgerError):
    field = "destination"


class WrongState(LedgerError):
    pass


class IdempotencyKeyReused(LedgerError):
    """The key was already used for a different kind of movement: a client bug, never a retry."""


class UnbalancedTransaction(AssertionError):
    """A service built entries that do not sum to zero: a bug in this module, never the user's fault."""


# Units -----------------------------------------------------------------------------------------------------


def hours_to_seconds(hours) -> int:
    """GPU-hours as typed (text, int or Decimal; never float) to whole GPU-seconds; finer is refused."""
    if isinstance(hours, float):
        raise TypeError("pass GPU-hours as text or Decimal: floats cannot hold them exactly")
    text = str(hours).strip().replace(",", "")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidAmount("Enter GPU-hours as a number, like 1500 or 12.5") from None
    if not value.is_finite():
        raise InvalidAmount("Enter GPU-hours as a number, like 1500 or 12.5")
    if value <= 0:
        raise InvalidAmount("GPU-hours must be more than 0")
    seconds = value * SECONDS_PER_HOUR
    if abs(value) > Decimal(MAX_SECONDS) / SECONDS_PER_HOUR:
        raise InvalidAmount("That is more GPU-hours than the portal can account for")
    if seconds != seconds.to_integral_value():
        raise InvalidAmount("GPU-hours cannot be more precise than one GPU-second (1/3600 of an hour)")
    return int(seconds)


def seconds_to_hours(seconds: int) -> Decimal:
    """Whole GPU-seconds as GPU-hours rounded to two decimals, for display only."""
    return (Decimal(seconds) / SECONDS_PER_HOUR).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def format_gpu_hours(seconds: int | None) -> str:
    """`576000000` → "160,000"; `5400` → "1.5"; at most two decimals, with a true minus sign."""
    if seconds is None:
        return ""
    hours = seconds_to_hours(seconds)
    text = f"{abs(hours):,.2f}".rstrip("0").rstrip(".")
    return f"\u2212{text}" if hours < 0 else text


# Accounts --------------------------------------------------------------------------------------------------


def pool_account(pool: FundPool) -> LedgerAccount:
    account, _ = LedgerAccount.objects.get_or_create(
        pool=pool, defaults={"kind": Kind.POOL, "system_id": pool.system_id}
    )
    return account


def allocation_account(allocation: Allocation) -> LedgerAccount:
    account, _ = LedgerAccount.objects.get_or_create(
        allocation=allocation, defaults={"kind": Kind.ALLOCATION, "system_id": allocation.pool.system_id}
    )
    return account


def sink_account(system, kind: str) -> LedgerAccount:
    if kind not in LedgerAccount.SINK_KINDS:
        raise ValueError(f"{kind} is not a sink")
    account, _ = LedgerAccount.objects.get_or_create(system=system, kind=kind)
    return account


# The one writer
# ----------------------------------------------------------------------------------------------

_LOCK_GROUP = {Kind.POOL: 0, Kind.ALLOCATION: 1, Kind.FUNDING: 2, Kind.CONSUMED: 2, Kind.FORFEITED: 2}

Movements = list[tuple[LedgerAccount, int]]


def _lock(accounts: Iterable[LedgerAccount]) -> dict[int, LedgerAccount]:
    """Lock the accounts in the module's one order and return them freshly read, by primary key."""
    unique = {account.pk: account for account in accounts}.values()
    locked = {}
    for account in sorted(unique, key=lambda a: (_LOCK_GROUP[a.kind], a.pk)):
        locked[account.pk] = LedgerAccount.objects.select_for_update().get(pk=account.pk)
    return locked


def hold_pools(pools: Iterable[FundPool]) -> None:
    """Lock the pools' accounts until the caller's transaction ends, for a caller that charges usage (allocation
    and sink accounts) before it moves hours to these pools in the same transaction, as expiry does: taken
    first, they keep the module's order, where taken after they would wait holding accounts that come later."""
    _lock(pool_account(pool) for pool in pools)


def _already_recorded(key: str, types: tuple[str, ...]) -> LedgerTransaction | None:
    existing = LedgerTransaction.objects.filter(idempotency_key=key).first()
    if existing is not None and existing.type not in types:
        raise IdempotencyKeyReused(
            f"The idempotency key {key!r} was already used for a {existing.get_type_display().lower()}"
        )
    return existing


def _record(
    *,
    types: tuple[str, ...],
    idempotency_key: str,
    actor,
    reason: str,
    effective_at: datetime | None,
    accounts: Iterable[LedgerAccount],
    build: Callable[[dict[int, LedgerAccount]], tuple[str, Movements]],
    corrects: LedgerTransaction | None = None,
    cause: tuple[str, str] | None = None,
) -> LedgerTransaction:
    """Lock `accounts`, let `build` check locked balances and return (type, movements), then write them."""
    key = (idempotency_key or "").strip()
    if not key or len(key) > 200:
        raise ValueError("every ledger operation needs an idempotency key of 1 to 200 characters")
    reason = (reason or "").strip()
    if not reason:
        raise LedgerError("Enter a reason", field="reason")
    if (existing := _already_recorded(key, types)) is not None:
        return existing
    effective_at = effective_at or timezone.now()
    cause_type, cause_id = cause or ("", "")
    try:
        with transaction.atomic():
            locked = _lock(accounts)
            # A call with the same key may have committed while we waited for the locks.
            if (existing := _already_recorded(key, types)) is not None:
                return existing
            type_, movements = build(locked)
            if any(amount == 0 for _, amount in movements):
                raise UnbalancedTransaction("an entry of zero GPU-seconds")
            if sum(amount for _, amount in movements) != 0:
                raise UnbalancedTransaction(f"entries {movements} do not sum to zero")
            if any(account.pk not in locked for account, _ in movements):
                raise UnbalancedTransaction("an entry on an account that was not locked")
            recorded_at = timezone.now()
            txn = LedgerTransaction.objects.create(
                type=type_,
                actor=actor,
                reason=reason,
                effective_at=effective_at,
                recorded_at=recorded_at,
                idempotency_key=key,
                corrects=corrects,
                cause_type=cause_type,
                cause_id=str(cause_id),
            )
            LedgerEntry.objects.bulk_create(
                LedgerEntry(
                    transaction=txn,
                    account_id=account.pk,
                    amount=amount,
                    effective_at=effective_at,
                    recorded_at=recorded_at,
                )
                for account, amount in movements
            )
            change = defaultdict(int)
            for account, amount in movements:
                change[account.pk] += amount
            for pk, delta in change.items():
                if delta:
                    LedgerAccount.objects.filter(pk=pk).update(balance=F("balance") + delta)
                    locked[pk].balance += delta
            return txn
    except IntegrityError as error:
        # Either a concurrent call with the same key won the race (return its result, as a retry would get),
        # or the database refused a negative pool, which only a missing lock could reach.
        if (existing := _already_recorded(key, types)) is not None:
            return existing
        if "ledger_pool_not_negative" in str(error):
            raise InsufficientHours("The pool does not have enough available GPU-hours") from error
        raise


def _positive(seconds: int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise InvalidAmount("GPU-seconds must be a whole number")
    if seconds <= 0:
        raise InvalidAmount("GPU-hours must be more than 0")
    if seconds > MAX_SECONDS:
        raise InvalidAmount("That is more GPU-hours than the portal can account for")
    return seconds


def _local_day(moment: datetime | None):
    return timezone.localdate(moment or timezone.now())


def _day(day) -> str:
    return f"{day.day} {day:%B %Y}"


def _check_pool_accepts_hours(pool: FundPool, effective_at: datetime | None) -> None:
    day = _local_day(effective_at)
    if day > pool.valid_until:
        raise OutsideWindow(
            f"{pool.name} closed on {_day(pool.valid_until)}: it accepts no more hours after its window"
        )


def _check_available(account: LedgerAccount, seconds: int, what: str) -> None:
    if seconds > account.balance:
        raise InsufficientHours(
            f"{what} is more than the {format_gpu_hours(account.balance)} GPU-hours available in the pool"
        )


# Pools -----------------------------------------------------------------------------------------------------


def deposit_to_pool(
    *,
    pool: FundPool,
    seconds: int,
    actor,
    reason: str,
    idempotency_key: str,
    effective_at: datetime | None = None,
) -> LedgerTransaction:
    """Add GPU-hours from outside funding to a pool. A pool whose window has ended accepts none."""
    _positive(seconds)
    _check_pool_accepts_hours(pool, effective_at)
    account = pool_account(pool)
    funding = sink_account(pool.system, Kind.FUNDING)
    return _record(
        types=(Type.DEPOSIT,),
        idempotency_key=idempotency_key,
        actor=actor,
        reason=reason,
        effective_at=effective_at,
        accounts=[account, funding],
        build=lambda locked: (Type.DEPOSIT, [(funding, -seconds), (account, seconds)]),
    )


def withdraw_from_pool(
    *,
    pool: FundPool,
    seconds: int,
    actor,
    reason: str,
    idempotency_key: str,
    effective_at: datetime | None = None,
) -> LedgerTransaction:
    """Give unused GPU-hours back to outside funding; hours committed to awards cannot be withdrawn."""
    _positive(seconds)
    account = pool_account(pool)
    funding = sink_account(pool.system, Kind.FUNDING)

    def build(locked):
        _check_available(locked[account.pk], seconds, f"Withdrawing {format_gpu_hours(seconds)} GPU-hours")
        return Type.WITHDRAW, [(account, -seconds), (funding, seconds)]

    return _record(
        types=(Type.WITHDRAW,),
        idempotency_key=idempotency_key,
        actor=actor,
        reason=reason,
        effective_at=effective_at,
        accounts=[account, funding],
        build=build,
    )


def transfer_between_pools(
    *,
    source: FundPool,
    destination: FundPool,
    seconds: int,
    actor,
    reason: str,
    idempotency_key: str,
    effective_at: datetime | None = None,
) -> LedgerTransaction:
    """Move available GPU-hours between two pools of one system (a Dawn GPU-hour is not an Isambard one)."""
    _positive(seconds)
    if source.pk == destination.pk:
        raise SystemMismatch("Choose a different pool to transfer to")
    if source.system_id != destination.system_id:
        raise SystemMismatch(
            f"Hours can only move between pools of the same system: {source.system} is not {destination.system}"
        )
    _check_pool_accepts_hours(destination, effective_at)
    from_account, to_account = pool_account(source), pool_account(destination)

    def build(locked):
        _check_available(locked[from_account.pk], seconds, f"Transferring {format_gpu_hours(seconds)} GPU-hours")
        return Type.TRANSFER, [(from_account, -seconds), (to_account, seconds)]

    return _record(
        types=(Type.TRANSFER,),
        idempotency_key=idempotency_key,
        actor=actor,
        reason=reason,
        effective_at=effective_at,
        accounts=[from_account, to_account],
        build=build,
    )


# Allocations -----------------------------------------------------------------------------------------------


def _current_state(allocation: Allocation) -> str:
    # Read under the allocation account's lock: expiry and revocation change the state while holding it.
    return Allocation.objects.values_list("state", flat=True).get(pk=allocation.pk)


def commit_to_allocation(
    *,
    allocation: Allocation,
    seconds: int,
    actor,
    reason: str,
    idempotency_key: str,
    effective_at: datetime | None = None,
    cause: tuple[str, str] | None = None,
) -> LedgerTransaction:
    """Commit GPU-hours from the allocation's pool to it (the award step), inside the pool's window."""
    _positive(seconds)
    pool = allocation.pool
    if allocation.start_date < pool.valid_from or allocation.end_date > pool.valid_until:
        raise OutsideWindow(
            f"The allocation runs {_day(allocation.start_date)} to {_day(allocation.end_date)}, outside "
            f"{pool.name}'s window of {_day(pool.valid_from)} to {_day(pool.valid_until)}"
        )
    _check_pool_accepts_hours(pool, effective_at)
    from_account, to_account = pool_account(pool), allocation_account(allocation)

    def build(locked):
        if _current_state(allocation) in Allocation.ENDED_STATES:
            raise WrongState(f"{allocation.scheduler_account} has ended: it cannot receive more hours")
        _check_available(locked[from_account.pk], seconds, f"Committing {format_gpu_hours(seconds)} GPU-hours")
        return Type.COMMIT, [(from_account, -seconds), (to_account, seconds)]

    return _record(
        types=(Type.COMMIT,),
        idempotency_key=idempotency_key,
        actor=actor,
        reason=reason,
        effective_at=effective_at,
        accounts=[from_account, to_account],
        build=build,
        cause=cause,
    )


def charge_usage(
    *,
    allocation: Allocation,
    seconds: int,
    reason: str,
    idempotency_key: str,
    effective_at: datetime | None = None,
    cause: tuple[str, str] | None = None,
    actor=None,
) -> LedgerTransaction:
    """Charge GPU-seconds used to an allocation. Never refused: usage happened, even past the award."""
    _positive(seconds)
    account = allocation_account(allocation)
    consumed = sink_account(allocation.pool.system, Kind.CONSUMED)
    return _record(
        types=(Type.CHARGE,),
        idempotency_key=idempotency_key,
        actor=actor,
        reason=reason,
        effective_at=effective_at,
        accounts=[account, consumed],
        build=lambda locked: (Type.CHARGE, [(account, -seconds), (consumed, seconds)]),
        cause=cause,
    )


def net_usage(account: LedgerAccount) -> int:
    """GPU-seconds charged to an allocation account, net of refunds and adjustments."""
    total = account.entries.filter(transaction__type__in=USAGE_TYPES).aggregate(total=Sum("amount"))["total"]
    return -(total or 0)


def _check_refundable(account: LedgerAccount, seconds: int) -> None:
    charged = net_usage(account)
    if charged <= 0:
        # Below zero when reconciliation gave back hours a refund by hand had already given (record_usage_in_bulk).
        raise InvalidAmount(
            f"Nothing charged to this allocation is left to give back: its usage, net of refunds and adjustments, "
            f"is {format_gpu_hours(charged)} GPU-hours"
        )
    if seconds > charged:
        raise InvalidAmount(
            f"Only {format_gpu_hours(charged)} GPU-hours have been charged to this allocation: "
            f"{format_gpu_hours(seconds)} cannot be given back"
        )


def refund_usage(
    *,
    allocation: Allocation,
    seconds: int,
    actor,
    reason: str,
    idempotency_key: str,
    effective_at: datetime | None = None,
    corrects: LedgerTransaction | None = None,
    cause: tuple[str, str] | None = None,
) -> LedgerTransaction:
    """Give charged GPU-seconds back to an allocation (a failed node, a credit); never more than charged."""
    _positive(seconds)
    account = allocation_account(allocation)
    consumed = sink_account(allocation.pool.system, Kind.CONSUMED)

    def build(locked):
        _check_refundable(locked[account.pk], seconds)
        return Type.REFUND, [(consumed, -seconds), (account, seconds)]

    return _record(
        types=(Type.REFUND,),
        idempotency_key=idempotency_key,
        actor=actor,
        reason=reason,
        effective_at=effective_at,
        accounts=[account, consumed],
        build=build,
        corrects=corrects,
        cause=cause,
    )


def adjust_usage(
    *,
    corrects: LedgerTransaction,
    seconds: int,
    actor,
    reason: str,
    idempotency_key: str,
    effective_at: datetime | None = None,
    cause: tuple[str, str] | None = None,
) -> LedgerTransaction:
    """Correct an earlier usage movement by a signed amount: positive charges more, negative gives back.

    The correction is a new transaction pointing at the one it corrects; the original is never touched.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds == 0:
        raise InvalidAmount("An adjustment must be a whole, non-zero number of GPU-seconds")
    _positive(abs(seconds))
    if corrects.type not in USAGE_TYPES:
        raise WrongState("Only usage charges, refunds and adjustments can be adjusted")
    original = corrects.entries.select_related("account").filter(account__kind=Kind.ALLOCATION).first()
    if original is None:
        raise WrongState("That transaction moved no hours on an allocation")
    account = original.account
    consumed = sink_account(account.system, Kind.CONSUMED)

    def build(locked):
        if seconds < 0:
            _check_refundable(locked[account.pk], -seconds)
        return Type.ADJUST, [(account, -seconds), (consumed, seconds)]

    return _record(
        types=(Type.ADJUST,),
        idempotency_key=idempotency_key,
        actor=actor,
        reason=reason,
        effective_at=effective_at,
        accounts=[account, consumed],
        build=build,
        corrects=corrects,
        cause=cause,
    )


def _end_allocation(
    *, allocation: Allocation, new_state: str, actor, reason: str, idempotency_key: str, effective_at
) -> LedgerTransaction:
    """Close an allocation and send its unused hours back to the pool or to the forfeit sink.

    Records a transaction even when nothing is unused (it then has no entries, which sum to zero), so the
    end of every allocation is in the journal and a repeat with the same key returns it.
    """
    pool = allocation.pool
    account = allocation_account(allocation)
    # Forfeiting is for hours an allocation could have used: one that never ran (still scheduled at its end, its
    # award never accepted) gives them back whatever the policy.
    never_ran = allocation.state == Allocation.State.SCHEDULED
    to_pool = (
        new_state == Allocation.State.REVOKED
        or never_ran
        or pool.unused_hours_policy == FundPool.UnusedHoursPolicy.RETURN
    )
    destination = pool_account(pool) if to_pool else sink_account(pool.system, Kind.FORFEITED)
    type_ = Type.REVOKE if new_state == Allocation.State.REVOKED else Type.EXPIRE if to_pool else Type.FORFEIT

    def build(locked):
        state = _current_state(allocation)
        if state in Allocation.ENDED_STATES:
            raise WrongState(f"{allocation.scheduler_account} has already ended ({state})")
        if never_ran and state != Allocation.State.SCHEDULED:
            raise WrongState(f"{allocation.scheduler_account} started meanwhile ({state})")
        Allocation.objects.filter(pk=allocation.pk).update(state=new_state)
        allocation.state = new_state
        # Usage below zero (a job's hours given back both by hand and by its cluster's correction, see
        # record_usage_in_bulk) is hours no commitment brought: they stay on the allocation for an admin to charge
        # back, not sent to the pool as hours no deposit made.
        unused = locked[account.pk].balance + min(0, net_usage(account))
        # An overrun (negative balance) stays on the allocation in plain sight; it is not taken from the pool.
        return type_, ([(account, -unused), (destination, unused)] if unused > 0 else [])

    return _record(
        types=(Type.EXPIRE, Type.FORFEIT, Type.REVOKE),
        idempotency_key=idempotency_key,
        actor=actor,
        reason=reason,
        effective_at=effective_at,
        accounts=[account, destination],
        build=build,
    )


def expire_allocation(
    *,
    allocation: Allocation,
    idempotency_key: str,
    actor=None,
    reason: str = "The allocation reached its end date",
    effective_at: datetime | None = None,
) -> LedgerTransaction:
    """End an allocation at its end date; unused hours return to the pool or are forfeited, by its policy (one
    that never ran returns them)."""
    return _end_allocation(
        allocation=allocation,
        new_state=Allocation.State.EXPIRED,
        actor=actor,
        reason=reason,
        idempotency_key=idempotency_key,
        effective_at=effective_at,
    )


def revoke_allocation(
    *, allocation: Allocation, actor, reason: str, idempotency_key: str, effective_at: datetime | None = None
) -> LedgerTransaction:
    """Withdraw an award before its end; its unused hours return to the pool whatever the pool's policy."""
    return _end_allocation(
        allocation=allocation,
        new_state=Allocation.State.REVOKED,
        actor=actor,
        reason=reason,
        idempotency_key=idempotency_key,
        effective_at=effective_at,
    )


# Usage reconciliation -------------------------------------------------------------------------------------


def usage_and_commitments(allocation_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """(GPU-seconds used net of refunds and adjustments, GPU-seconds committed) per allocation id."""
    totals = {pk: [0, 0] for pk in allocation_ids}
    rows = (
        LedgerEntry.objects.filter(
            account__allocation__in=list(totals), transaction__type__in=(*USAGE_TYPES, Type.COMMIT)
        )
        .values_list("account__allocation", "transaction__type")
        .annotate(total=Sum("amount"))
    )
    for allocation_id, type_, total in rows:
        if type_ == Type.COMMIT:
            totals[allocation_id][1] += total
        else:
            totals[allocation_id][0] -= total
    return {pk: (used, committed) for pk, (used, committed) in totals.items()}


def record_usage_in_bulk(
    *,
    system,
    movements: list[tuple[Allocation, int, str, str]],
    cause: tuple[str, str],
    effective_at: datetime | None = None,
) -> dict[str, LedgerTransaction]:
    """Charge (positive seconds) or refund (negative) many allocations of one system in one transaction.

    `movements` holds (allocation, signed GPU-seconds, reason, idempotency key); each becomes its own charge
    or refund transaction, as `charge_usage` / `refund_usage` would write it, with the same guarantees (keys,
    locks in the module's order, balances) — but in a few statements for thousands of allocations, which is what
    a reconciliation run needs. Returns the transactions by key, including those a previous call with the same
    keys already recorded.

    Unlike `refund_usage`, a refund here is not checked against the allocation's net usage. Each is the
    reversal of job charges its caller holds (reconciliation refunds a job re-reported shorter by the difference
    from that job's own charges, so never more than they hold), and net usage also counts the refunds and
    adjustments made by hand: after a job's hours were given back by hand, its cluster's correction would be
    refused, and with it the whole run and every later run of the system. The allocation's usage then goes
    below zero, on its page, until an admin charges back what was given twice (`adjust_usage`).
    """
    for _, seconds, _, _ in movements:
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise InvalidAmount("GPU-seconds must be a whole number")
        _positive(abs(seconds))
    wanted = {key: (allocation, seconds, reason) for allocation, seconds, reason, key in movements}
    if len(wanted) != len(movements):
        raise ValueError("every movement needs its own idempotency key")
    if any(allocation.pool.system_id != system.pk for allocation, _, _ in wanted.values()):
        raise SystemMismatch("Every allocation charged in one batch must be on the same system")
    cause_type, cause_id = cause
    with transaction.atomic():
        allocation_ids = {allocation.pk for allocation, _, _ in wanted.values()}
        accounts = {a.allocation_id: a for a in LedgerAccount.objects.filter(allocation__in=allocation_ids)}
        if missing := allocation_ids - set(accounts):
            # Accounts are made when hours are committed; make any still missing in one statement.
            LedgerAccount.objects.bulk_create(
                [LedgerAccount(kind=Kind.ALLOCATION, system=system, allocation_id=pk) for pk in missing],
                ignore_conflicts=True,
            )
            accounts = {a.allocation_id: a for a in LedgerAccount.objects.filter(allocation__in=allocation_ids)}
        consumed = sink_account(system, Kind.CONSUMED)
        # The module's lock order: allocation accounts by primary key, then the sink. One statement locks them
        # all; PostgreSQL takes row locks after sorting, so in primary-key order.
        list(
            LedgerAccount.objects.select_for_update()
            .filter(pk__in=[account.pk for account in accounts.values()])
            .order_by("pk")
        )
        LedgerAccount.objects.select_for_update().filter(pk=consumed.pk).get()
        recorded = {txn.idempotency_key: txn for txn in LedgerTransaction.objects.filter(idempotency_key__in=wanted)}
        for key, txn in recorded.items():
            expected = Type.CHARGE if wanted[key][1] > 0 else Type.REFUND
            if txn.type != expected:
                raise IdempotencyKeyReused(f"The idempotency key {key!r} was already used for a {txn.type}")
        todo = {key: value for key, value in wanted.items() if key not in recorded}
        now = timezone.now()
        effective = effective_at or now
        transactions = LedgerTransaction.objects.bulk_create(
            LedgerTransaction(
                type=Type.CHARGE if seconds > 0 else Type.REFUND,
                actor=None,
                reason=reason.strip(),
                effective_at=effective,
                recorded_at=now,
                idempotency_key=key,
                cause_type=cause_type,
                cause_id=str(cause_id),
            )
            for key, (_, seconds, reason) in todo.items()
        )
        entries, change = [], defaultdict(int)
        for txn, (allocation, seconds, _) in zip(transactions, todo.values(), strict=True):
            account = accounts[allocation.pk]
            for account_pk, amount in ((account.pk, -seconds), (consumed.pk, seconds)):
                entries.append(
                    LedgerEntry(
                        transaction=txn,
                        account_id=account_pk,
                        amount=amount,
                        effective_at=effective,
                        recorded_at=now,
                    )
                )
                change[account_pk] += amount
        LedgerEntry.objects.bulk_create(entries, batch_size=5000)
        _add_to_balances({pk: delta for pk, delta in change.items() if delta})
        recorded.update((txn.idempotency_key, txn) for txn in transactions)
        return recorded


def _add_to_balances(changes: dict[int, int]) -> None:
    """Add to many locked accounts' balances: one statement on PostgreSQL, one per account elsewhere."""
    if connection.vendor != "postgresql":
        for pk, delta in changes.items():
            LedgerAccount.objects.filter(pk=pk).update(balance=F("balance") + delta)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {LedgerAccount._meta.db_table} AS a SET balance = a.balance + c.delta "  # noqa: S608
            "FROM unnest(%s::bigint[], %s::bigint[]) AS c(id, delta) WHERE a.id = c.id",
            [list(changes), list(changes.values())],
        )
