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
from datetime import date

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
    MemberSchedulerUser,
    ReconciliationCursor,
    RejectedRow,
    UsageSequence,
)
from allocations.usage import ingest as ingest_module
from allocations.usage import reconcile as reconcile_module
from allocations.usage import services as services_module
from allocations.usage.ingest import ingest_sacct
from allocations.usage.reconcile import reconcile_system
from allocations.usage.services import assign_unmatched_account, claim_held_usage, replay_rejected_rows
from allocations.usage.team import set_member_usernames
from allocations.usage.thresholds import check_thresholds, expire_ended_allocations
from tests.allocations.usage_helpers import HOUR, funded_allocation, payload, sacct_line
from tests.factories import SystemFactory
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


def test_expiry_waits_for_a_reconciliation_holding_the_allocation_and_returns_only_what_was_not_used(
    system, monkeypatch, gates
):
    allocation = funded_allocation(system, hours=100)
    pool_before = ledger.pool_account(allocation.pool).balance
    ingest(system, payload(sacct_line(1, gpus=1, elapsed=30 * HOUR)))
    charging = gate(monkeypatch, ledger, "record_usage_in_bulk", thread="reconcile")
    gates.append(charging)
    run = start("reconcile", lambda: reconcile_system(system=system))
    charging.wait_reached()  # the charge is written, uncommitted, under the allocation account's lock
    # Expiry takes the system's change lock and the pool's, then waits for the reconciliation's cursor.
    expiry = start("expire", lambda: expire_ended_allocations(today=date(2099, 1, 1)))
    wait_for_lock_waiters()
    charging.release()

    assert run.finish().charged_seconds == 30 * HOUR
    assert expiry.finish() == 1
    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXPIRED
    assert ledger.allocation_account(allocation).balance == 0
    assert ledger.pool_account(allocation.pool).balance == pool_before + 70 * HOUR
    assert_charged_exactly_what_the_records_cost(system)


def test_an_assignment_during_an_expirys_charging_waits_and_is_refused_once_the_allocation_has_ended(
    system, monkeypatch, gates
):
    allocation = funded_allocation(system, hours=100)
    pool_before = ledger.pool_account(allocation.pool).balance
    ingest(system, payload(sacct_line(1, gpus=1, elapsed=30 * HOUR), sacct_line(2, account="lab-gpu", gpus=1)))
    charging = gate(monkeypatch, ledger, "record_usage_in_bulk", thread="expire")
    gates.append(charging)
    expiry = start("expire", lambda: expire_ended_allocations(today=date(2099, 1, 1)))
    charging.wait_reached()  # expiry charges the recorded usage before ending the allocation
    assigned = start(
        "assign",
        lambda: assign_unmatched_account(system=system, account="lab-gpu", allocation=allocation, actor=None),
    )
    # Had the assignment gone through now, its hour would be charged after the unused hours went back.
    wait_for_lock_waiters()
    charging.release()

    assert expiry.finish() == 1
    with pytest.raises(services_module.UsageError, match="has ended"):
        assigned.finish()
    assert JobRecord.objects.get(job_id_raw="2").allocation_id is None  # still held, for an open allocation
    assert ledger.allocation_account(allocation).balance == 0
    assert ledger.pool_account(allocation.pool).balance == pool_before + 70 * HOUR
    assert_charged_exactly_what_the_records_cost(system)


def test_a_claim_during_an_expirys_charging_waits_and_takes_nothing_once_the_allocation_has_ended(
    system, monkeypatch, gates
):
    """The claim reads the allocation's state under the system's change lock: read before it, the held hour
    would be charged after the unused hours went back."""
    ingest(system, payload(sacct_line(1, gpus=1, elapsed=30 * HOUR)))  # held: no allocation owns the account yet
    allocation = funded_allocation(system, hours=100)
    pool_before = ledger.pool_account(allocation.pool).balance
    ingest(system, payload(sacct_line(2, gpus=1, elapsed=30 * HOUR)))  # charged at the expiry
    charging = gate(monkeypatch, ledger, "record_usage_in_bulk", thread="expire")
    gates.append(charging)
    expiry = start("expire", lambda: expire_ended_allocations(today=date(2099, 1, 1)))
    charging.wait_reached()
    claiming = start("claim", lambda: claim_held_usage(allocation))
    wait_for_lock_waiters()
    charging.release()

    assert expiry.finish() == 1
    assert claiming.finish() == 0
    assert JobRecord.objects.get(job_id_raw="1").allocation_id is None  # still held
    assert ledger.allocation_account(allocation).balance == 0
    assert ledger.pool_account(allocation.pool).balance == pool_before + 70 * HOUR
    assert_charged_exactly_what_the_records_cost(system)


