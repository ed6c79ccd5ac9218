"""Migrations that move data: what they keep."""

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from airr_portal.models import OutgoingEmail
from allocations import ledger
from allocations.models import JobCharge, ThresholdNotice
from allocations.usage.ingest import ingest_sacct
from allocations.usage.reconcile import reconcile_system
from tests.allocations.usage_helpers import HOUR, funded_allocation, payload, sacct_line


def migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([target])


def migrate_to_latest() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.fixture(autouse=True)
def latest_schema_after():
    """Put every migration back after the test, so that the tests after it find the tables they expect."""
    yield
    migrate_to_latest()


@pytest.mark.django_db(transaction=True)
def test_the_emails_of_a_notice_never_handed_over_are_written_when_its_hand_over_mark_goes(system, alice):
    """Before 0012 a notice recorded while the broker was down waited, unmarked (`queued_at` empty), for the beat
    to hand its emails over. 0012 drops that mark: the emails of such a notice must go to the outbox."""
    allocation = funded_allocation(system, hours=10, holder=alice)
    ThresholdNotice.objects.create(allocation=allocation, percent=50, used_seconds=5 * HOUR)

    migrate(("allocations", "0011_threshold_notice_queued_at"))  # the notice is back as it was: unmarked
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM allocations_thresholdnotice WHERE queued_at IS NULL")
        assert cursor.fetchone()[0] == 1
    migrate(("allocations", "0012_threshold_notice_emails_in_outbox"))

    [email] = OutgoingEmail.objects.all()
    assert (email.to, email.subject) == (
        alice.email,
        "[AIRR Portal] airr-00001 on Isambard-AI has used 50% of its GPU-hours",
    )
    assert "5 of its 10 GPU-hours (50%)" in email.body


def _charges() -> list[tuple[int, int, int, int]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT job_record_id, run_id, transaction_id, seconds FROM allocations_jobcharge "
            "ORDER BY job_record_id, run_id"
        )
        return cursor.fetchall()


@pytest.mark.django_db(transaction=True)
def test_job_charges_keep_every_row_when_their_key_becomes_record_and_run_and_back(system):
    """0014 replaces the charges' serial id with the key (record, run), copying the table on SQLite."""
    funded_allocation(system, hours=10)
    ingest_sacct(system=system, payload=payload(sacct_line(1, gpus=2, elapsed=600), sacct_line(2)), source="command")
    reconcile_system(system=system)
    ingest_sacct(system=system, payload=payload(sacct_line(1, gpus=2, elapsed=300)), source="command")
    reconcile_system(system=system)
    charges = _charges()
    assert [seconds for *_, seconds in charges] == [1200, -600, 3600]

    migrate(("allocations", "0013_member_scheduler_user"))
    assert _charges() == charges
    migrate(("allocations", "0014_job_charge_key_is_record_and_run"))
    assert _charges() == charges

    # The key holds: a run charges a record once.
    record, run, movement, _ = charges[0]
    with pytest.raises(IntegrityError), transaction.atomic():
        JobCharge.objects.create(job_record_id=record, run_id=run, transaction_id=movement, seconds=1)


@pytest.mark.django_db(transaction=True)
def test_records_not_yet_reconciled_when_the_change_index_holds_only_revisions_are_charged_by_the_next_run(system):
    """0017: reconciliation finds new records by their id and changed ones by a change index that holds only
    them. The records stored or changed before it and not yet reconciled must still be found."""
    allocation = funded_allocation(system, hours=10)
    ingest_sacct(system=system, payload=payload(sacct_line(1, gpus=2, elapsed=600), sacct_line(2)), source="command")
    reconcile_system(system=system)
    # Not reconciled before the migration: job 1 reported longer, in place, and job 3 stored.
    ingest_sacct(
        system=system, payload=payload(sacct_line(1, gpus=2, elapsed=900), sacct_line(3, gpus=4)), source="command"
    )

    migrate(("allocations", "0016_ingest_batch_unread_index"))
    migrate(("allocations", "0017_job_records_found_by_id_or_revision"))
    migrate_to_latest()  # the columns later migrations add, which today's reconciliation reads

    run = reconcile_system(system=system)
    assert (run.records, run.charged_seconds) == (2, 600 + 4 * HOUR)
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 1800 + HOUR + 4 * HOUR
    assert reconcile_system(system=system) is None
