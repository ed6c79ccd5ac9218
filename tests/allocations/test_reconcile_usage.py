"""Reconciliation: each GPU-second charged once, whatever order and however often the records arrive."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from allocations import ledger
from allocations.models import (
    JobCharge,
    JobRecord,
    JobRecordIdRange,
    LedgerAccount,
    LedgerTransaction,
    ReconciliationCursor,
    ReconciliationRun,
    UsageSequence,
)
from allocations.usage.ingest import ingest_sacct
from allocations.usage.limits import account_limits
from allocations.usage.reconcile import reconcile_system
from allocations.usage.services import assign_unmatched_account
from tests.allocations.usage_helpers import HOUR, funded_allocation, given_back_twice, payload, sacct_line
from tests.factories import SystemFactory
from tests.postgres import requires_postgres

pytestmark = pytest.mark.django_db


def ingest(system, data):
    return ingest_sacct(system=system, payload=data, source="command")


def used(allocation) -> int:
    return ledger.net_usage(ledger.allocation_account(allocation))


def test_it_charges_each_allocation_the_gpu_seconds_of_its_jobs(system):
    first = funded_allocation(system, account="airr-00001")
    second = funded_allocation(system, account="airr-00002")
    ingest(
        system,
        payload(
            sacct_line(1, account="airr-00001", gpus=4, elapsed=HOUR),
            sacct_line(2, account="airr-00001", gpus=1, elapsed=60),
            sacct_line(3, account="airr-00002", gpus=2, elapsed=30),
        ),
    )

    run = reconcile_system(system=system)

    assert (used(first), used(second)) == (4 * HOUR + 60, 60)
    assert ledger.allocation_account(first).balance == 100 * HOUR - (4 * HOUR + 60)
    assert (run.records, run.allocations, run.charged_seconds) == (3, 2, 4 * HOUR + 120)
    txn = LedgerTransaction.objects.get(idempotency_key=f"usage-charge:{run.pk}:{first.pk}")
    assert sorted(txn.job_charges.values_list("job_record__job_id", "seconds")) == [
        ("1", 4 * HOUR),
        ("2", 60),
    ]
    assert (txn.cause_type, txn.cause_id) == ("reconciliation_run", str(run.pk))


def test_running_twice_charges_nothing_the_second_time(system):
    allocation = funded_allocation(system)
    ingest(system, payload(sacct_line(1)))
    reconcile_system(system=system)

    assert reconcile_system(system=system) is None
    assert used(allocation) == HOUR
    assert LedgerTransaction.objects.filter(type="charge").count() == 1


def test_the_same_payload_posted_twice_charges_once(system):
    allocation = funded_allocation(system)
    data = payload(sacct_line(1), sacct_line(2))
    ingest(system, data)
    reconcile_system(system=system)
    ingest(system, data)
    reconcile_system(system=system)

    assert used(allocation) == 2 * HOUR


def test_overlapping_windows_charge_the_jobs_they_share_once(system):
    allocation = funded_allocation(system)
    ingest(system, payload(sacct_line(1), sacct_line(2)))
    reconcile_system(system=system)
    ingest(system, payload(sacct_line(2), sacct_line(3)))
    reconcile_system(system=system)

    assert used(allocation) == 3 * HOUR
    assert JobCharge.objects.count() == 3


def test_a_running_job_is_charged_provisionally_then_by_the_difference_when_it_ends(system):
    allocation = funded_allocation(system)
    ingest(system, payload(sacct_line(1, state="RUNNING", end="Unknown", elapsed=600, gpus=2)))
    reconcile_system(system=system)
    assert used(allocation) == 1200

    ingest(system, payload(sacct_line(1, state="COMPLETED", elapsed=900, gpus=2)))
    reconcile_system(system=system)

    assert used(allocation) == 1800
    assert sorted(JobCharge.objects.values_list("seconds", flat=True)) == [600, 1200]
    assert JobRecord.objects.with_charged_seconds().get().charged_seconds == 1800


def test_a_job_reported_shorter_is_refunded_the_difference(system):
    allocation = funded_allocation(system)
    ingest(system, payload(sacct_line(1, elapsed=1000)))
    reconcile_system(system=system)
    ingest(system, payload(sacct_line(1, elapsed=400)))
    run = reconcile_system(system=system)

    assert used(allocation) == 400
    refund = LedgerTransaction.objects.get(idempotency_key=f"usage-refund:{run.pk}:{allocation.pk}")
    assert refund.type == "refund"
    assert list(refund.job_charges.values_list("seconds", flat=True)) == [-600]


def test_a_job_refunded_by_hand_then_reported_shorter_is_refunded_again_and_the_system_keeps_reconciling(system):
    # An admin gave a job's 10 hours back by hand (ledger.refund_usage, from the shell); the cluster then reported
    # the job at 5 hours. The run's refund (5 hours) is more than the allocation's net usage (0): it used to be
    # refused, rolling the whole run back, and every later run of the system with it.
    other = funded_allocation(system, account="airr-00002")

    allocation, run = _given_back_twice(system, sacct_line(2, account="airr-00002", gpus=2))

    # The run's refund is the job's own difference, whatever was given back by hand: the jobs now cost 5 hours,
    # the hand refund gave back 10, and the net usage below zero shows the overlap for an admin to correct.
    assert (used(allocation), used(other)) == (-5 * HOUR, 2 * HOUR)
    refund = LedgerTransaction.objects.get(idempotency_key=f"usage-refund:{run.pk}:{allocation.pk}")
    assert list(refund.job_charges.values_list("seconds", flat=True)) == [-5 * HOUR]
    for record in JobRecord.objects.with_charged_seconds():
        assert record.charged_seconds == record.gpu_seconds
    for account in LedgerAccount.objects.all():
        assert account.balance == sum(account.entries.values_list("amount", flat=True))
    assert (
        ReconciliationCursor.objects.get(system=system).reconciled_seq
        == UsageSequence.objects.get(system=system).last_seq
    )

    ingest(system, payload(sacct_line(3, gpus=3)))
    reconcile_system(system=system)

    assert used(allocation) == -2 * HOUR


def _given_back_twice(system, *also: str):
    """An allocation of 100 hours whose job's 10 hours were given back by hand, then reported at 5 hours (with the
    lines `also`, in the same payload): its net usage is 5 hours below zero. Returns it and the run that refunded."""
    allocation, run = given_back_twice(system, *also)
    assert used(allocation) == -5 * HOUR
    return allocation, run


def test_an_allocation_whose_usage_is_below_zero_returns_no_more_than_it_was_committed_when_it_ends(system):
    # The 5 hours given back twice were never the pool's: they stay on the allocation, in plain sight, for an admin
    # to charge back, as an overrun does. Returning them would give the pool hours no deposit made.
    allocation, _ = _given_back_twice(system)
    pool = ledger.pool_account(allocation.pool)
    before = pool.balance

    ledger.expire_allocation(allocation=allocation, idempotency_key="expire-1")

    pool.refresh_from_db()
    assert pool.balance - before == 100 * HOUR
    assert pool.balance == 1000 * HOUR
    assert ledger.allocation_account(allocation).balance == 5 * HOUR


def test_unmatched_usage_is_held_then_charged_when_an_admin_assigns_the_account(system, alice):
    allocation = funded_allocation(system, account="airr-00001")
    ingest(system, payload(sacct_line(1, account="old-name", gpus=3)))
    reconcile_system(system=system)
    assert used(allocation) == 0

    moved = assign_unmatched_account(system=system, account="old-name", allocation=allocation, actor=alice)

    assert moved == 1
    # The assignment enqueues reconciliation after commit; running it here shows the held usage is charged.
    reconcile_system(system=system)
    assert used(allocation) == 3 * HOUR


def test_usage_outside_the_window_is_charged_and_stays_flagged(system):
    allocation = funded_allocation(system)
    late = allocation.end_date.replace(year=allocation.end_date.year + 1)
    ingest(system, payload(sacct_line(1, start=f"{late}T10:00:00", end=f"{late}T11:00:00")))
    reconcile_system(system=system)

    assert used(allocation) == HOUR
    assert JobRecord.objects.get().is_outside_window


def test_a_run_records_the_cursor_so_the_next_run_reads_only_new_records(system):
    funded_allocation(system)
    ingest(system, payload(sacct_line(1)))
    first = reconcile_system(system=system)
    ingest(system, payload(sacct_line(2)))
    second = reconcile_system(system=system)

    assert second.from_seq == first.to_seq
    assert second.records == 1
    assert ReconciliationRun.objects.count() == 2


def test_a_run_with_nothing_new_reads_no_job_record(system):
    funded_allocation(system)
    ingest(system, payload(*(sacct_line(n) for n in range(1, 50))))
    reconcile_system(system=system)

    with CaptureQueriesContext(connection) as queries:
        assert reconcile_system(system=system) is None

    assert not [query["sql"] for query in queries if JobRecord._meta.db_table in query["sql"]]


def _job_record_reads() -> tuple[int, int]:
    """(sequential scans, rows fetched by index) of the job records so far in this transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq_scan, idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relid = %s::regclass",
            [JobRecord._meta.db_table],
        )
        return cursor.fetchone()


