"""The whole path through a real Redis broker and real worker processes, including one killed mid-run.

The worker is a separate process on the test database, so these tests commit their data (transaction=True)
and wait for the worker's effects by polling the database.
"""

import os
import signal
import time

import pytest
from django.db import connection
from django.urls import reverse

from allocations import ledger
from allocations.models import JobCharge, JobRecord, LedgerEntry, LedgerTransaction, ReconciliationCursor
from allocations.tasks import reconcile_system_task
from allocations.usage.ingest import ingest_sacct
from allocations.usage.reconcile import PAUSE_ENVIRONMENT_VARIABLE, PAUSED_APPLICATION_NAME, reconcile_system
from allocations.usage.services import create_ingest_token
from tests.allocations.usage_helpers import HOUR, funded_allocation, payload, sacct_line
from tests.factories import SystemFactory
from tests.postgres import requires_postgres

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]


def wait_for(condition, *, timeout=60.0, message="the worker did not finish in time"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(message)


def used(allocation) -> int:
    return ledger.net_usage(ledger.allocation_account(allocation))


@requires_postgres
def test_a_job_posted_to_the_api_is_charged_by_a_worker_through_redis(client, system, celery_worker_process):
    allocation = funded_allocation(system)
    _, key = create_ingest_token(system=system, name="cron", actor=None)

    response = client.generic(
        "POST",
        reverse("usage-ingest", args=[system.slug]),
        payload(sacct_line(1, gpus=8)),
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )

    assert response.status_code == 201
    wait_for(lambda: used(allocation) == 8 * HOUR)
    assert JobRecord.objects.with_charged_seconds().get().charged_seconds == 8 * HOUR


@requires_postgres
def test_a_payload_posted_asynchronously_is_read_and_charged_by_a_worker_while_the_cluster_polls(
    client, system, celery_worker_process
):
    allocation = funded_allocation(system)
    _, key = create_ingest_token(system=system, name="cron", actor=None)

    response = client.generic(
        "POST",
        reverse("usage-ingest", args=[system.slug]),
        payload(sacct_line(1, gpus=4), sacct_line(2, gpus=2)),
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        HTTP_PREFER="respond-async",
    )

    assert response.status_code == 202

    def read():
        return client.get(response["Location"], HTTP_AUTHORIZATION=f"Bearer {key}").json()

    wait_for(lambda: read()["status"] == "ingested")
    assert read()["new"] == 2
    wait_for(lambda: used(allocation) == 6 * HOUR)


def _usage_on(system, allocations_count=4):
    allocations = [funded_allocation(system, account=f"{system.slug}-{n}") for n in range(allocations_count)]
    lines = [
        sacct_line(
            100 * n + job,
            account=allocation.scheduler_account,
            gpus=job,
            elapsed=600 * n + 60,
            cluster=system.cluster_name,
        )
        for n, allocation in enumerate(allocations)
        for job in range(1, 4)
    ]
    ingest_sacct(system=system, payload=payload(*lines), source="command")
    return allocations


def _ledger_picture(allocations):
    """What a reader of the ledger sees: per allocation its usage, balance, every entry of every transaction that
    touches it (both sides, so the consumed sink's too), and its per-job parts."""
    return [
        (
            used(allocation),
            ledger.allocation_account(allocation).balance,
            sorted(
                LedgerEntry.objects.filter(
                    transaction__in=LedgerTransaction.objects.filter(entries__account__allocation=allocation)
                ).values_list("transaction__type", "account__kind", "amount")
            ),
            sorted(
                JobCharge.objects.filter(job_record__allocation=allocation).values_list("job_record__job_id", "seconds")
            ),
        )
        for allocation in allocations
    ]


@pytest.fixture
def paused_worker(request, monkeypatch):
    """A worker that pauses after writing the ledger and before moving the records and the cursor.

    The pause outlasts any wait of the test: it is killed there, never let through to its commit by a slow machine.
    """
    monkeypatch.setenv(PAUSE_ENVIRONMENT_VARIABLE, "600")
    worker = request.getfixturevalue("celery_worker_process")
    monkeypatch.delenv(PAUSE_ENVIRONMENT_VARIABLE)
    return worker


def _paused_session() -> int | None:
    """The worker's database session once its run has written the ledger and paused, its transaction open."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND state = 'idle in transaction'",
            [PAUSED_APPLICATION_NAME],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _tables_written_by(pid: int) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE l.pid = %s AND l.mode = 'RowExclusiveLock'",
            [pid],
        )
        return {name for (name,) in cursor.fetchall()}


def _session_alive(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
        return cursor.fetchone() is not None


@requires_postgres
def test_a_worker_killed_mid_reconciliation_leaves_the_ledger_as_an_uninterrupted_run_would(paused_worker):
    killed_system = SystemFactory(slug="killed", name="Killed", cluster_name="killed")
    calm_system = SystemFactory(slug="calm", name="Calm", cluster_name="calm")
    killed = _usage_on(killed_system)
    calm = _usage_on(calm_system)
    reconcile_system(system=calm_system)  # the uninterrupted run, in this process

    reconcile_system_task.delay(killed_system.pk)
    wait_for(_paused_session, message="the worker never paused after charging")
    session = _paused_session()
    # Now the ledger rows are written inside the worker's open transaction, the records and cursor not yet.
    written = _tables_written_by(session)
    assert {"allocations_ledgertransaction", "allocations_ledgerentry"} <= written
    assert not written & {"allocations_jobcharge", "allocations_reconciliationcursor"}
    os.kill(paused_worker.pid, signal.SIGKILL)
    paused_worker.wait(timeout=20)

    # The dead worker's transaction rolled back whole: nothing charged, the cursor where it was.
    wait_for(lambda: not _session_alive(session), message="the dead worker's transaction is still open")
    assert [picture[0] for picture in _ledger_picture(killed)] == [0, 0, 0, 0]
    assert ReconciliationCursor.objects.get(system=killed_system).reconciled_seq == 0

    reconcile_system(system=killed_system)  # the rerun (a new worker, or beat, would do the same)
    reconcile_system(system=killed_system)  # and once more: nothing twice

    assert _ledger_picture(killed) == _ledger_picture(calm)
    assert _ledger_picture(killed)[3][0] == sum(job * (600 * 3 + 60) for job in range(1, 4))