def test_a_revocation_during_an_expirys_charging_waits_for_it_without_a_deadlock(system, monkeypatch, gates):
    allocation = funded_allocation(system, hours=100)
    pool_before = ledger.pool_account(allocation.pool).balance
    ingest(system, payload(sacct_line(1, gpus=1, elapsed=30 * HOUR)))
    charging = gate(monkeypatch, ledger, "record_usage_in_bulk", thread="expire")
    gates.append(charging)
    expiry = start("expire", lambda: expire_ended_allocations(today=date(2099, 1, 1)))
    charging.wait_reached()  # expiry holds the allocation's account (and the usage sink) until it has ended it
    # A revocation takes the pool's lock, then waits for the allocation's. Expiry, ending the allocation next, needs
    # the pool's: unless it took it before charging (the ledger's order), each waits for the other.
    revocation = start(
        "revoke",
        lambda: ledger.revoke_allocation(allocation=allocation, actor=None, reason="Withdrawn", idempotency_key="r"),
    )
    wait_for_lock_waiters()
    charging.release()

    assert expiry.finish() == 1
    with pytest.raises(ledger.WrongState, match="already ended"):
        revocation.finish()
    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXPIRED
    assert ledger.pool_account(allocation.pool).balance == pool_before + 70 * HOUR
    assert_charged_exactly_what_the_records_cost(system)


# Ingests beside ingests ---------------------------------------------------------------------------------------


def test_two_ingests_of_overlapping_windows_at_once_record_each_run_once_and_count_it_right(system, monkeypatch, gates):
    allocation = funded_allocation(system)
    earlier = payload(
        sacct_line(1, gpus=2, elapsed=HOUR),
        sacct_line(2, state="RUNNING", end="Unknown", elapsed=HOUR),
        sacct_line(3, gpus=4, elapsed=60),
    )
    later = payload(
        sacct_line(2, elapsed=3 * HOUR, end="2026-03-01T13:00:00"),  # ended since
        sacct_line(3, gpus=4, elapsed=60),  # the same
        sacct_line(4, gpus=1, elapsed=HOUR),  # new
    )
    holding = gate(monkeypatch, ingest_module, "_record_rows", thread="earlier")
    gates.append(holding)
    first = start("earlier", lambda: ingest(system, earlier))
    holding.wait_reached()  # its rows are written, uncommitted, under the system's change lock
    second = start("later", lambda: ingest(system, later))
    wait_for_lock_waiters()
    holding.release()

    first_batch, second_batch = first.finish().batch, second.finish().batch
    assert counts(first_batch) == (3, 0, 0, 0, 0)
    assert counts(second_batch) == (1, 1, 1, 0, 0)
    assert JobRecord.objects.count() == 4
    assert JobRecord.objects.get(job_id_raw="2").state == "COMPLETED"
    assert_charged_exactly_what_the_records_cost(system)
    assert used(allocation) == 2 * HOUR + 3 * HOUR + 240 + HOUR


def test_the_same_bytes_posted_twice_at_once_are_read_once_and_the_second_answers_the_first_batch(
    system, monkeypatch, gates
):
    allocation = funded_allocation(system)
    data = payload(sacct_line(1, gpus=2), sacct_line(2, start="2026-03-01 10:00"))
    holding = gate(monkeypatch, ingest_module, "_record_rows", thread="first")
    gates.append(holding)
    first = start("first", lambda: ingest(system, data))
    holding.wait_reached()
    # The second finds the batch received, unread, and reads it too: it waits for the change lock, then finds
    # it read and keeps the first read's counts.
    second = start("second", lambda: ingest(system, data))
    wait_for_lock_waiters()
    holding.release()

    one, two = first.finish(), second.finish()
    assert (one.is_duplicate, two.is_duplicate) == (False, True)
    assert one.batch.pk == two.batch.pk == IngestBatch.objects.get().pk
    assert counts(one.batch) == (1, 0, 0, 0, 1)
    assert two.as_dict()["new"] == 1 and len(two.as_dict()["rejected_rows"]) == 1
    assert RejectedRow.objects.count() == 1
    assert_charged_exactly_what_the_records_cost(system)
    assert used(allocation) == 2 * HOUR


