"""The usage path under real concurrency on PostgreSQL: ingests, replays, assignments, reconciliations,
threshold checks and expiry running at once, each in its own thread with its own database session.

Every interleaving is forced, never left to timing: a thread stops at a named point (`Gate`) while holding
whatever locks it holds there, the other side runs up to the lock it must wait on (`wait_for_lock_waiters`
polls pg_stat_activity for it), and only then is the first released. Every session has a lock_timeout and
every thread a join timeout, so a deadlock or a hang fails the test instead of blocking it.

After each scenario a final reconciliation must leave every allocation charged exactly what its job records
cost: no GPU-second twice, none lost.
"""

import threading
import time

import pytest
from django.db import connection
from django.db.models import Sum

from allocations import ledger
from allocations.models import (
    Allocation,
    IngestBatch,
    JobCharge,
    JobRecord,
    LedgerAccount,
    ReconciliationCursor,
    RejectedRow,
    UsageSequence,
)
from allocations.usage import services as services_module
from allocations.usage.ingest import ingest_sacct
from allocations.usage.reconcile import reconcile_system
from allocations.usage.services import replay_rejected_rows
from allocations.usage.thresholds import check_thresholds
from tests.allocations.usage_helpers import HOUR, funded_allocation, payload, sacct_line
from tests.postgres import requires_postgres

pytestmark = [pytest.mark.postgres, requires_postgres, pytest.mark.django_db(transaction=True)]

TIMEOUT = 15  # seconds any one wait may take; far above what each step needs


# Forcing the interleavings -----------------------------------------------------------------------------------


class Gate:
    """A point where one named thread stops, holding its locks, until the test releases it."""

    def __init__(self):
        self.reached = threading.Event()
        self.released = threading.Event()

    def stop(self):
        self.reached.set()
        if not self.released.wait(TIMEOUT):
            raise AssertionError("a gate was never released")

    def wait_reached(self):
        assert self.reached.wait(TIMEOUT), "the thread never reached its gate"

    def release(self):
        self.released.set()


def gate(monkeypatch, owner, name, *, thread: str, before: bool = False) -> Gate:
    """Stop thread `thread` just after (or before) it calls `owner.name`; other threads pass freely."""
    stop = Gate()
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if threading.current_thread().name != thread:
            return original(*args, **kwargs)
        if before:
            stop.stop()
        result = original(*args, **kwargs)
        if not before:
            stop.stop()
        return result

    monkeypatch.setattr(owner, name, wrapper)
    return stop


class Worker(threading.Thread):
    """One job in its own thread and database session (closed at the end), with a lock_timeout."""

    def __init__(self, name: str, job):
        super().__init__(name=name, daemon=True)
        self.job, self.result, self.error = job, None, None

    def run(self):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET lock_timeout = '10s'")
            self.result = self.job()
        except BaseException as error:  # noqa: BLE001 (raised again in the test's thread by finish())
            self.error = error
        finally:
            connection.close()

    def finish(self):
        self.join(TIMEOUT + 15)
        assert not self.is_alive(), f"{self.name} is stuck: a lock wait or a deadlock"
        if self.error is not None:
            raise self.error
        return self.result


def start(name: str, job) -> Worker:
    worker = Worker(name, job)
    worker.start()
    return worker


