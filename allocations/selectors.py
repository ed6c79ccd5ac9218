"""Reads of the ledger: a pool's figures, an account's statement and the public register of awards, computed
from entries, never stored.

Both take `as_of`, which keeps only entries *recorded* by then: a statement exported today and again next year
for the same window and the same `as_of` gives the same numbers, whatever was back-dated in between.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import BigIntegerField, F, Max, Min, OuterRef, Q, QuerySet, Subquery, Sum, Value, Window
from django.db.models.expressions import RowRange
from django.db.models.functions import Coalesce
from django.utils import timezone

from programmes.models import FundPool, Proposal

from .models import Allocation, LedgerAccount, LedgerEntry, LedgerTransaction

Type = LedgerTransaction.Type


@dataclass(frozen=True)
class PoolFigures:
    """A pool's hours in GPU-seconds; `available` (what awards can still draw) is its account's balance."""

    deposited: int = 0
    withdrawn: int = 0
    transferred_in: int = 0
    transferred_out: int = 0
    committed: int = 0
    returned: int = 0
    consumed: int = 0
    forfeited: int = 0
    available: int = 0

    @property
    def capacity(self) -> int:
        return self.deposited - self.withdrawn + self.transferred_in - self.transferred_out

    @property
    def held_by_allocations(self) -> int:
        """Committed hours not yet used, returned or forfeited (negative when allocations overran)."""
        return self.committed - self.returned - self.consumed - self.forfeited


def start_of_day(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def end_of(moment: date | datetime | None) -> datetime | None:
    """A date means the whole of that day (in the portal's time zone); a datetime means itself."""
    if moment is None or isinstance(moment, datetime):
        return moment
    if moment == date.max:
        return datetime.max.replace(tzinfo=UTC)  # there is no day after it to start
    return start_of_day(moment + timedelta(days=1)) - timedelta(microseconds=1)


def figures_for_pools(pools, *, as_of: date | datetime | None = None) -> dict[int, PoolFigures]:
    """Figures for many pools in two grouped queries, keyed by pool id."""
    pool_ids = [pool.pk for pool in pools]
    recorded = Q(recorded_at__lte=end_of(as_of)) if as_of is not None else Q()
    sums = defaultdict(lambda: defaultdict(int))

    on_pools = (
        LedgerEntry.objects.filter(recorded, account__pool__in=pool_ids)
        .values("account__pool", "transaction__type")
        .annotate(into=Sum("amount", filter=Q(amount__gt=0)), out=Sum("amount", filter=Q(amount__lt=0)))
    )
    for row in on_pools:
        figures = sums[row["account__pool"]]
        into, out = row["into"] or 0, -(row["out"] or 0)
        figures["available"] += into - out
        match row["transaction__type"]:
            case Type.DEPOSIT:
                figures["deposited"] += into - out
            case Type.WITHDRAW:
                figures["withdrawn"] += out - into
            case Type.TRANSFER:
                figures["transferred_in"] += into
                figures["transferred_out"] += out
            case Type.COMMIT:
                figures["committed"] += out - into
            case Type.EXPIRE | Type.REVOKE:
                figures["returned"] += into - out

    on_allocations = (
        LedgerEntry.objects.filter(recorded, account__allocation__pool__in=pool_ids)
        .values("account__allocation__pool", "transaction__type")
        .annotate(total=Sum("amount"))
    )
    for row in on_allocations:
        figures = sums[row["account__allocation__pool"]]
        match row["transaction__type"]:
            case Type.CHARGE | Type.REFUND | Type.ADJUST:
                figures["consumed"] -= row["total"]
            case Type.FORFEIT:
                figures["forfeited"] -= row["total"]

    return {pool_id: PoolFigures(**sums[pool_id]) for pool_id in pool_ids}


def pool_figures(pool: FundPool, *, as_of: date | datetime | None = None) -> PoolFigures:
    return figures_for_pools([pool], as_of=as_of)[pool.pk]


@dataclass(frozen=True)
class AllocationFigures:
    """One allocation's part of its pool's committed, consumed, returned and forfeited hours, in GPU-seconds."""

    allocation: Allocation
    committed: int = 0
    consumed: int = 0
    returned: int = 0
    forfeited: int = 0

    @property
    def held(self) -> int:
        return self.committed - self.consumed - self.returned - self.forfeited


def figures_for_allocations(allocations, *, as_of: date | datetime | None = None) -> list[AllocationFigures]:
    """Each allocation's figures, from its account's entries in one grouped query; summed over a pool's
    allocations they are the pool's (`figures_for_pools` reads the same entries)."""
    recorded = Q(recorded_at__lte=end_of(as_of)) if as_of is not None else Q()
    sums = defaultdict(lambda: defaultdict(int))
    rows = (
        LedgerEntry.objects.filter(recorded, account__allocation__in=[allocation.pk for allocation in allocations])
        .values_list("account__allocation", "transaction__type")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    for allocation_id, type_, total in rows:
        figures = sums[allocation_id]
        match type_:
            case Type.COMMIT:
                figures["committed"] += total
            case Type.CHARGE | Type.REFUND | Type.ADJUST:
                figures["consumed"] -= total
            case Type.EXPIRE | Type.REVOKE:
                figures["returned"] -= total
            case Type.FORFEIT:
                figures["forfeited"] -= total
    return [AllocationFigures(allocation, **sums[allocation.pk]) for allocation in allocations]


@dataclass(frozen=True)
class Statement:
    """An account's movements in a window, each with its running balance, between opening and closing."""

    account: LedgerAccount
    start: date | None
    end: date | None
    as_of: date | datetime | None
    opening_balance: int
    closing_balance: int
    movements: QuerySet  # LedgerEntry rows annotated with `running_balance`; slice it to page through

    @property
    def net_change(self) -> int:
        return self.closing_balance - self.opening_balance


def account_statement(
    account: LedgerAccount,
    *,
    start: date | None = None,
    end: date | None = None,
    as_of: date | datetime | None = None,
) -> Statement:
    """Opening balance at the start of `start`, each movement effective by the end of `end`, closing balance.

    Two aggregates and one windowed query, all on the (account, effective_at, id) index, so the cost follows
    the page read rather than the account's history.
    """
    entries = LedgerEntry.objects.filter(account=account)
    if as_of is not None:
        entries = entries.filter(recorded_at__lte=end_of(as_of))
    before = entries.filter(effective_at__lt=start_of_day(start)) if start else entries.none()
    in_window = entries
    if start:
        in_window = in_window.filter(effective_at__gte=start_of_day(start))
    if end:
        in_window = in_window.filter(effective_at__lte=end_of(end))
    opening = before.aggregate(total=Sum("amount"))["total"] or 0
    change = in_window.aggregate(total=Sum("amount"))["total"] or 0
    movements = (
        in_window.select_related("transaction", "transaction__actor")
        .annotate(
            running_balance=Window(
                Sum("amount"),
                order_by=[F("effective_at").asc(), F("id").asc()],
                frame=RowRange(start=None, end=0),
            )
            + Value(opening, output_field=BigIntegerField())
        )
        .order_by("effective_at", "id")
    )
    return Statement(
        account=account,
        start=start,
        end=end,
        as_of=as_of,
        opening_balance=opening,
        closing_balance=opening + change,
        movements=movements,
    )


# The public register of awards ------------------------------------------------------------------------------


# An award is public once its PI has accepted it. A revoked allocation of an accepted award stays on the register
# with the hours it kept (committed less what revocation returned): public money was spent on it, and the register
# is the account of that spending. Declined, rejected and unanswered awards never appear (their proposals are not
# `accepted`), nor do allocations made by hand (no proposal, so no public summary to show).
def public_awards(*, search: str = "", programme=None, system=None, year: int | None = None):
    """The register's rows: one per allocation of an accepted award, as dicts of public fields only.

    `awarded_seconds` is what the ledger committed to the allocation net of any revocation, summed in a correlated
    subquery, so the cost follows the rows asked for. A dict of named columns, never a model instance, so that
    nothing private (the case for support, emails, reviews) can reach a page or a download by accident.
    """
    awarded = (
        LedgerEntry.objects.filter(account__allocation=OuterRef("pk"), transaction__type__in=(Type.COMMIT, Type.REVOKE))
        .order_by()
        .values("account__allocation")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    rows = Allocation.objects.filter(proposal__state=Proposal.State.ACCEPTED)
    if search:
        rows = rows.filter(
            Q(proposal__title__icontains=search)
            | Q(proposal__summary__icontains=search)
            | Q(proposal__pi__organisation__icontains=search)
            | Q(proposal__reference__icontains=search)
        )
    if programme is not None:
        rows = rows.filter(proposal__call__programme=programme)
    if system is not None:
        rows = rows.filter(system=system)
    if year is not None:
        # Awards running at any time in the year.
        rows = rows.filter(start_date__lte=date(year, 12, 31), end_date__gte=date(year, 1, 1))
    return rows.values(
        "id",
        "start_date",
        "end_date",
        "state",
        "title",  # the proposal's title, copied at the award (a submitted proposal's title cannot change)
        reference=F("proposal__reference"),
        summary=F("proposal__summary"),
        lead_organisation=F("proposal__pi__organisation"),
        programme=F("proposal__call__programme__name"),
        programme_slug=F("proposal__call__programme__slug"),
        call=F("proposal__call__title"),
        system_name=F("system__name"),
        system_slug=F("system__slug"),
        awarded_seconds=Coalesce(Subquery(awarded), 0, output_field=BigIntegerField()),
    ).order_by("-start_date", "reference", "system_name")


def register_years() -> list[int]:
    """Every year in which some public award runs, latest first (one query)."""
    span = Allocation.objects.filter(proposal__state=Proposal.State.ACCEPTED).aggregate(
        first=Min("start_date"), last=Max("end_date")
    )
    if span["first"] is None:
        return []
    return list(range(span["last"].year, span["first"].year - 1, -1))