def test_the_same_bytes_whose_batch_row_is_written_meanwhile_are_a_duplicate_and_leave_one_stored_file(
    system, monkeypatch, settings, gates
):
    allocation = funded_allocation(system)
    data = payload(sacct_line(1, gpus=2))
    # The second has stored its copy and found no batch of those bytes; it stops before naming its file.
    naming = gate(monkeypatch, ingest_module.os, "replace", thread="second", before=True)
    gates.append(naming)
    second = start("second", lambda: ingest(system, data))
    naming.wait_reached()
    first = ingest(system, data)  # the whole ingest, compressed copy and all
    naming.release()

    again = second.finish()  # its batch row is refused by the unique (system, sha256): the first batch's
    assert (first.is_duplicate, again.is_duplicate) == (False, True)
    assert again.batch.pk == first.batch.pk and IngestBatch.objects.count() == 1
    folder = settings.MEDIA_ROOT / "ingest" / system.slug
    assert sorted(path.name for path in folder.iterdir()) == [first.batch.raw_path.rsplit("/", 1)[1]]
    assert_charged_exactly_what_the_records_cost(system)
    assert used(allocation) == 2 * HOUR


def test_a_replay_and_another_batch_of_the_system_at_once_count_each_in_its_own_batch(system, monkeypatch, gates):
    allocation = funded_allocation(system)
    batch = batch_with_a_replayable_row(system)
    holding = gate(monkeypatch, services_module, "_record_rows", thread="replay")
    gates.append(holding)
    replay = start("replay", lambda: replay_rejected_rows(batch=batch, actor=None))
    holding.wait_reached()
    other = start("other", lambda: ingest(system, payload(sacct_line(2), sacct_line(3, gpus=3))))
    wait_for_lock_waiters()
    holding.release()

    assert replay.finish() == (1, 0)
    other_batch = other.finish().batch
    assert counts(batch) == (2, 0, 0, 0, 0)
    assert counts(other_batch) == (1, 0, 1, 0, 0)  # job 2 is the replay's, the same
    assert_charged_exactly_what_the_records_cost(system)
    assert used(allocation) == 5 * HOUR


# Reconciliation beside ingests, assignments and itself ----------------------------------------------------------


@pytest.mark.parametrize("stop_at", ["before reading the changes", "after writing the ledger"])
def test_records_an_ingest_commits_during_a_reconciliation_are_charged_by_the_next_run_once(
    system, monkeypatch, gates, stop_at
):
    allocation = funded_allocation(system)
    ingest(system, payload(sacct_line(1)))
    reconcile_system(system=system)
    ingest(system, payload(sacct_line(2, state="RUNNING", end="Unknown", elapsed=HOUR)))  # change 2
    if stop_at == "before reading the changes":  # its cursor and last change number read (1 to 2)
        running = gate(monkeypatch, reconcile_module, "_SqlChanges", thread="reconcile", before=True)
    else:
        running = gate(monkeypatch, ledger, "record_usage_in_bulk", thread="reconcile")
    gates.append(running)
    run = start("reconcile", lambda: reconcile_system(system=system))
    running.wait_reached()
    # Job 2 ends (its record moves to change 3) and job 3 arrives; the ingest does not wait for the run.
    later = payload(sacct_line(2, elapsed=3 * HOUR, end="2026-03-01T13:00:00"), sacct_line(3, gpus=2))
    start("ingest", lambda: ingest(system, later)).finish()
    running.release()

    first = run.finish()
    if stop_at == "before reading the changes":
        assert first is None  # job 2's change 2 is now change 3, beyond this run: the next one charges it
    else:
        assert (first.to_seq, first.charged_seconds) == (2, HOUR)  # job 2 as it was when the run read it
    assert ReconciliationCursor.objects.get(system=system).reconciled_seq == 2
    following = reconcile_system(system=system)
    assert (following.from_seq, following.to_seq) == (2, 3)
    assert_charged_exactly_what_the_records_cost(system)
    assert used(allocation) == HOUR + 3 * HOUR + 2 * HOUR


