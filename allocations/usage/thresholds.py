"""What follows from usage: notices at 50, 75, 90 and 100 % used, exhaustion past the grace (undone if refunds
bring usage back under it), expiry.

Each is safe to run any number of times: a notice is a row unique per (allocation, percent), exhaustion is a
state change guarded by the current state, and expiry goes through the ledger with a key per allocation.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from airr_portal.mail import email_after_commit
from allocations import ledger
from allocations.models import Allocation, LedgerAccount, ThresholdNotice
from allocations.usage.ingest import hold_changes
from allocations.usage.reconcile import reconcile_system
from programmes.models import System

THRESHOLDS = (50, 75, 90, 100)
_OPEN_STATES = (Allocation.State.ACTIVE, Allocation.State.EXHAUSTED)


def percent_used(used: int, committed: int) -> int:
    """Whole percent used, rounded down (99.99 % is not yet 100 %)."""
    return (used * 100) // committed if committed > 0 else 0


def check_thresholds(*, system: System) -> list[ThresholdNotice]:
    """Record (and email after commit) each threshold passed; exhaust allocations past 100 % + grace, and make
    active again an exhausted one that refunds brought back under it (notices are not sent again)."""
    open_allocations = Allocation.objects.filter(system=system, state__in=_OPEN_STATES).select_related(
        "pool", "system", "holder"
    )
    allocations = {a.pk: a for a in open_allocations}
    if not allocations:
        return []
    figures = ledger.usage_and_commitments(allocations)
    sent = {
        (allocation_id, percent)
        for allocation_id, percent in ThresholdNotice.objects.filter(allocation__in=allocations).values_list(
            "allocation", "percent"
        )
    }
    notices = []
    for pk, allocation in allocations.items():
        used, committed = figures[pk]
        if committed <= 0:
            continue
        percent = percent_used(used, committed)
        for threshold in THRESHOLDS:
            if percent >= threshold and (pk, threshold) not in sent:
                notice = _record_notice(allocation, threshold, used)
                if notice is not None:
                    notices.append(notice)
        past_limit = _past_limit(allocation, used, committed)
        if allocation.state == Allocation.State.ACTIVE and past_limit:
            exhaust_allocation(allocation=allocation)
        elif allocation.state == Allocation.State.EXHAUSTED and not past_limit:
            reopen_allocation(allocation=allocation)  # a refund (a job re-reported shorter) gave hours back
    return notices


def _record_notice(allocation: Allocation, percent: int, used: int) -> ThresholdNotice | None:
    """Record that the allocation passed `percent`, and write its emails (sent once the transaction commits)."""
    try:
        with transaction.atomic():
            notice = ThresholdNotice.objects.create(allocation=allocation, percent=percent, used_seconds=used)
            _email_notice(notice)
    except IntegrityError:
        return None  # another run recorded it first: it is sent once, by that run
    return notice


def _email_notice(notice: ThresholdNotice) -> None:
    """Tell the PI and the team that their allocation passed a threshold, one email per person."""
    allocation = notice.allocation
    # An award on several systems runs under one account name on each: the system says which one this is.
    where = f"{allocation.scheduler_account} on {allocation.system.name}"
    # The usage that passed the threshold, against the award: one charge may pass several thresholds at once,
    # and each of their emails then gives the same true figures.
    _, committed = ledger.usage_and_commitments([allocation.pk])[allocation.pk]
    link = f"{settings.SITE_URL}{reverse('usage:allocation-usage', args=[allocation.pk])}"
    email_after_commit(
        f"{where} has used {notice.percent}% of its GPU-hours",
        (
            f"The allocation {where} ({allocation.title}) has passed {notice.percent}% of its award: it had used "
            f"{ledger.format_gpu_hours(notice.used_seconds)} of its {ledger.format_gpu_hours(committed)} GPU-hours "
            f"({percent_used(notice.used_seconds, committed)}%).\n"
            + (
                "When it passes its award (plus any grace), its jobs can no longer start.\n"
                if notice.percent < 100
                else "It has reached its award: new jobs may be held by the scheduler.\n"
            )
            + f"Its usage, per member and per job, and its statement: {link}\n"
            + "You receive this as its principal investigator or a member of its team.\n"
        ),
        threshold_recipients(allocation),
    )


def threshold_recipients(allocation: Allocation) -> list[str]:
    """Who hears that an allocation passed a threshold: its holder (the PI) and its proposal's accepted team.

    The holder first; members who have not accepted their invitation are not the team yet. An address on the list
    twice is written one email (`email_after_commit` writes each address once).
    """
    addresses = []
    if allocation.holder is not None:
        addresses.append(allocation.holder.email)
    if allocation.proposal_id is not None:
        from programmes.models import ProposalMember

        members = (
            ProposalMember.objects.filter(proposal=allocation.proposal_id, accepted_at__isnull=False)
            .select_related("user")
            .order_by("accepted_at", "pk")
        )
        addresses.extend(member.user.email if member.user else member.email for member in members)
    return addresses


def _is_past_limit(allocation: Allocation) -> bool:
    """Whether the allocation has used its award plus its pool's grace, by figures read under the lock of its
    ledger account. A charge or refund holds that lock until it commits, so the figures are the latest and stay
    so until the caller's transaction ends: a check that read them before a later charge or refund (two checks
    run at once after two reconciliations) cannot act on them. The caller's transaction must be open; the lock
    is the ledger's (accounts before the allocation row, as expiry and revocation take them)."""
    LedgerAccount.objects.select_for_update().filter(allocation=allocation).first()
    used, committed = ledger.usage_and_commitments([allocation.pk])[allocation.pk]
    return committed > 0 and _past_limit(allocation, used, committed)