@requires_postgres
@pytest.mark.parametrize("quiet", [False, True], ids=["new and revised", "revised only"])
def test_a_run_reads_by_index_only_the_records_stored_or_revised_since_the_last_never_the_history(system, quiet):
    """New records are found by the id ranges their writes noted and records changed in place by the change
    index, which holds only them: 30,000 records of the system reconciled before, and 30,000 another system
    stored since, cost the run nothing, however many the other system stores while this one is quiet."""
    allocation = funded_allocation(system, hours=1000)
    dawn = SystemFactory(name="Dawn", slug="dawn", cluster_name="dawn")
    funded_allocation(dawn, account="airr-00009", hours=1000, pool_options={"programme": allocation.pool.programme})
    ingest(system, payload(*(sacct_line(n, elapsed=60) for n in range(1, 30_001))))
    reconcile_system(system=system)
    lines = (sacct_line(n, elapsed=60, account="airr-00009", cluster="dawn") for n in range(1, 30_001))
    ingest(dawn, payload(*lines))
    reconcile_system(system=dawn)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {JobRecord._meta.db_table}")
    # Job 5 reported longer (changed in place), and, unless quiet, a new job.
    ingest(system, payload(sacct_line(5, elapsed=600), *([] if quiet else [sacct_line(40_000, gpus=2)])))

    scans, fetched = _job_record_reads()
    run = reconcile_system(system=system)
    after_scans, after_fetched = _job_record_reads()

    new = 0 if quiet else 2 * HOUR
    assert (run.records, run.charged_seconds) == (1 if quiet else 2, 540 + new)
    assert used(allocation) == 30_000 * 60 + 540 + new
    assert after_scans == scans  # no sequential scan
    assert after_fetched - fetched <= 10