def test_records_an_ingest_stores_under_way_are_found_by_the_next_run_though_another_system_stored_later_ids(
    system, monkeypatch, gates
):
    """A run finds new records by the id ranges their writes noted: a write still under way notes its own when it
    commits, though another system took later ids and committed first."""
    dawn = SystemFactory(name="Dawn", slug="dawn", cluster_name="dawn")
    allocation = funded_allocation(system)
    funded_allocation(dawn, account="airr-00009", pool_options={"programme": allocation.pool.programme})
    ingest(system, payload(sacct_line(1)))
    reconcile_system(system=system)
    ingest(system, payload(sacct_line(2)))  # change 2, committed, not yet reconciled
    # Stopped once its rows are stored, before it notes their range: Dawn's later id then falls inside it.
    holding = gate(monkeypatch, ingest_module, "_record_rows_postgresql", thread="ingest")
    gates.append(holding)
    under_way = start("ingest", lambda: ingest(system, payload(sacct_line(3, gpus=2))))
    holding.wait_reached()  # job 3 is stored, not committed
    start("dawn", lambda: ingest(dawn, payload(sacct_line(9, account="airr-00009", cluster="dawn")))).finish()
    run = start("reconcile", lambda: reconcile_system(system=system)).finish()
    assert (run.to_seq, run.charged_seconds) == (2, HOUR)
    holding.release()
    under_way.finish()
    job_2, job_3, on_dawn = (JobRecord.objects.get(job_id=job).pk for job in ("2", "3", "9"))
    assert job_2 < job_3 < on_dawn  # Dawn's record took a later id, and committed first

    assert reconcile_system(system=system).charged_seconds == 2 * HOUR
    assert_charged_exactly_what_the_records_cost(system, dawn)
    assert used(allocation) == HOUR + HOUR + 2 * HOUR


def test_two_reconciliations_of_one_system_at_once_charge_each_change_once(system, monkeypatch, gates):
    allocation = funded_allocation(system)
    ingest(system, payload(sacct_line(1), sacct_line(2, gpus=2)))
    charging = gate(monkeypatch, ledger, "record_usage_in_bulk", thread="first")
    gates.append(charging)
    first = start("first", lambda: reconcile_system(system=system))
    charging.wait_reached()
    start("ingest", lambda: ingest(system, payload(sacct_line(3, gpus=4)))).finish()
    second = start("second", lambda: reconcile_system(system=system))  # waits for the system's cursor
    wait_for_lock_waiters()
    charging.release()

    one, two = first.finish(), second.finish()
    assert (one.from_seq, one.to_seq, one.charged_seconds) == (0, 1, 3 * HOUR)
    assert (two.from_seq, two.to_seq, two.records, two.charged_seconds) == (1, 2, 1, 4 * HOUR)
    assert_charged_exactly_what_the_records_cost(system)
    assert used(allocation) == 7 * HOUR


def test_reconciliations_of_two_systems_do_not_wait_for_each_other_with_one_account_name_on_both(
    system, monkeypatch, gates
):
    dawn = SystemFactory(name="Dawn", slug="dawn", cluster_name="dawn")
    on_isambard = funded_allocation(system, account="airr-00042")
    on_dawn = funded_allocation(dawn, account="airr-00042", pool_options={"programme": on_isambard.pool.programme})
    ingest(system, payload(sacct_line(1, account="airr-00042", gpus=2)))
    ingest(dawn, payload(sacct_line(1, account="airr-00042", gpus=3, cluster="dawn")))
    charging = gate(monkeypatch, ledger, "record_usage_in_bulk", thread="isambard")
    gates.append(charging)
    first = start("isambard", lambda: reconcile_system(system=system))
    charging.wait_reached()  # holding its allocation's and its consumed sink's locks
    assert start("dawn", lambda: reconcile_system(system=dawn)).finish().charged_seconds == 3 * HOUR
    charging.release()

    assert first.finish().charged_seconds == 2 * HOUR
    assert_charged_exactly_what_the_records_cost(system, dawn)
    assert (used(on_isambard), used(on_dawn)) == (2 * HOUR, 3 * HOUR)


