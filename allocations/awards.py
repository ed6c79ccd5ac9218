"""Awards: where a director's decision moves GPU-hours, and where the PI accepts or declines them.

An award gives hours on each system the proposal asked for (all, part or none of each), one allocation per
awarded system, all under the proposal's one scheduler account name. Each service runs in one transaction
that locks the proposal first (then the ledger locks its accounts in its own order), so the state change and
every movement of hours happen together or not at all: if any pool cannot cover its part, the proposal stays
in review and the director reads which system failed.
"""

from dataclasses import dataclass
from datetime import date, datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from airr_portal.queuing import queue_after_commit
from programmes.models import Decision, FundPool, Proposal
from programmes.proposals import add_months, can_direct, lock_proposal, notify, record_transition

from . import ledger
from .models import Allocation
from .tasks import reconcile_claim_held_usage_task
from .usage.thresholds import on_each_systems_day, today_on

State = Proposal.State


def scheduler_account_for(proposal: Proposal) -> str:
    """The one account name of a proposal's allocations, the same on every system it was awarded."""
    return f"airr-{proposal.pk:05d}"


@dataclass(frozen=True)
class AwardPart:
    """What the director awards on one system: GPU-seconds from one of the call's pools, for a window."""

    pool: FundPool
    seconds: int
    start: date
    end: date


@dataclass(frozen=True)
class AwardedSystem:
    """An allocation of an award, with the GPU-seconds the ledger committed to it."""

    allocation: Allocation
    seconds: int

    @property
    def system(self):
        return self.allocation.system


def pool_for(system, call_pools: list[FundPool], chosen: FundPool | None = None) -> FundPool:
    """The call's pool that pays for an award on `system`: the one chosen, or the only one on that system.

    Raises ValidationError when the choice is not one of `call_pools` or not on the system, none is made between
    several, or the call has no pool on the system; the page's form and the API say the same.
    """
    if chosen is not None:
        if chosen not in call_pools:
            # Not named: a pool of another programme is not the asker's to know of.
            raise ValidationError("Choose one of the call's fund pools")
        if chosen.system_id != system.pk:
            raise ValidationError(f"{chosen.name} is not on {system.name}")
        return chosen
    here = [pool for pool in call_pools if pool.system_id == system.pk]
    if len(here) > 1:
        raise ValidationError(f"Choose the fund pool to award from on {system.name}")
    if not here:
        raise ValidationError(f"This call has no fund pool on {system.name}")
    return here[0]


def _check_parts(proposal: Proposal, parts: list[AwardPart], requests: dict) -> None:
    """Refuse parts that do not fit the call or the request, naming the system in every message."""
    call_pools = set(proposal.call.pools.values_list("pk", flat=True))
    seen = set()
    for part in parts:
        system = part.pool.system
        if part.pool.programme_id != proposal.call.programme_id or part.pool.pk not in call_pools:
            raise ValidationError({"pool": f"{part.pool.name} does not fund {proposal.call.title}"})
        if system.pk in seen:
            raise ValidationError({"pool": f"Award from one pool only on {system.name}"})
        seen.add(system.pk)
        request = requests.get(system.pk)
        if request is None:
            raise ValidationError({"pool": f"The proposal asks for no time on {system.name}"})
        if part.seconds <= 0:
            raise ValidationError({"hours": f"Enter a positive number of GPU-hours on {system.name}"})
        if part.seconds > request.seconds:
            raise ValidationError(
                {
                    "hours": f"Award at most the {ledger.format_gpu_hours(request.seconds)} GPU-hours "
                    f"asked for on {system.name}"
                }
            )
        if part.end < part.start:
            raise ValidationError({"end": f"The end date on {system.name} must be on or after its start date"})


def award_proposal(
    *,
    proposal: Proposal,
    parts: list[AwardPart],
    rationale: str,
    actor,
    effective_at: datetime | None = None,
) -> list[Allocation]:
    """Award GPU-hours on each system in `parts` (a requested system left out gets nothing): commit each
    from its pool to a new allocation and move the proposal to awarded, all in one transaction.

    If any pool cannot cover its part, nothing is written and the error names that system. Fewer hours than
    asked for on any system, a shorter window, or a requested system left out is a partial award. The
    commitments take effect now, unless `effective_at` says when (for loading history, as the demo data does).
    """
    if not can_direct(proposal, actor):
        raise PermissionDenied
    if not rationale.strip():
        raise ValidationError({"rationale": "Enter the rationale for the decision"})
    if not parts:
        raise ValidationError({"hours": "Award GPU-hours on at least one system, or reject the proposal"})
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=(State.IN_REVIEW,), action="award")
        requests = {r.system_id: r for r in locked.resource_requests.select_related("system")}
        _check_parts(locked, parts, requests)
        requested_end = add_months(locked.start_date, locked.duration_months) if locked.start_date else None
        in_full = len(parts) == len(requests) and all(
            part.seconds == requests[part.pool.system_id].seconds
            and part.start <= (locked.start_date or part.start)
            and part.end == requested_end
            for part in parts
        )
        allocations = []
        # Pools in their ledger accounts' order, so that two awards drawing on the same pools lock them in
        # the same order and cannot deadlock each other.
        for part in sorted(parts, key=lambda part: ledger.pool_account(part.pool).pk):
            system = part.pool.system
            allocation = Allocation.objects.create(
                pool=part.pool,
                system=system,
                proposal=locked,
                scheduler_account=scheduler_account_for(locked),
                title=locked.title,
                holder=locked.pi,
                start_date=part.start,
                end_date=part.end,
                state=Allocation.State.SCHEDULED,
            )
            try:
                ledger.commit_to_allocation(
                    allocation=allocation,
                    seconds=part.seconds,
                    actor=actor,
                    reason=f"Award to {locked.reference} on {system.name}",
                    idempotency_key=f"award-{locked.reference}-{system.slug}",
                    effective_at=effective_at,
                    cause=("proposal", str(locked.pk)),
                )
            except ledger.LedgerError as error:
                # Raising inside the atomic block undoes every allocation row and commitment made so far.
                raise ValidationError({error.field or "hours": f"{system.name}: {error.message}"}) from error
            allocations.append(allocation)
            # Usage its account ran before it existed was held: the allocation takes it once the award commits.
            queue_after_commit(reconcile_claim_held_usage_task, allocation.pk)
        Decision.objects.create(
            proposal=locked,
            outcome=Decision.Outcome.AWARD_FULL if in_full else Decision.Outcome.AWARD_PART,
            rationale=rationale.strip(),
            decided_by=actor,
            decided_at=timezone.now(),
        )
        record_transition(locked, to=State.AWARDED, actor=actor, reason=rationale)
        notify("decided", locked.pk)
    return sorted(allocations, key=lambda allocation: allocation.system.name)