@requires_postgres
def test_a_run_over_many_writes_reads_each_writes_records_by_index(system):
    """Each write's id range is read through the primary key, however many writes a run covers (a backfill of
    many files, runs failing meanwhile), with the ranges' statistics up to date."""
    allocation = funded_allocation(system, hours=1000)
    ingest(system, payload(*(sacct_line(n, elapsed=60) for n in range(1, 30_001))))
    reconcile_system(system=system)
    for n in range(40_000, 40_020):
        ingest(system, payload(sacct_line(n, elapsed=60)))
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {JobRecord._meta.db_table}")
        cursor.execute(f"ANALYZE {JobRecordIdRange._meta.db_table}")

    scans, fetched = _job_record_reads()
    run = reconcile_system(system=system)
    after_scans, after_fetched = _job_record_reads()

    assert (run.records, run.charged_seconds) == (20, 20 * 60)
    assert used(allocation) == 30_020 * 60
    assert after_scans == scans  # no sequential scan
    assert after_fetched - fetched <= 40
    assert not JobRecordIdRange.objects.exists()  # read, and so forgotten


def test_change_numbers_that_charged_nothing_move_the_cursor_past_them(system):
    allocation = funded_allocation(system)
    ingest(system, payload(sacct_line(1)))
    reconcile_system(system=system)
    # The same run in another payload, and a run of an account no allocation owns: numbers taken, nothing to charge.
    ingest(system, payload(sacct_line(1), sacct_line(2, account="nobody")))

    assert reconcile_system(system=system) is None
    assert (
        ReconciliationCursor.objects.get(system=system).reconciled_seq
        == UsageSequence.objects.get(system=system).last_seq
    )
    ingest(system, payload(sacct_line(3)))
    run = reconcile_system(system=system)

    assert run.records == 1
    assert used(allocation) == 2 * HOUR


def test_bulk_usage_writes_one_balanced_transaction_per_movement_and_keeps_balances_true(system):
    first, second = (
        funded_allocation(system, account="airr-00001"),
        funded_allocation(system, account="airr-00002"),
    )
    movements = [(first, 600, "Jobs", "bulk-1"), (second, 1200, "Jobs", "bulk-2")]

    ledger.record_usage_in_bulk(system=system, movements=movements, cause=("test", "1"))
    again = ledger.record_usage_in_bulk(system=system, movements=movements, cause=("test", "1"))

    assert LedgerTransaction.objects.filter(type="charge").count() == 2
    assert set(again) == {"bulk-1", "bulk-2"}
    for txn in LedgerTransaction.objects.filter(type="charge"):
        assert sum(txn.entries.values_list("amount", flat=True)) == 0
    for account in LedgerAccount.objects.all():
        assert account.balance == sum(account.entries.values_list("amount", flat=True))
    assert (used(first), used(second)) == (600, 1200)