def test_an_assignment_waits_for_an_ingest_of_the_account_and_claims_its_rows_too(system, monkeypatch, gates):
    allocation = funded_allocation(system)
    ingest(system, payload(sacct_line(1, account="lab-gpu")))
    holding = gate(monkeypatch, ingest_module, "_record_rows", thread="ingest")
    gates.append(holding)
    reading = start("ingest", lambda: ingest(system, payload(sacct_line(2, account="lab-gpu", gpus=2))))
    holding.wait_reached()
    assigning = start(
        "assign",
        lambda: assign_unmatched_account(system=system, account="lab-gpu", allocation=allocation, actor=None),
    )
    wait_for_lock_waiters()
    holding.release()

    assert counts(reading.finish().batch) == (1, 0, 0, 1, 0)
    assert assigning.finish() == 2
    assert not JobRecord.objects.filter(allocation__isnull=True).exists()
    assert_charged_exactly_what_the_records_cost(system)
    assert used(allocation) == 3 * HOUR


def test_an_ingest_waits_for_an_assignment_of_its_account_and_matches_its_rows(system, monkeypatch, gates):
    allocation = funded_allocation(system)
    ingest(system, payload(sacct_line(1, account="lab-gpu")))
    holding = gate(monkeypatch, services_module, "next_change_seq", thread="assign")
    gates.append(holding)
    assigning = start(
        "assign",
        lambda: assign_unmatched_account(system=system, account="lab-gpu", allocation=allocation, actor=None),
    )
    holding.wait_reached()  # the system's change lock taken, the account not yet assigned
    reading = start("ingest", lambda: ingest(system, payload(sacct_line(2, account="lab-gpu", gpus=2))))
    wait_for_lock_waiters()
    holding.release()

    assert assigning.finish() == 1
    assert counts(reading.finish().batch) == (1, 0, 0, 0, 0)  # matched through the new alias
    assert_charged_exactly_what_the_records_cost(system)
    assert used(allocation) == 3 * HOUR


def test_a_new_allocation_takes_the_usage_a_post_under_way_could_not_match_to_it(system, monkeypatch, gates):
    """A post read before the award committed cannot see the allocation, and holds its runs: the claim waits for
    it, then takes them, though nothing was held when the claim began."""
    holding = gate(monkeypatch, ingest_module, "_record_rows", thread="ingest")
    gates.append(holding)
    reading = start("ingest", lambda: ingest(system, payload(sacct_line(1, account="airr-00007", gpus=2))))
    holding.wait_reached()  # its rows recorded as held, the system's change lock still held
    allocation = funded_allocation(system, account="airr-00007")
    claiming = start("claim", lambda: claim_held_usage(allocation))
    wait_for_lock_waiters()
    holding.release()

    assert counts(reading.finish().batch) == (1, 0, 0, 1, 0)
    assert claiming.finish() == 1
    assert not JobRecord.objects.filter(allocation__isnull=True).exists()
    assert_charged_exactly_what_the_records_cost(system)
    assert used(allocation) == 2 * HOUR


def test_usage_assigned_during_a_reconciliation_is_charged_by_the_next_run_once(system, monkeypatch, gates):
    allocation = funded_allocation(system)
    ingest(system, payload(sacct_line(1), sacct_line(2, account="lab-gpu", gpus=2)))
    running = gate(monkeypatch, reconcile_module, "_SqlChanges", thread="reconcile", before=True)
    gates.append(running)
    run = start("reconcile", lambda: reconcile_system(system=system))
    running.wait_reached()  # it reconciles changes up to 1
    assigned = start(
        "assign",
        lambda: assign_unmatched_account(system=system, account="lab-gpu", allocation=allocation, actor=None),
    )
    # The assignment commits without waiting for the run; the reconciliation it queues (run here, in its
    # thread) waits for the run's cursor.
    wait_for_lock_waiters()
    assert JobRecord.objects.get(job_id_raw="2").allocation_id == allocation.pk
    running.release()

    assert run.finish().charged_seconds == HOUR  # job 2 moved to change 2, beyond this run
    assert assigned.finish() == 1
    assert used(allocation) == 3 * HOUR  # charged by the assignment's own reconciliation, after the run
    assert reconcile_system(system=system) is None
    assert_charged_exactly_what_the_records_cost(system)


