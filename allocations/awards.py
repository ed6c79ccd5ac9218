"""Awards: where a director's decision moves GPU-hours, and where the PI accepts or declines them.

Each service runs in one transaction that locks the proposal first (then the ledger locks its accounts in
its own order), so the state change and the movement of hours happen together or not at all: if the pool
cannot cover an award, the proposal stays in review and the director reads why.
"""

from datetime import date, datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from programmes.models import Decision, FundPool, Proposal
from programmes.proposals import add_months, can_direct, lock_proposal, notify, record_transition

from . import ledger
from .models import Allocation

State = Proposal.State


def scheduler_account_for(proposal: Proposal) -> str:
    return f"airr-{proposal.pk:05d}"


def award_proposal(
    *,
    proposal: Proposal,
    pool: FundPool,
    seconds: int,
    start: date,
    end: date,
    rationale: str,
    actor,
    effective_at: datetime | None = None,
) -> Allocation:
    """Award GPU-hours from `pool`: commit them to a new allocation and move the proposal to awarded.

    Awarding less than was asked for on the pool's system, or a shorter window, is a partial award. The
    commitment takes effect now, unless `effective_at` says when (for loading history, as the demo data does).
    """
    if not can_direct(proposal, actor):
        raise PermissionDenied
    if not rationale.strip():
        raise ValidationError({"rationale": "Enter the rationale for the decision"})
    if end < start:
        raise ValidationError({"end": "The end date must be on or after the start date"})
    if pool.programme_id != proposal.call.programme_id or not proposal.call.pools.filter(pk=pool.pk).exists():
        raise ValidationError({"pool": f"{pool.name} does not fund {proposal.call.title}"})
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=(State.IN_REVIEW,), action="award")
        request = locked.resource_requests.filter(system_id=pool.system_id).first()
        if request is None:
            raise ValidationError({"pool": f"The proposal asks for no time on {pool.system.name}"})
        if seconds > request.seconds:
            raise ValidationError(
                {"hours": f"Award at most the {ledger.format_gpu_hours(request.seconds)} GPU-hours asked for"}
            )
        requested_end = add_months(locked.start_date, locked.duration_months) if locked.start_date else None
        in_full = seconds == request.seconds and start <= (locked.start_date or start) and end == requested_end
        allocation = Allocation.objects.create(
            pool=pool,
            proposal=locked,
            scheduler_account=scheduler_account_for(locked),
            title=locked.title,
            holder=locked.pi,
            start_date=start,
            end_date=end,
            state=Allocation.State.SCHEDULED,
        )
        try:
            ledger.commit_to_allocation(
                allocation=allocation,
                seconds=seconds,
                actor=actor,
                reason=f"Award to {locked.reference}",
                idempotency_key=f"award-{locked.reference}",
                effective_at=effective_at,
                cause=("proposal", str(locked.pk)),
            )
        except ledger.LedgerError as error:
            # Raising inside the atomic block undoes the allocation row too: nothing of this award remains.
            raise ValidationError({error.field or "hours": error.message}) from error
        Decision.objects.create(
            proposal=locked,
            outcome=Decision.Outcome.AWARD_FULL if in_full else Decision.Outcome.AWARD_PART,
            pool=pool,
            awarded_seconds=seconds,
            start_date=start,
            end_date=end,
            rationale=rationale.strip(),
            decided_by=actor,
            decided_at=timezone.now(),
        )
        record_transition(locked, to=State.AWARDED, actor=actor, reason=rationale)
        notify("decided", locked.pk)
    return allocation


def accept_award(*, proposal: Proposal, actor) -> Allocation:
    """The PI accepts: the allocation becomes active now, or stays scheduled until its start date."""
    if proposal.pi_id != actor.pk:
        raise PermissionDenied
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=(State.AWARDED,), action="accept the award of")
        allocation = Allocation.objects.select_for_update().get(proposal=locked)
        if allocation.start_date <= timezone.localdate():
            allocation.state = Allocation.State.ACTIVE
            allocation.save(update_fields=["state"])
        record_transition(locked, to=State.ACCEPTED, actor=actor, reason="Award accepted")
        notify("accepted", locked.pk)
    return allocation


def decline_award(*, proposal: Proposal, actor, reason: str = "") -> Allocation:
    """The PI declines: the allocation is revoked and every hour committed to it returns to the pool."""
    if proposal.pi_id != actor.pk:
        raise PermissionDenied
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=(State.AWARDED,), action="decline the award of")
        allocation = Allocation.objects.get(proposal=locked)
        ledger.revoke_allocation(
            allocation=allocation,
            actor=actor,
            reason=f"Award to {locked.reference} declined",
            idempotency_key=f"decline-{locked.reference}",
        )
        record_transition(locked, to=State.DECLINED, actor=actor, reason=reason or "Award declined")
    return allocation


def activate_started_allocations(*, today: date | None = None) -> int:
    """Make active every accepted allocation whose start date has come (an award not yet accepted waits).

    Safe to run any number of times: each allocation moves only from `scheduled`, under a guarded update.
    """
    today = today or timezone.localdate()
    due = Allocation.objects.filter(
        state=Allocation.State.SCHEDULED, start_date__lte=today, end_date__gte=today
    ).filter(Q(proposal__isnull=True) | Q(proposal__state=State.ACCEPTED))
    return due.update(state=Allocation.State.ACTIVE)