def test_bulk_usage_records_a_refund_beyond_the_net_usage_and_a_refund_by_hand_is_then_refused(system):
    # Its caller bounds a bulk refund by the job charges it reverses; a refund by hand stays bounded by net usage.
    allocation = funded_allocation(system)
    ledger.record_usage_in_bulk(system=system, movements=[(allocation, 600, "Jobs", "b-1")], cause=("t", "1"))
    ledger.refund_usage(allocation=allocation, seconds=600, actor=None, reason="A credit", idempotency_key="r-1")

    ledger.record_usage_in_bulk(system=system, movements=[(allocation, -200, "Jobs", "b-2")], cause=("t", "2"))

    assert used(allocation) == -200
    assert ledger.allocation_account(allocation).balance == 100 * HOUR + 200
    with pytest.raises(ledger.InvalidAmount) as refused:
        ledger.refund_usage(allocation=allocation, seconds=1, actor=None, reason="A credit", idempotency_key="r-2")
    assert refused.value.message == (
        "Nothing charged to this allocation is left to give back: its usage, net of refunds and adjustments, "
        "is \u22120.06 GPU-hours"
    )


def test_every_usage_entry_is_the_sum_of_its_job_charges_and_each_points_at_real_rows(system):
    # JobCharge's references are kept by construction, not by database constraints: check them here.
    first, second = (
        funded_allocation(system, account="airr-00001"),
        funded_allocation(system, account="airr-00002"),
    )
    ingest(system, payload(sacct_line(1, elapsed=900), sacct_line(2, account="airr-00002", gpus=3)))
    reconcile_system(system=system)
    ingest(system, payload(sacct_line(1, elapsed=300), sacct_line(3, account="airr-00002")))
    reconcile_system(system=system)

    for txn in LedgerTransaction.objects.filter(type__in=["charge", "refund"]):
        on_allocation = txn.entries.get(account__kind="allocation").amount
        assert -on_allocation == sum(txn.job_charges.values_list("seconds", flat=True))
    for charge in JobCharge.objects.select_related("run", "transaction", "job_record"):
        assert charge.transaction.cause_id == str(charge.run.pk)
        assert charge.job_record.allocation_id in (first.pk, second.pk)
    assert (used(first), used(second)) == (300, 4 * HOUR)


def test_after_the_charge_factor_changes_a_run_reported_again_is_repriced_by_the_difference_and_others_keep_theirs(
    system,
):
    allocation = funded_allocation(system)
    ingest(system, payload(sacct_line(1, gpus=1), sacct_line(2, gpus=1)))
    reconcile_system(system=system)
    system.charge_factor = "1.5"
    system.save()

    ingest(system, payload(sacct_line(2, gpus=1)))  # the next day's window holds job 2 only
    reconcile_system(system=system)

    assert dict(JobRecord.objects.values_list("job_id", "gpu_seconds")) == {"1": HOUR, "2": HOUR * 3 // 2}
    assert used(allocation) == HOUR + HOUR * 3 // 2


def test_the_remaining_limit_of_an_allocation_whose_usage_is_below_zero_is_never_above_its_award_and_grace(system):
    # Hours given back twice are for an admin to charge back, not more time on the cluster: what remains to run
    # is at most the award plus grace, as for an allocation that used nothing.
    allocation, _ = _given_back_twice(system)

    [limit] = account_limits(system=system)

    assert limit["used_gpu_seconds"] == -5 * HOUR
    # What remains to run, as the allocation's page says: the account holds 105 hours, 5 of them given back twice.
    assert limit["remaining_gpu_seconds"] == 100 * HOUR
    assert (
        limit["remaining_gpu_minutes_limit"]
        == limit["gpu_minutes_limit"]
        == 100 * 60 * (100 + allocation.pool.grace_percent) // 100
    )


def test_job_charges_in_their_default_order_are_read_in_key_order_without_joining_their_records_and_runs():
    # Ordered by the foreign keys themselves, Django would sort by the job record's and run's own orderings, joining
    # both tables to read any list of charges.
    query = str(JobCharge.objects.filter(run_id=1).query)

    assert "JOIN" not in query
    assert query.endswith('ORDER BY "allocations_jobcharge"."job_record_id" ASC, "allocations_jobcharge"."run_id" ASC')
