"""Migrations that move data: what they keep."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from airr_portal.models import OutgoingEmail
from allocations.models import ThresholdNotice
from tests.allocations.usage_helpers import HOUR, funded_allocation


def migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([target])


@pytest.fixture(autouse=True)
def latest_schema_after():
    """Put every migration back after the test, so that the tests after it find the tables they expect."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


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