def _past_limit(allocation: Allocation, used: int, committed: int) -> bool:
    """The rule: usage at or past the award plus the pool's grace exhausts an allocation."""
    return used * 100 >= committed * (100 + allocation.pool.grace_percent)


def exhaust_allocation(*, allocation: Allocation) -> bool:
    """Mark an active allocation exhausted (its scheduler limit drops to 0); False if it was not active, or its
    usage is (by now) under its award plus grace."""
    with transaction.atomic():
        changed = _is_past_limit(allocation) and Allocation.objects.filter(
            pk=allocation.pk, state=Allocation.State.ACTIVE
        ).update(state=Allocation.State.EXHAUSTED)
    if changed:
        allocation.state = Allocation.State.EXHAUSTED
    return bool(changed)


def today_on(system: System) -> date:
    """Today's date where the system's allocation days begin and end: in its time zone, not the portal's."""
    from allocations.usage.ingest import IngestError, time_zone_of

    try:
        return timezone.localdate(timezone=time_zone_of(system))
    except IngestError:
        return timezone.localdate()


def on_each_systems_day(condition, *, today: date | None = None) -> Q:
    """Allocations meeting `condition(day)`, each with its own system's today (`today_on`), or `today` for all."""
    matches = Q(pk__in=[])
    for system in System.objects.all():
        matches |= Q(system=system) & condition(today or today_on(system))
    return matches


def reopen_allocation(*, allocation: Allocation) -> bool:
    """Make an exhausted allocation active again (its limit comes back); False if it was not exhausted, or its
    usage is (by now) at or past its award plus grace."""
    with transaction.atomic():
        changed = not _is_past_limit(allocation) and Allocation.objects.filter(
            pk=allocation.pk, state=Allocation.State.EXHAUSTED
        ).update(state=Allocation.State.ACTIVE)
    if changed:
        allocation.state = Allocation.State.ACTIVE
    return bool(changed)


def expire_ended_allocations(*, today: date | None = None) -> int:
    """Expire every open allocation settled since its end date; unused hours follow the pool's policy, once.

    An allocation settles USAGE_SETTLING_DAYS after its last day. Its jobs stop at the end date (the scheduler
    limits give it 0 from the next day, `limits.py`), but the cluster may report some of them later; until it
    settles they are charged against the allocation's own hours, not against hours already given back.

    Usage already recorded is charged first, even where its own reconciliation is still queued or was lost: the
    hours that leave are those left after it. Each system's change lock is held meanwhile, so no usage is
    recorded or assigned between the charging and the ending; what comes after finds the allocation ended.

    Without `today`, an allocation's last day ends at midnight in its system's time zone (where ingest says its
    window closes), so a UTC system's allocation is not ended an hour early while London keeps summer time.
    """
    settling = timedelta(days=settings.USAGE_SETTLING_DAYS)
    settled = on_each_systems_day(lambda day: Q(end_date__lt=day - settling), today=today)
    ended = list(
        Allocation.objects.filter(settled, state__in=(*_OPEN_STATES, Allocation.State.SCHEDULED))
        .select_related("pool__system")
        .order_by("pk")
    )
    by_system = defaultdict(list)
    for allocation in ended:
        by_system[allocation.pool.system].append(allocation)
    count = 0
    for system, allocations in by_system.items():
        with transaction.atomic():
            # The system's change lock, held from the charging to the ending: an ingest or an assignment of
            # unmatched usage committed in between would be charged after the unused hours had left.
            hold_changes(system)
            # The pools before the charging: it locks allocation and sink accounts, which the ledger's order puts
            # after the pools the endings lock (a revocation holding a pool would wait for them, and they for it).
            ledger.hold_pools({allocation.pool for allocation in allocations})
            reconcile_system(system=system)
            for allocation in allocations:
                try:
                    ledger.expire_allocation(
                        allocation=allocation, idempotency_key=f"expire-allocation:{allocation.pk}"
                    )
                    count += 1
                except ledger.WrongState:
                    continue  # ended meanwhile (revoked, or expired by a concurrent run)
    return count