def wait_for_lock_waiters(count: int = 1) -> None:
    """Until `count` sessions of the test database are waiting for a lock (a row lock, a transaction)."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] >= count:
                return
        time.sleep(0.01)
    raise AssertionError(f"{count} session(s) never came to wait on a lock")


@pytest.fixture
def gates():
    """Gates made by a test are all released when it ends, pass or fail, so no thread outlives it."""
    made = []
    yield made
    for each in made:
        each.release()


# What must hold after every scenario ---------------------------------------------------------------------------


def ingest(system, data):
    return ingest_sacct(system=system, payload=data, source="command")


def used(allocation) -> int:
    return ledger.net_usage(ledger.allocation_account(allocation))


def assert_charged_exactly_what_the_records_cost(*systems):
    """A last reconciliation, then each allocation's net usage equals the GPU-seconds of its job records, each
    record's charges sum to its cost, and every balance equals its entries."""
    for system in systems:
        reconcile_system(system=system)
        cursor = ReconciliationCursor.objects.get(system=system)
        assert cursor.reconciled_seq == UsageSequence.objects.get(system=system).last_seq
    for allocation in Allocation.objects.all():
        cost = JobRecord.objects.filter(allocation=allocation).aggregate(total=Sum("gpu_seconds"))["total"] or 0
        assert used(allocation) == cost, f"{allocation.scheduler_account} charged {used(allocation)}, cost {cost}"
    for record in JobRecord.objects.filter(allocation__isnull=False):
        held = JobCharge.objects.filter(job_record=record).aggregate(total=Sum("seconds"))["total"] or 0
        assert held == record.gpu_seconds, f"job {record.job_id_raw} holds {held}, costs {record.gpu_seconds}"
    for account in LedgerAccount.objects.all():
        assert account.balance == (account.entries.aggregate(total=Sum("amount"))["total"] or 0)


def counts(batch: IngestBatch) -> tuple[int, int, int, int, int]:
    batch.refresh_from_db()
    return batch.new, batch.updated, batch.unchanged, batch.unmatched, batch.rejected


# Replays -------------------------------------------------------------------------------------------------------


def batch_with_a_replayable_row(system):
    batch = ingest(system, payload(sacct_line(1), sacct_line(2, start="2026-03-01 10:00"))).batch
    assert counts(batch) == (1, 0, 0, 0, 1)
    RejectedRow.objects.filter(batch=batch).update(raw=sacct_line(2))  # stands in for a settings fix
    return batch


def test_two_replays_of_one_batch_at_once_record_its_rows_once_and_count_them_once(system, monkeypatch, gates):
    allocation = funded_allocation(system)
    batch = batch_with_a_replayable_row(system)
    first_holds_the_lock = gate(monkeypatch, services_module, "_record_rows", thread="first")
    gates.append(first_holds_the_lock)

    first = start("first", lambda: replay_rejected_rows(batch=batch, actor=None))
    first_holds_the_lock.wait_reached()
    # The second read the same rejected rows as still pending, and now waits for the system's change lock.
    second = start("second", lambda: replay_rejected_rows(batch=batch, actor=None))
    wait_for_lock_waiters()
    first_holds_the_lock.release()

    assert first.finish() == (1, 0)
    assert second.finish() == (0, 0)  # nothing was left to replay once it had the lock
    # One row read first time, one by the replay: two new runs, nothing counted twice.
    assert counts(batch) == (2, 0, 0, 0, 0)
    assert JobRecord.objects.count() == 2
    assert_charged_exactly_what_the_records_cost(system)
    assert used(allocation) == 2 * HOUR


# Threshold checks and expiry beside reconciliation ------------------------------------------------------------


def test_a_threshold_check_on_stale_figures_does_not_reopen_an_allocation_a_later_charge_took_past_its_award(
    system, monkeypatch, gates
):
    allocation = funded_allocation(system, hours=100)
    ingest(system, payload(sacct_line(1, gpus=1, elapsed=100 * HOUR)))
    reconcile_system(system=system)
    check_thresholds(system=system)
    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXHAUSTED
    ingest(system, payload(sacct_line(1, gpus=1, elapsed=90 * HOUR)))  # re-reported shorter: refunded 10 hours
    reconcile_system(system=system)
    assert used(allocation) == 90 * HOUR
    # A check (after that refund) has read the allocation exhausted at 90 % used, and is stopped there.
    stale = gate(monkeypatch, ledger, "usage_and_commitments", thread="stale")
    gates.append(stale)
    first = start("stale", lambda: check_thresholds(system=system))
    stale.wait_reached()
    # Meanwhile a new job takes it to 110 %, and the check that follows that charge leaves it exhausted.
    ingest(system, payload(sacct_line(2, gpus=1, elapsed=20 * HOUR)))
    reconcile_system(system=system)
    assert used(allocation) == 110 * HOUR
    check_thresholds(system=system)
    stale.release()
    first.finish()

    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXHAUSTED, "reopened on figures read before the last charge"
    assert_charged_exactly_what_the_records_cost(system)
