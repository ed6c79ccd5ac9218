"""Celery tasks for usage and report exports: they take ids, re-read state, and are safe to run twice (DESIGN.md,
Celery queues).

Names route them: `ingest_*` to the ingest queue, `reconcile_*` to reconcile, `report_*` to reports, the rest to
default. Retries are for transient database trouble only (a deadlock victim, a dropped connection); a bug fails
loudly.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.db import OperationalError

TRANSIENT = (OperationalError,)


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def ingest_batch_task(batch_id: int) -> dict:
    """Read a stored batch (an upload) and record its rows; a batch already read is left as it is."""
    from allocations.models import IngestBatch
    from allocations.usage.ingest import IngestError, process_batch

    batch = IngestBatch.objects.select_related("system").get(pk=batch_id)
    if batch.status == IngestBatch.Status.RECEIVED:
        try:
            process_batch(batch=batch)
        except IngestError:
            pass  # the batch is marked failed, with the reason, for the operator to see
        else:
            reconcile_system_task.delay(batch.system_id)
    return batch.counts()


@shared_task
def ingest_stalled_batches_task() -> int:
    """Queue again the batches whose reading was lost, those of the last day; returns how many."""
    from allocations.usage.services import stalled_batches

    batch_ids = list(stalled_batches().values_list("pk", flat=True)[:100])
    for batch_id in batch_ids:
        ingest_batch_task.delay(batch_id)
    return len(batch_ids)


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def reconcile_system_task(system_id: int) -> int | None:
    """Charge what changed on a system, then check thresholds; returns the run id (None if nothing moved)."""
    from allocations.usage.reconcile import reconcile_system
    from programmes.models import System

    system = System.objects.get(pk=system_id)
    run = reconcile_system(system=system)
    if run is not None:
        check_thresholds_task.delay(system_id)
    return run.pk if run else None


@shared_task
def reconcile_all_systems_task() -> None:
    """Beat: reconcile every system, in case an ingest's own run was lost."""
    from programmes.models import System

    for system_id in System.objects.values_list("pk", flat=True):
        reconcile_system_task.delay(system_id)


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def check_thresholds_task(system_id: int) -> int:
    from allocations.usage.thresholds import check_thresholds
    from programmes.models import System

    return len(check_thresholds(system=System.objects.get(pk=system_id)))


@shared_task
def check_all_thresholds_task() -> None:
    from programmes.models import System

    for system_id in System.objects.values_list("pk", flat=True):
        check_thresholds_task.delay(system_id)


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def activate_allocations_task() -> int:
    """Beat, hourly: accepted allocations whose start date has come become active (and get their limit)."""
    from allocations.awards import activate_started_allocations

    return activate_started_allocations()


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def expire_allocations_task() -> int:
    """Beat, daily: end allocations settled past their end date, each once (a ledger key per allocation)."""
    from allocations.usage.thresholds import expire_ended_allocations

    return expire_ended_allocations()


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def send_threshold_notice_task(notice_id: int) -> int:
    """Email the PI and the team that their allocation passed a threshold (the notice row exists once).

    One message, and one task, per person: a mail server failing for one address is retried for that address
    alone, so nobody else is told twice. Returns how many were enqueued.
    """
    from django.db import transaction
    from django.utils import timezone

    from allocations.models import ThresholdNotice
    from allocations.usage.thresholds import threshold_recipients

    with transaction.atomic():
        # The first hand-over wins: the notice's own task and the beat's may both run. If the broker fails part
        # way, the mark is rolled back and the beat hands the notice over again.
        if not ThresholdNotice.objects.filter(pk=notice_id, queued_at__isnull=True).update(queued_at=timezone.now()):
            return 0
        notice = ThresholdNotice.objects.select_related("allocation__holder").get(pk=notice_id)
        recipients = threshold_recipients(notice.allocation)
        for address in recipients:
            send_threshold_email_task.delay(notice_id, address)
    return len(recipients)


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_threshold_email_task(notice_id: int, address: str) -> bool:
    """Tell one member of an allocation's team that it passed a threshold."""
    from django.urls import reverse

    from allocations.ledger import format_gpu_hours, usage_and_commitments
    from allocations.models import ThresholdNotice
    from allocations.usage.thresholds import percent_used

    notice = ThresholdNotice.objects.select_related("allocation__system").get(pk=notice_id)
    allocation = notice.allocation
    # An award on several systems runs under one account name on each: the system says which one this is.
    where = f"{allocation.scheduler_account} on {allocation.system.name}"
    # The usage that passed the threshold, against the award: one charge may pass several thresholds at once,
    # and each of their emails then gives the same true figures.
    _, committed = usage_and_commitments([allocation.pk])[allocation.pk]
    link = f"{settings.SITE_URL}{reverse('usage:allocation-usage', args=[allocation.pk])}"
    send_mail(
        subject=f"{where} has used {notice.percent}% of its GPU-hours",
        message=(
            f"The allocation {where} ({allocation.title}) has passed {notice.percent}% of its award: it had used "
            f"{format_gpu_hours(notice.used_seconds)} of its {format_gpu_hours(committed)} GPU-hours "
            f"({percent_used(notice.used_seconds, committed)}%).\n"
            + (
                "When it passes its award (plus any grace), its jobs can no longer start.\n"
                if notice.percent < 100
                else "It has reached its award: new jobs may be held by the scheduler.\n"
            )
            + f"Its usage, per member and per job, and its statement: {link}\n"
            + "You receive this as its principal investigator or a member of its team.\n"
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=[address],
    )
    return True


# Reports: `report_*` tasks run on the `reports` queue, so a long export never delays the charging of usage.


@shared_task(
    bind=True, autoretry_for=TRANSIENT, retry_backoff=True, max_retries=3, soft_time_limit=3600, time_limit=3700
)
def report_export_task(self, export_id: int) -> str:
    """Build a report export's file (a finished one is left alone); returns its state."""
    from allocations.reports.services import build_report_export, give_up_report_export

    try:
        return build_report_export(export_id=export_id).state
    except TRANSIENT:
        if self.request.retries >= self.max_retries:
            # The last try: mark the export failed, or its page would wait for it for ever.
            give_up_report_export(export_id=export_id)
        raise


@shared_task
def report_delete_expired_exports_task() -> int:
    """Beat, hourly: delete the files of report exports past their expiry."""
    from allocations.reports.services import delete_expired_report_exports

    return delete_expired_report_exports()
