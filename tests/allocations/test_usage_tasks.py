"""The usage tasks: run again after transient database trouble (a dropped connection, a deadlock victim), never
after a bug, and charge nothing twice when they are."""

import importlib
from unittest import mock

import pytest
from django.db import OperationalError

from allocations import ledger, tasks
from allocations.models import IngestBatch
from allocations.usage.ingest import ingest_sacct, receive_payload
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
