"""The usage tasks: run again after transient database trouble (a dropped connection, a deadlock victim), never
after a bug, and charge nothing twice when they are."""

import importlib
from unittest import mock

import pytest
from django.db import OperationalError

from allocations import ledger, tasks
from allocations.models import IngestBatch, ReconciliationCursor
from allocations.usage.ingest import ingest_sacct, receive_payload
from allocations.usage.reconcile import record_reconciliation_failure
from tests.allocations.usage_helpers import HOUR, funded_allocation, payload, sacct_line

pytestmark = pytest.mark.django_db

# Each task that writes, and the service it calls (patched where the task imports it from, when it runs).
WRITING_TASKS = [
    (tasks.reconcile_system_task, "allocations.usage.reconcile.reconcile_system"),
    (tasks.check_thresholds_task, "allocations.usage.thresholds.check_thresholds"),
    (tasks.ingest_batch_task, "allocations.usage.ingest.process_batch"),
    (tasks.activate_allocations_task, "allocations.awards.activate_started_allocations"),
    (tasks.expire_allocations_task, "allocations.usage.thresholds.expire_ended_allocations"),
]


def _arguments(task, system):
    if task is tasks.ingest_batch_task:
        return [receive_payload(system=system, payload=payload(sacct_line(1)), source="api").batch.pk]
    if task in (tasks.reconcile_system_task, tasks.check_thresholds_task):
        return [system.pk]
    return []


def _run(task, *arguments):
    """Run a task here as a worker would: a retry runs it again (at once), an error fails it rather than raising."""
    return task.apply(arguments, throw=False)