def test_a_replay_that_gets_the_lock_after_a_newer_batch_does_not_put_back_the_older_report_of_a_run(
    system, monkeypatch, gates
):
    allocation = funded_allocation(system)
    # Batch 1 saw job 2 running an hour; its row was rejected (a setting since fixed).
    batch = ingest(
        system, payload(sacct_line(1), sacct_line(2, state="RUNNING", end="Unknown", start="2026-03-01 10:00"))
    ).batch
    RejectedRow.objects.filter(batch=batch).update(raw=sacct_line(2, state="RUNNING", end="Unknown"))
    # Batch 2, received later, reports job 2 ended after three hours; it holds the lock as the replay starts.
    holding = gate(monkeypatch, ingest_module, "_record_rows", thread="newer")
    gates.append(holding)
    newer = start("newer", lambda: ingest(system, payload(sacct_line(2, elapsed=3 * HOUR, end="2026-03-01T13:00:00"))))
    holding.wait_reached()
    replay = start("replay", lambda: replay_rejected_rows(batch=batch, actor=None))
    wait_for_lock_waiters()
    holding.release()
    newer.finish()
    replay.finish()

    record = JobRecord.objects.get(job_id_raw="2")
    assert (record.state, record.gpu_seconds) == ("COMPLETED", 3 * HOUR), "the older report overwrote the newer"
    assert_charged_exactly_what_the_records_cost(system)
    assert used(allocation) == 4 * HOUR


def test_a_reconciliation_an_expiry_and_a_threshold_check_on_one_allocation_at_once_end_without_deadlock(
    system, monkeypatch, gates
):
    allocation = funded_allocation(system, hours=100)
    pool_before = ledger.pool_account(allocation.pool).balance
    ingest(system, payload(sacct_line(1, gpus=1, elapsed=100 * HOUR)))
    reconcile_system(system=system)  # at 100 %, not yet checked
    ingest(system, payload(sacct_line(2, gpus=1, elapsed=HOUR)))
    charging = gate(monkeypatch, ledger, "record_usage_in_bulk", thread="reconcile")
    gates.append(charging)
    run = start("reconcile", lambda: reconcile_system(system=system))
    charging.wait_reached()  # holding the allocation account's lock, then the consumed sink's
    expiry = start("expire", lambda: expire_ended_allocations(today=date(2099, 1, 1)))  # pool, then allocation
    check = start("check", lambda: check_thresholds(system=system))  # exhausts it: the allocation account
    wait_for_lock_waiters(2)
    charging.release()

    assert run.finish().charged_seconds == HOUR
    assert expiry.finish() == 1
    check.finish()
    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXPIRED
    assert ledger.allocation_account(allocation).balance == -HOUR  # the overrun stays in sight
    assert ledger.pool_account(allocation.pool).balance == pool_before  # nothing was left to return
    assert_charged_exactly_what_the_records_cost(system)


# A team's scheduler usernames ----------------------------------------------------------------------------------


def test_two_saves_of_a_teams_usernames_at_once_leave_the_second_ones_not_a_clash(system, bob, monkeypatch, gates):
    """The PI and an admin save the usernames page together: the second waits for the first, then replaces its
    names, instead of inserting beside them and failing on the name the first gave."""
    allocation = funded_allocation(system)
    first_wrote = gate(monkeypatch, MemberSchedulerUser.objects, "bulk_create", thread="first")
    gates.append(first_wrote)

    first = start("first", lambda: set_member_usernames(allocation=allocation, usernames={bob.pk: ["bob.proj"]}))
    first_wrote.wait_reached()
    second = start(
        "second", lambda: set_member_usernames(allocation=allocation, usernames={bob.pk: ["bob.proj", "bob-old"]})
    )
    wait_for_lock_waiters()
    first_wrote.release()

    first.finish()
    second.finish()
    assert sorted(MemberSchedulerUser.objects.values_list("username", flat=True)) == ["bob-old", "bob.proj"]
