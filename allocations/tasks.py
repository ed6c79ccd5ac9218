"""Celery tasks for usage and report exports: they take ids, re-read state, and are safe to run twice (DESIGN.md,
Celery queues).

Names route them: `ingest_*` to the ingest queue, `reconcile_*` to reconcile, `report_*` to reports, the rest to
default. Retries are for transient database trouble only (a deadlock victim, a dropped connection); a bug fails
loudly.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import OperationalError

TRANSIENT = (OperationalError,)

logger = logging.getLogger(__name__)


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


@shared_task(bind=True, autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def reconcile_system_task(self, system_id: int) -> int | None:
    """Charge what changed on a system, then check thresholds; returns the run id (None if nothing moved).

    A failed run charges nothing (it is one transaction) and leaves the system's records for the next. Only
    transient database trouble runs it again: anything else would fail the same way on the same records, so it
    fails at once, and the beat's next pass tries once more. Either way the log names the system and the reason,
    and the system's cursor records the failure for its operators' usage pages until a run succeeds.
    """
    from allocations.usage.reconcile import reconcile_system, record_reconciliation_failure
    from programmes.models import System

    system = System.objects.get(pk=system_id)
    try:
        run = reconcile_system(system=system)
    except Exception as problem:
        if not isinstance(problem, TRANSIENT) or self.request.retries >= self.max_retries:
            logger.error(
                "Reconciliation of %s (%s) failed and charged nothing: %s: %s",
                system.name,
                system.slug,
                type(problem).__name__,
                problem,
            )
            try:
                record_reconciliation_failure(system=system, problem=problem)
            except Exception:
                # The database trouble that failed the run may fail this too: the error above is logged already.
                logger.exception("The failed reconciliation of %s (%s) could not be recorded", system.name, system.slug)
        raise
    if run is not None:
        check_thresholds_task.delay(system_id)
    return run.pk if run else None


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def reconcile_claim_held_usage_task(allocation_id: int) -> int:
    """After an award: the new allocation takes the usage held under its scheduler account, to be charged by the
    reconciliation this enqueues (services.claim_held_usage); returns how many job records it took."""
    from allocations.models import Allocation
    from allocations.usage.services import claim_held_usage

    return claim_held_usage(Allocation.objects.select_related("pool__system").get(pk=allocation_id))


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def reconcile_claim_all_held_usage_task() -> int:
    """Beat, every five minutes: allocations claim usage held under their own accounts that their award's claim
    missed (services.claim_all_held_usage); returns how many job records moved."""
    from allocations.usage.services import claim_all_held_usage

    return claim_all_held_usage()


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
    """Beat, every five minutes: accepted allocations whose start date has come become active (the limits list them
    so from midnight, `limits.py`)."""
    from allocations.awards import activate_started_allocations

    return activate_started_allocations()


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def expire_allocations_task() -> int:
    """Beat, daily: end allocations settled past their end date, each once (a ledger key per allocation)."""
    from allocations.usage.thresholds import expire_ended_allocations

    return expire_ended_allocations()


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