def _failing_once(problem, service_path):
    """The real service, after `problem` on its first call; the calls counted."""
    module, name = service_path.rsplit(".", 1)
    real = getattr(importlib.import_module(module), name)
    calls = []

    def service(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise problem
        return real(*args, **kwargs)

    return service, calls


@pytest.mark.parametrize(("task", "service_path"), WRITING_TASKS, ids=[task.__name__ for task, _ in WRITING_TASKS])
def test_a_task_whose_database_connection_drops_is_run_again(system, task, service_path):
    service, calls = _failing_once(OperationalError("server closed the connection unexpectedly"), service_path)

    with mock.patch(service_path, side_effect=service):
        result = _run(task, *_arguments(task, system))

    assert (len(calls), result.successful()) == (2, True)


@pytest.mark.parametrize(("task", "service_path"), WRITING_TASKS, ids=[task.__name__ for task, _ in WRITING_TASKS])
def test_a_task_that_meets_a_bug_fails_at_once_without_running_again(system, task, service_path):
    service, calls = _failing_once(ValueError("a bug"), service_path)

    with mock.patch(service_path, side_effect=service):
        result = _run(task, *_arguments(task, system))

    assert (len(calls), result.failed(), repr(result.result)) == (1, True, "ValueError('a bug')")


def test_a_reconciliation_run_again_after_its_connection_dropped_charges_each_job_once(system):
    allocation = funded_allocation(system)
    ingest_sacct(system=system, payload=payload(sacct_line(1, gpus=2), sacct_line(2, gpus=3)), source="command")
    service, calls = _failing_once(
        OperationalError("deadlock detected"), "allocations.usage.reconcile.reconcile_system"
    )

    with mock.patch("allocations.usage.reconcile.reconcile_system", side_effect=service):
        result = _run(tasks.reconcile_system_task, system.pk)
    _run(tasks.reconcile_system_task, system.pk)  # and the beat's run after it

    assert (len(calls), result.successful()) == (2, True)
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 5 * HOUR


def test_a_batch_read_again_after_its_connection_dropped_is_recorded_and_charged_once(system):
    allocation = funded_allocation(system)
    batch = receive_payload(system=system, payload=payload(sacct_line(1, gpus=4)), source="api").batch
    service, calls = _failing_once(
        OperationalError("server closed the connection"), "allocations.usage.ingest.process_batch"
    )

    with mock.patch("allocations.usage.ingest.process_batch", side_effect=service):
        result = _run(tasks.ingest_batch_task, batch.pk)
    _run(tasks.ingest_batch_task, batch.pk)  # queued again by the beat meanwhile

    batch.refresh_from_db()
    assert (len(calls), result.successful(), batch.status, batch.new) == (2, True, IngestBatch.Status.INGESTED, 1)
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 4 * HOUR


def test_a_reconciliation_that_would_fail_the_same_way_again_is_not_run_again_and_logs_its_system_and_reason(
    system, caplog
):
    refusal = ledger.InvalidAmount("A refund would give back more GPU-hours than were charged")

    with mock.patch("allocations.usage.reconcile.reconcile_system", side_effect=refusal) as service:
        result = _run(tasks.reconcile_system_task, system.pk)

    assert (service.call_count, result.failed()) == (1, True)
    (record,) = [record for record in caplog.records if record.name == "allocations.tasks"]
    assert record.levelname == "ERROR"
    assert record.getMessage() == (
        f"Reconciliation of {system.name} ({system.slug}) failed and charged nothing: "
        "InvalidAmount: A refund would give back more GPU-hours than were charged"
    )


def test_a_reconciliation_whose_database_trouble_outlasts_its_retries_logs_its_system_and_reason(system, caplog):
    # Its last try (the retries before it are not failures yet, and are not logged).
    with mock.patch(
        "allocations.usage.reconcile.reconcile_system", side_effect=OperationalError("could not connect")
    ) as service:
        result = tasks.reconcile_system_task.apply([system.pk], retries=5, throw=False)

    assert (service.call_count, result.failed()) == (1, True)
    (record,) = [record for record in caplog.records if record.name == "allocations.tasks"]
    assert system.slug in record.getMessage() and "OperationalError: could not connect" in record.getMessage()


# A function the real run calls once it has worked out what to charge: made to refuse, the run fails and rolls back.
RECORD_USAGE = "allocations.usage.reconcile.ledger.record_usage_in_bulk"


def test_a_failed_reconciliation_is_recorded_on_its_system_until_a_run_of_it_succeeds(system):
    """The beat tries again every five minutes, but only the log said each try failed: the cursor keeps when the
    failing began, how many runs failed and the last error, for the operators' pages (test_usage_pages.py)."""
    allocation = funded_allocation(system)
    ingest_sacct(system=system, payload=payload(sacct_line(1, gpus=2)), source="command")
    refusal = ledger.InvalidAmount("A refund would give back more GPU-hours than were charged")

    with mock.patch(RECORD_USAGE, side_effect=refusal):
        first = _run(tasks.reconcile_system_task, system.pk)
        began = ReconciliationCursor.objects.get(system=system).failing_since
        second = _run(tasks.reconcile_system_task, system.pk)

    cursor = ReconciliationCursor.objects.get(system=system)
    assert (first.failed(), second.failed(), cursor.failures, cursor.failing_since) == (True, True, 2, began)
    assert began is not None
    assert cursor.failure == "InvalidAmount: A refund would give back more GPU-hours than were charged"
    assert (cursor.reconciled_seq, ledger.net_usage(ledger.allocation_account(allocation))) == (0, 0)

    assert _run(tasks.reconcile_system_task, system.pk).successful()

    cursor.refresh_from_db()
    assert (cursor.failures, cursor.failing_since, cursor.failure) == (0, None, "")
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 2 * HOUR


def test_a_run_with_nothing_to_charge_clears_a_failure_too(system):
    """After a failure nothing new may come for hours (a cluster at rest): its next run succeeds all the same."""
    with mock.patch("allocations.usage.reconcile.reconcile_system", side_effect=ValueError("a bug")):
        _run(tasks.reconcile_system_task, system.pk)
    assert ReconciliationCursor.objects.get(system=system).failures == 1

    result = _run(tasks.reconcile_system_task, system.pk)

    assert (result.successful(), result.result) == (True, None)
    assert ReconciliationCursor.objects.get(system=system).failures == 0


def test_a_reconciliation_run_again_after_transient_trouble_is_recorded_as_failing_only_when_its_retries_run_out(
    system, caplog
):
    service, _ = _failing_once(OperationalError("deadlock detected"), "allocations.usage.reconcile.reconcile_system")
    # The try that is retried records nothing, and logs nothing (the success after it would clear a record anyway).
    with (
        mock.patch("allocations.usage.reconcile.reconcile_system", side_effect=service),
        mock.patch(
            "allocations.usage.reconcile.record_reconciliation_failure", wraps=record_reconciliation_failure
        ) as recording,
    ):
        assert _run(tasks.reconcile_system_task, system.pk).successful()
    assert not recording.called
    assert not [record for record in caplog.records if record.name == "allocations.tasks"]
    assert not ReconciliationCursor.objects.filter(system=system, failures__gt=0).exists()

    with mock.patch("allocations.usage.reconcile.reconcile_system", side_effect=OperationalError("could not connect")):
        tasks.reconcile_system_task.apply([system.pk], retries=5, throw=False)

    cursor = ReconciliationCursor.objects.get(system=system)
    assert (cursor.failures, cursor.failure) == (1, "OperationalError: could not connect")


def test_a_failures_long_error_is_kept_shortened(system):
    with mock.patch(RECORD_USAGE, side_effect=ValueError("x" * 2000)):
        funded_allocation(system)
        ingest_sacct(system=system, payload=payload(sacct_line(1)), source="command")
        _run(tasks.reconcile_system_task, system.pk)

    failure = ReconciliationCursor.objects.get(system=system).failure
    assert len(failure) == 500 and failure.startswith("ValueError: xxx") and failure.endswith("…")


def test_a_failure_that_cannot_be_recorded_still_fails_the_run_with_its_own_error_and_logs_both(system, caplog):
    with (
        mock.patch("allocations.usage.reconcile.reconcile_system", side_effect=ValueError("a bug")),
        mock.patch(
            "allocations.usage.reconcile.record_reconciliation_failure",
            side_effect=OperationalError("server closed the connection"),
        ),
    ):
        result = _run(tasks.reconcile_system_task, system.pk)

    assert (result.failed(), repr(result.result)) == (True, "ValueError('a bug')")
    messages = [record.getMessage() for record in caplog.records if record.name == "allocations.tasks"]
    assert messages == [
        f"Reconciliation of {system.name} ({system.slug}) failed and charged nothing: ValueError: a bug",
        f"The failed reconciliation of {system.name} ({system.slug}) could not be recorded",
    ]