def awarded_systems(proposal: Proposal) -> list[AwardedSystem]:
    """A proposal's allocations, by system name, each with the GPU-seconds its award committed (two queries)."""
    return awarded_systems_of([proposal.pk])[proposal.pk]


def awarded_systems_of(proposal_ids) -> dict[int, list[AwardedSystem]]:
    """`awarded_systems` for many proposals at once, keyed by proposal id, in the same two queries."""
    proposal_ids = list(proposal_ids)
    allocations = list(
        Allocation.objects.filter(proposal__in=proposal_ids)
        .select_related("system", "pool")
        .order_by("system__name", "pk")
    )
    figures = ledger.usage_and_commitments(allocation.pk for allocation in allocations)
    awarded = {pk: [] for pk in proposal_ids}
    for allocation in allocations:
        awarded[allocation.proposal_id].append(AwardedSystem(allocation, figures[allocation.pk][1]))
    return awarded


def accept_award(*, proposal: Proposal, actor) -> list[Allocation]:
    """The PI accepts the award as a whole: each of its allocations becomes active now, or stays scheduled
    until its start date; one whose end date has already passed stays as it is (the daily expiry ends it)."""
    if proposal.pi_id != actor.pk:
        raise PermissionDenied
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=(State.AWARDED,), action="accept the award of")
        allocations = list(
            Allocation.objects.select_for_update().filter(proposal=locked).order_by("pk").select_related("system")
        )
        for allocation in allocations:
            today = today_on(allocation.system)
            # Only a scheduled allocation whose window includes today: one whose end date has passed (ended by
            # the daily expiry, its hours already returned or forfeited) never runs again.
            if allocation.state == Allocation.State.SCHEDULED and allocation.start_date <= today <= allocation.end_date:
                allocation.state = Allocation.State.ACTIVE
                allocation.save(update_fields=["state"])
        record_transition(locked, to=State.ACCEPTED, actor=actor, reason="Award accepted")
        notify("accepted", locked.pk)
    return sorted(allocations, key=lambda allocation: allocation.system.name)


def decline_award(*, proposal: Proposal, actor, reason: str = "") -> list[Allocation]:
    """The PI declines the award as a whole: every allocation is revoked and its hours return to its pool (one that
    has already expired, unanswered past its end date, stays as the expiry left it)."""
    if proposal.pi_id != actor.pk:
        raise PermissionDenied
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=(State.AWARDED,), action="decline the award of")
        allocations = list(Allocation.objects.filter(proposal=locked).order_by("pk").select_related("system"))
        for allocation in allocations:
            if allocation.has_ended:
                continue  # expired unanswered at its end date: its hours were returned or forfeited then
            try:  # the ledger's own savepoint: a refusal leaves this transaction usable
                ledger.revoke_allocation(
                    allocation=allocation,
                    actor=actor,
                    reason=f"Award to {locked.reference} on {allocation.system.name} declined",
                    idempotency_key=f"decline-{locked.reference}-{allocation.system.slug}",
                )
            except ledger.WrongState:
                # Ended by the daily expiry after it was read here (its lock taken, and its hours moved, first).
                allocation.refresh_from_db(fields=["state"])
                if not allocation.has_ended:
                    raise
        record_transition(locked, to=State.DECLINED, actor=actor, reason=reason or "Award declined")
    return allocations


def starting_allocations(*, today: date | None = None):
    """The allocations activation makes active: scheduled, accepted (or made by hand), and their window holding
    their system's today (an award not yet accepted waits)."""
    # Each system's today, where its allocations' days begin (see `expire_ended_allocations`).
    in_window = on_each_systems_day(lambda day: Q(start_date__lte=day, end_date__gte=day), today=today)
    # The proposal as a subquery, not a join: an update over a join becomes `id IN (select ...)`, and a row changed
    # while the update waited for its lock (revoked) would be updated on what the select saw before. Without the
    # join, PostgreSQL checks `state` again on the row as it is once the lock is free.
    accepted = Proposal.objects.filter(state=State.ACCEPTED).values("pk")
    return Allocation.objects.filter(in_window, state=Allocation.State.SCHEDULED).filter(
        Q(proposal__isnull=True) | Q(proposal__in=accepted)
    )


def activate_started_allocations(*, today: date | None = None) -> int:
    """Make active every allocation `starting_allocations` names.

    Safe to run any number of times: each allocation moves only from `scheduled`, under a guarded update.
    """
    return starting_allocations(today=today).update(state=Allocation.State.ACTIVE)
