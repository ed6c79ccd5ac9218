"""The usage pages: tokens shown once, uploads, batches and replays, unmatched usage, a PI's usage page."""

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from airr_portal.services import hash_key
from allocations import ledger
from allocations.models import (
    Allocation,
    IngestBatch,
    IngestToken,
    JobCharge,
    JobRecord,
    MemberSchedulerUser,
    ReconciliationCursor,
    RejectedRow,
    ThresholdNotice,
)
from allocations.selectors import account_statement, start_of_day
from allocations.tasks import reconcile_system_task
from allocations.usage.ingest import IngestError, batch_summary, ingest_sacct, receive_payload
from allocations.usage.reconcile import reconcile_system
from allocations.usage.services import UsageError, create_ingest_token, mark_batch_dealt_with
from programmes.models import ProposalMember
from tests.allocations.usage_helpers import HOUR, funded_allocation, given_back_twice, payload, sacct_line
from tests.factories import AllocationFactory, CallFactory, FundPoolFactory, SystemFactory, make_proposal

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(make_persona, client):
    user = make_persona("admin")
    client.force_login(user)
    return user


def test_a_token_is_shown_once_and_only_its_hash_is_kept(client, admin, system):
    response = client.post(reverse("usage:token-create"), {"system": system.pk, "name": "cron on login1"})

    assert response.status_code == 200
    key = response.context["key"]
    token = IngestToken.objects.get()
    assert token.key_hash == hash_key(key) and key not in token.key_hash
    assert key in response.content.decode()
    assert key not in client.get(reverse("usage:token-list")).content.decode()


def test_the_page_that_shows_a_new_key_is_never_stored_by_a_browser_or_a_proxy(client, admin, system):
    response = client.post(reverse("usage:token-create"), {"system": system.pk, "name": "cron on login1"})

    assert "no-store" in response["Cache-Control"]


def test_a_token_is_revoked_only_after_a_page_that_asks_to_confirm(client, admin, system):
    token, key = create_ingest_token(system=system, name="cron on login1", actor=admin)
    revoke = reverse("usage:token-revoke", args=[token.pk])
    listing = client.get(reverse("usage:token-list")).content.decode()
    assert f'href="{revoke}"' in listing and f'action="{revoke}"' not in listing

    page = client.get(revoke)

    assert page.status_code == 200
    text = page.content.decode()
    assert "Are you sure you want to revoke" in text and "cron on login1" in text and "Isambard-AI" in text
    token.refresh_from_db()
    assert not token.is_revoked

    response = client.post(revoke)

    assert response.status_code == 302
    token.refresh_from_db()
    assert token.is_revoked
    assert client.get(revoke).status_code == 302  # nothing to confirm any more: back to the list


def test_the_token_list_is_paged_with_the_active_tokens_first_and_each_group_newest_first(client, admin, system):
    """A system rotating its token daily has thousands revoked: the one in use is still on the first page."""
    from allocations.usage.views import PAGE_SIZE

    in_use, _ = create_ingest_token(system=system, name="In use", actor=admin)
    for n in range(PAGE_SIZE):
        create_ingest_token(system=system, name=f"Old {n}", actor=admin)
    IngestToken.objects.exclude(pk=in_use.pk).update(revoked_at=timezone.now())
    # The token in use was made first, long ago; the revoked ones after it, a minute apart.
    made = timezone.now() - timedelta(days=365)
    IngestToken.objects.filter(pk=in_use.pk).update(created_at=made)
    for n in range(PAGE_SIZE):
        IngestToken.objects.filter(name=f"Old {n}").update(created_at=made + timedelta(minutes=n + 1))

    first = client.get(reverse("usage:token-list"))
    second = client.get(reverse("usage:token-list"), {"page": 2})

    names = [token.name for token in first.context["page"].object_list]
    assert len(names) == PAGE_SIZE
    assert names[:3] == ["In use", f"Old {PAGE_SIZE - 1}", f"Old {PAGE_SIZE - 2}"]
    assert [token.name for token in second.context["page"].object_list] == ["Old 0"]
    assert "1 active token, listed first" in first.content.decode()
    assert 'href="?page=2"' in first.content.decode()
    assert "Page 2 of 2" in second.content.decode()


def test_a_token_without_a_name_is_refused_with_an_error_summary(client, admin, system):
    response = client.post(reverse("usage:token-create"), {"system": system.pk, "name": ""})

    assert response.status_code == 200
    assert "govuk-error-summary" in response.content.decode()
    assert "Enter a name for the token, such as where it will be used" in response.content.decode()
    assert not IngestToken.objects.exists()


def test_an_operator_uploads_a_file_and_its_rows_are_read_and_charged(
    client, admin, system, django_capture_on_commit_callbacks
):
    allocation = funded_allocation(system)
    upload = SimpleUploadedFile("jobs.txt", payload(sacct_line(1, gpus=2)), content_type="text/plain")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("usage:upload"), {"system": system.pk, "file": upload})

    batch = IngestBatch.objects.get()
    assert response.status_code == 302 and response.url == reverse("usage:batch-detail", args=[batch.pk])
    batch.refresh_from_db()
    assert (batch.status, batch.new, batch.source) == ("ingested", 1, "upload")
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 2 * HOUR


def test_uploading_again_a_file_whose_reading_was_lost_has_it_read(
    client, admin, system, django_capture_on_commit_callbacks
):
    from allocations.usage.ingest import receive_payload

    allocation = funded_allocation(system)
    data = payload(sacct_line(1, gpus=2))
    waiting = receive_payload(system=system, payload=data, source="upload").batch  # its task never reached a worker
    upload = SimpleUploadedFile("jobs.txt", data, content_type="text/plain")

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("usage:upload"), {"system": system.pk, "file": upload}, follow=True)

    assert "its rows are being read" in response.content.decode()
    waiting.refresh_from_db()
    assert (waiting.status, waiting.new) == ("ingested", 1)
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 2 * HOUR


def test_rejected_rows_are_replayed_after_the_system_settings_are_fixed(
    client, admin, system, django_capture_on_commit_callbacks
):
    allocation = funded_allocation(system)
    # Replay reads the kept text again with the system's current settings and the current reader; editing the
    # kept text below stands in for whatever fix made the row readable.
    data = payload(sacct_line(1), sacct_line(2, start="2026-03-01 10:00"))
    batch = ingest_sacct(system=system, payload=data, source="command").batch
    assert batch.rejected == 1
    RejectedRow.objects.filter(batch=batch).update(raw=sacct_line(2))  # stands in for a settings fix

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("usage:batch-replay", args=[batch.pk]))

    assert response.status_code == 302
    row = RejectedRow.objects.get()
    assert row.replayed_at is not None and row.replay_outcome == "Recorded"
    assert JobRecord.objects.count() == 2
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 2 * HOUR
    page = client.get(reverse("usage:batch-detail", args=[batch.pk])).content.decode()
    assert "Recorded" in page
    # The batch counts the row it now holds, and lists no row as rejected any more.
    batch.refresh_from_db()
    assert (batch.new, batch.unmatched, batch.rejected) == (2, 0, 0)
    assert batch_summary(batch)["rejected_rows"] == []


def test_a_row_still_unreadable_on_replay_keeps_its_place_with_the_new_reason(client, admin, system):
    batch = ingest_sacct(system=system, payload=payload(sacct_line(1), "broken"), source="command").batch
    RejectedRow.objects.filter(batch=batch).update(reason="a reason from an older reader")

    client.post(reverse("usage:batch-replay", args=[batch.pk]))

    row = RejectedRow.objects.get()
    assert row.replayed_at is None and row.replay_outcome.startswith("Still rejected")
    assert row.reason == "expected 12 fields, found 1: the line may be truncated"
    batch.refresh_from_db()
    assert batch.rejected == 1


@pytest.mark.parametrize(
    "line",
    [
        sacct_line(2, name="n" * (2 * 1024 * 1024)).encode(),  # kept only in part: its first thousand characters
        sacct_line(2).encode() + b"\xff",  # not UTF-8
        sacct_line(2, name="a\x00b").encode(),  # a NUL character
    ],
    ids=["over 1 MB", "not UTF-8", "NUL"],
)
def test_a_row_whose_kept_text_is_not_the_line_received_stays_rejected_on_replay(client, admin, system, line):
    funded_allocation(system)
    batch = ingest_sacct(system=system, payload=payload(sacct_line(1)) + line + b"\n", source="command").batch
    assert batch.rejected == 1
    reason = RejectedRow.objects.get().reason

    response = client.post(reverse("usage:batch-replay", args=[batch.pk]), follow=True)

    # Its kept text has the bad bytes replaced, or is only the beginning of the line: read again, it would be
    # recorded (and charged) as a line the cluster never sent.
    assert "0 rows recorded; 1 still rejected" in response.content.decode()
    row = RejectedRow.objects.get()
    assert row.replayed_at is None and row.replay_outcome.startswith("Still rejected") and row.reason == reason
    assert JobRecord.objects.count() == 1
    batch.refresh_from_db()
    assert (batch.new, batch.rejected) == (1, 1)


def test_a_payload_opening_with_a_blank_line_replays_with_its_header(client, admin, system):
    data = b"\n" + payload(sacct_line(1), sacct_line(2, start="2026-03-01 10:00"))
    batch = ingest_sacct(system=system, payload=data, source="command").batch
    RejectedRow.objects.filter(batch=batch).update(raw=sacct_line(2))  # stands in for a settings fix

    client.post(reverse("usage:batch-replay", args=[batch.pk]))

    assert RejectedRow.objects.get().replay_outcome == "Recorded"
    assert JobRecord.objects.count() == 2


def test_an_admin_assigns_an_unmatched_account_and_its_usage_is_charged(
    client, admin, system, django_capture_on_commit_callbacks
):
    allocation = funded_allocation(system)
    ingest_sacct(system=system, payload=payload(sacct_line(1, account="typo-00001")), source="command")
    page = client.get(reverse("usage:unmatched")).content.decode()
    assert "typo-00001" in page and "Assign" in page

    choice = {"account": "typo-00001", "allocation": allocation.scheduler_account}
    with django_capture_on_commit_callbacks(execute=True):
        asked = client.post(reverse("usage:unmatched-assign", args=[system.slug]), choice)

    # First what it will do, and nothing done yet.
    assert asked.status_code == 200
    shown = " ".join(asked.content.decode().split())
    assert "Are you sure you want to assign 'typo-00001' to airr-00001?" in shown
    assert "1 GPU-hours, 1 job run" in shown
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 0
    assert len(client.get(reverse("usage:unmatched")).context["page"].object_list) == 1

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("usage:unmatched-assign", args=[system.slug]), {**choice, "confirm": "yes"})

    assert ledger.net_usage(ledger.allocation_account(allocation)) == HOUR
    assert not client.get(reverse("usage:unmatched")).context["page"].object_list


def test_asking_to_assign_usage_that_was_assigned_meanwhile_says_so(client, admin, system):
    allocation = funded_allocation(system)
    ingest_sacct(system=system, payload=payload(sacct_line(1, account="typo-00001")), source="command")
    choice = {"account": "typo-00001", "allocation": allocation.scheduler_account}
    client.post(reverse("usage:unmatched-assign", args=[system.slug]), {**choice, "confirm": "yes"})

    asked = client.post(reverse("usage:unmatched-assign", args=[system.slug]), choice, follow=True)

    assert f"No usage of &#x27;typo-00001&#x27; is held on {system.name}" in asked.content.decode()
    assert asked.redirect_chain[-1][0] == reverse("usage:unmatched")


def test_an_assignment_without_its_account_names_the_account_as_the_problem(client, admin, system):
    allocation = funded_allocation(system)
    response = client.post(
        reverse("usage:unmatched-assign", args=[system.slug]),
        {"account": "x" * 65, "allocation": allocation.scheduler_account},
        follow=True,
    )
    assert "The scheduler account to assign is missing or longer than 64 characters" in response.content.decode()


def test_the_unmatched_page_costs_the_same_queries_however_many_accounts_and_allocations(client, admin, system):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    dawn = SystemFactory(slug="dawn", name="Dawn", cluster_name="dawn")
    funded_allocation(system, account="airr-00001")
    funded_allocation(dawn, account="airr-00002")

    def page_queries(accounts: int) -> int:
        for n in range(accounts):
            for on in (system, dawn):
                ingest_sacct(
                    system=on,
                    payload=payload(sacct_line(100 + n, account=f"typo-{n}", cluster=on.cluster_name)),
                    source="command",
                )
                funded_allocation(on, account=f"{on.slug}-{accounts}-{n}")
        with CaptureQueriesContext(connection) as queries:
            client.get(reverse("usage:unmatched"))
        return len(queries)

    assert page_queries(1) == page_queries(5)
    rows = client.get(reverse("usage:unmatched")).context["page"].object_list
    assert len(rows) == 10 and all(row["assignable"] for row in rows)


def test_the_unmatched_page_shows_fifty_accounts_a_page(client, admin, system):
    funded_allocation(system, account="airr-00001")
    lines = [sacct_line(n, account=f"typo-{n:03d}", elapsed=HOUR + n) for n in range(1, 56)]
    ingest_sacct(system=system, payload=payload(*lines), source="command")

    first = client.get(reverse("usage:unmatched"))
    second = client.get(reverse("usage:unmatched"), {"page": "2"})

    # The largest held usage first.
    assert [row["account"] for row in first.context["page"].object_list][:2] == ["typo-055", "typo-054"]
    assert len(first.context["page"].object_list) == 50
    assert [row["account"] for row in second.context["page"].object_list] == [f"typo-{n:03d}" for n in range(5, 0, -1)]
    assert "Page 1 of 2" in first.content.decode()


def test_the_allocation_list_shows_fifty_allocations_a_page(client, admin, system):
    for n in range(55):
        funded_allocation(system, account=f"airr-{n:05d}")

    first = client.get(reverse("usage:allocation-list"))
    second = client.get(reverse("usage:allocation-list"), {"page": "2"})

    assert len(first.context["page"].object_list) == 50
    assert [a.scheduler_account for a in second.context["page"].object_list] == [f"airr-{n:05d}" for n in range(50, 55)]
    assert "Page 2 of 2" in second.content.decode()


def received_minutes_ago(system, minutes: int, job: int = 1) -> IngestBatch:
    batch = receive_payload(system=system, payload=payload(sacct_line(job)), source="api").batch
    IngestBatch.objects.filter(pk=batch.pk).update(received_at=timezone.now() - timedelta(minutes=minutes))
    return batch


def test_a_batch_whose_reading_was_lost_says_so_and_an_admin_has_it_read(
    client, admin, system, django_capture_on_commit_callbacks
):
    lost = received_minutes_ago(system, 3 * 24 * 60)
    page = client.get(reverse("usage:batch-detail", args=[lost.pk])).content.decode()
    assert "3\xa0days ago and still not read" in page
    assert "has stopped, in case the payload itself stops the reader" in page
    assert "Read this batch now" in page

    with django_capture_on_commit_callbacks() as queued:
        response = client.post(reverse("usage:batch-read", args=[lost.pk]), follow=True)
    # The page it lands on says it is queued, not that its reading is lost.
    assert "Batch queued to be read again" in response.content.decode()
    assert "still not read" not in response.content.decode()
    for run_task in queued:
        run_task()

    lost.refresh_from_db()
    assert (lost.status, lost.new) == ("ingested", 1)
    page = client.get(reverse("usage:batch-detail", args=[lost.pk])).content.decode()
    assert "still not read" not in page and "Read this batch now" not in page
    with django_capture_on_commit_callbacks() as queued:
        client.post(reverse("usage:batch-read", args=[lost.pk]))
    assert not queued  # read already: nothing queued
    assert (
        "This batch has been read already" in client.get(reverse("usage:batch-detail", args=[lost.pk])).content.decode()
    )


def test_an_admin_has_a_failed_batch_read_again_once_the_limit_allows(
    client, admin, system, settings, django_capture_on_commit_callbacks
):
    settings.INGEST_MAX_UNCOMPRESSED_BYTES = 1000
    with pytest.raises(IngestError):
        # Uploaded: a file given to the command is refused before its batch is recorded, over the same limit.
        ingest_sacct(system=system, payload=payload(*[sacct_line(n) for n in range(1, 20)]), source="upload")
    failed = IngestBatch.objects.get()
    page = client.get(reverse("usage:batch-detail", args=[failed.pk])).content.decode()
    assert "This payload could not be read" in page and "Read this batch again" in page

    settings.INGEST_MAX_UNCOMPRESSED_BYTES = 1_000_000
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("usage:batch-read", args=[failed.pk]))

    failed.refresh_from_db()
    assert (failed.status, failed.new, failed.error) == ("ingested", 19, "")
    assert "Read this batch again" not in client.get(reverse("usage:batch-detail", args=[failed.pk])).content.decode()


def failed_batch(system, job: int = 1) -> IngestBatch:
    batch = received_minutes_ago(system, 5, job=job)
    IngestBatch.objects.filter(pk=batch.pk).update(status=IngestBatch.Status.FAILED, error="Not sacct output")
    return batch


def test_a_failed_batch_read_again_is_timed_from_then_and_its_page_still_says_when_it_was_received(
    client, admin, system, django_capture_on_commit_callbacks
):
    """Timed from when its bytes arrived, a batch that failed days ago and was read again would be called lost,
    and given up on, the moment its reading was queued."""
    failed = failed_batch(system)
    three_days_ago = timezone.now() - timedelta(days=3)
    IngestBatch.objects.filter(pk=failed.pk).update(received_at=three_days_ago)

    with django_capture_on_commit_callbacks():  # its reading is queued, and not run yet
        client.post(reverse("usage:batch-read", args=[failed.pk]))

    page = client.get(reverse("usage:batch-detail", args=[failed.pk])).content.decode()
    assert "its rows are being read" in page and "still not read" not in page
    assert f"{three_days_ago:%-d %B %Y %H:%M} through the API" in page.replace("\xa0", " ")
    assert "Made to be read again</dt>" in page and 'name="note"' not in page
    assert client.get(reverse("usage:batch-list")).context["waiting"] == 0
    with pytest.raises(UsageError, match="This batch does not need attention"):
        mark_batch_dealt_with(batch=failed, note="Window re-sent in 123", actor=admin)

    IngestBatch.objects.filter(pk=failed.pk).update(reopened_at=timezone.now() - timedelta(hours=25))
    page = client.get(reverse("usage:batch-detail", args=[failed.pk])).content.decode()
    assert "Made to be read again 1\xa0day, 1\xa0hour ago and still not read" in page
    assert client.get(reverse("usage:batch-list")).context["waiting"] == 1


def test_the_batch_list_says_which_batches_wait_for_an_operator_and_lists_them_alone(
    client, admin, system, django_capture_on_commit_callbacks
):
    """A batch the beat gave up on, and one that failed, are read again by no task: among a day's hundreds of
    batches they must stand out, or the cluster's usage in them is silently never charged."""
    given_up = received_minutes_ago(system, 25 * 60, job=1)
    failed = failed_batch(system, job=2)
    received_minutes_ago(system, 60, job=3)  # the beat still queues it again
    received_minutes_ago(system, 5, job=4)  # being read
    ingest_sacct(system=system, payload=payload(sacct_line(5)), source="command")

    page = client.get(reverse("usage:batch-list")).content.decode()

    assert "2 batches need attention" in page
    assert page.count("Reading lost") == 1 and page.count("govuk-tag--red") == 2
    waiting = client.get(reverse("usage:batch-list"), {"attention": "yes"})
    assert [batch.pk for batch in waiting.context["page"].object_list] == [failed.pk, given_up.pk]
    assert "Show every batch" in waiting.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("usage:batch-read", args=[given_up.pk]))
    assert "1 batch needs attention" in client.get(reverse("usage:batch-list")).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("usage:batch-read", args=[failed.pk]))  # say, after its system's settings changed
    page = client.get(reverse("usage:batch-list")).content.decode()
    assert "need attention" not in page and "needs attention" not in page
    assert "No batch needs attention" in client.get(reverse("usage:batch-list"), {"attention": "yes"}).content.decode()


def test_a_systems_staff_are_told_only_of_their_own_systems_batches_waiting(client, make_persona, system):
    client.force_login(make_persona("assessor"))  # staff of `system`
    failed_batch(system)
    failed_batch(SystemFactory(slug="dawn"))

    page = client.get(reverse("usage:batch-list"), {"attention": "yes"})

    assert "1 batch needs attention" in page.content.decode()
    assert [batch.system for batch in page.context["page"].object_list] == [system]


def _reconcile_failing(system, error: Exception):
    """Run the system's reconciliation task as a worker would, its ledger refusing the run's movements."""
    with mock.patch("allocations.usage.reconcile.ledger.record_usage_in_bulk", side_effect=error):
        return reconcile_system_task.apply([system.pk], throw=False)


def test_operators_are_told_of_a_system_whose_usage_is_not_being_charged_until_a_run_succeeds(
    client, make_persona, system, alice
):
    """Reconciliation failing run after run left every batch read and none of it charged, and said so only in the
    worker's log: the usage landing page names the system, since when, how many runs and the error."""
    allocation = funded_allocation(system, hours=10, holder=alice)
    ingest_sacct(system=system, payload=payload(sacct_line(1, gpus=2)), source="command")
    _reconcile_failing(system, ledger.InvalidAmount("A refund would give back more GPU-hours than were charged"))
    _reconcile_failing(system, ledger.InvalidAmount("A refund would give back more GPU-hours than were charged"))
    since = timezone.localtime(ReconciliationCursor.objects.get(system=system).failing_since)

    admin, staff = make_persona("admin"), make_persona("assessor")  # the assessor: the system's staff
    for operator in (admin, staff):
        client.force_login(operator)
        page = client.get(reverse("usage:batch-list")).content.decode()
        assert f"Usage of {system.name} is not being charged" in page
        assert f"has failed since {since.day} {since:%b %Y %H:%M}, 2 times" in page
        assert "InvalidAmount: A refund would give back more GPU-hours than were charged" in page
    client.force_login(alice)  # the allocation's PI: her usage is what is missing, but the fault is not hers to fix
    for pi_page in (reverse("usage:allocation-list"), reverse("usage:allocation-usage", args=[allocation.pk])):
        assert "not being charged" not in client.get(pi_page).content.decode()

    assert reconcile_system_task.apply([system.pk], throw=False).successful()

    client.force_login(admin)
    assert "not being charged" not in client.get(reverse("usage:batch-list")).content.decode()


def test_a_systems_staff_are_told_only_of_their_own_systems_failing_reconciliation(client, make_persona, system):
    dawn = SystemFactory(slug="dawn", name="Dawn")
    funded_allocation(dawn, account="airr-00002")
    ingest_sacct(
        system=dawn, payload=payload(sacct_line(1, account="airr-00002", cluster=dawn.cluster_name)), source="command"
    )
    _reconcile_failing(dawn, ValueError("a bug"))

    client.force_login(make_persona("assessor"))  # staff of `system`, not of Dawn
    assert "not being charged" not in client.get(reverse("usage:batch-list")).content.decode()
    client.force_login(make_persona("admin"))
    assert "Usage of Dawn is not being charged" in client.get(reverse("usage:batch-list")).content.decode()


def test_a_batch_marked_as_dealt_with_no_longer_needs_attention_and_says_who_when_and_why(client, admin, system):
    """A failed batch whose window the cluster sent again, or a garbage upload, would otherwise be counted for
    ever, and the count soon ignored."""
    failed = failed_batch(system, job=1)
    RejectedRow.objects.create(batch=failed, line_number=2, raw="x", reason="Not a row")
    IngestBatch.objects.filter(pk=failed.pk).update(rejected=1)
    given_up = received_minutes_ago(system, 25 * 60, job=2)
    page = client.get(reverse("usage:batch-detail", args=[failed.pk])).content.decode()
    assert "Mark as dealt with" in page

    response = client.post(reverse("usage:batch-dealt-with", args=[failed.pk]), {"note": " Window re-sent in 123 "})

    assert response.status_code == 302
    page = client.get(reverse("usage:batch-list")).content.decode()
    assert "1 batch needs attention" in page
    assert page.count("govuk-tag--red") == 1 and page.count("Reading lost") == 1 and "Dealt with</strong>" in page
    waiting = client.get(reverse("usage:batch-list"), {"attention": "yes"}).context["page"].object_list
    assert [batch.pk for batch in waiting] == [given_up.pk]
    page = client.get(reverse("usage:batch-detail", args=[failed.pk])).content.decode()
    assert "Marked as dealt with by admin@example.ac.uk on" in page and "Why: Window re-sent in 123" in page
    assert "Read this batch again" in page and 'name="note"' not in page
    failed.refresh_from_db()
    assert (failed.status, failed.rejected, failed.rejected_rows.count()) == ("failed", 1, 1)
    assert (failed.dealt_with_by, failed.dealt_with_note) == (admin, "Window re-sent in 123")
    assert timezone.now() - failed.dealt_with_at < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("note", "error"),
    [
        ("  ", "Enter why this batch needs nothing more"),
        ("x" * 301, "The note must be 300 characters or fewer"),
        ("a\x00b", "Null characters are not allowed"),  # which PostgreSQL would refuse with a 500
    ],
)
def test_marking_a_batch_as_dealt_with_needs_a_short_note(client, admin, system, note, error):
    failed = failed_batch(system)

    response = client.post(reverse("usage:batch-dealt-with", args=[failed.pk]), {"note": note})

    assert response.status_code == 200
    page = response.content.decode()
    assert "There is a problem" in page and page.count(error) == 2  # in the summary and by the field
    assert "This payload could not be read" in page
    assert IngestBatch.objects.get(pk=failed.pk).dealt_with_at is None
    assert "1 batch needs attention" in client.get(reverse("usage:batch-list")).content.decode()


def test_only_a_batch_needing_attention_is_marked_and_only_once(client, admin, system, make_persona):
    read = ingest_sacct(system=system, payload=payload(sacct_line(1)), source="command").batch
    being_read = received_minutes_ago(system, 60, job=2)  # the beat still queues it again
    failed = failed_batch(system, job=3)
    mark = reverse("usage:batch-dealt-with", args=[failed.pk])
    client.post(mark, {"note": "Garbage upload"})
    client.force_login(make_persona("assessor"))

    for batch, refusal in [
        (read, "This batch does not need attention"),
        (being_read, "This batch does not need attention"),
        (failed, "This batch was marked as dealt with already"),
    ]:
        response = client.post(reverse("usage:batch-dealt-with", args=[batch.pk]), {"note": "Mine"}, follow=True)
        assert refusal in response.content.decode()

    marks = dict(IngestBatch.objects.values_list("pk", "dealt_with_note"))
    assert marks == {read.pk: "", being_read.pk: "", failed.pk: "Garbage upload"}


def test_a_note_left_blank_on_a_batch_marked_meanwhile_says_it_was_marked_not_points_at_a_form_gone_from_the_page(
    client, admin, system
):
    """Two operators open a failed batch; one marks it, the other sends the form with no note: the error summary
    linked to a note field the page no longer shows."""
    failed = failed_batch(system)
    mark = reverse("usage:batch-dealt-with", args=[failed.pk])
    client.post(mark, {"note": "Window re-sent in 123"})

    response = client.post(mark, {"note": " "}, follow=True)

    page = response.content.decode()
    assert "There is a problem" not in page and 'href="#id_note"' not in page
    assert "This batch was marked as dealt with already" in page
    assert IngestBatch.objects.get(pk=failed.pk).dealt_with_note == "Window re-sent in 123"


def test_an_unread_batch_marked_as_dealt_with_shows_its_mark_once(client, admin, system):
    failed = failed_batch(system)
    client.post(reverse("usage:batch-dealt-with", args=[failed.pk]), {"note": "Window re-sent in 123"})

    page = client.get(reverse("usage:batch-detail", args=[failed.pk])).content.decode()

    assert "Marked as dealt with by admin@example.ac.uk on" in page
    assert page.count("Window re-sent in 123") == 1 and "Marked as dealt with</dt>" not in page


def test_a_batch_marked_as_dealt_with_and_then_read_keeps_its_mark_as_history(
    client, admin, system, django_capture_on_commit_callbacks
):
    given_up = received_minutes_ago(system, 25 * 60)
    client.post(reverse("usage:batch-dealt-with", args=[given_up.pk]), {"note": "Window re-sent in 123"})

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("usage:batch-read", args=[given_up.pk]))

    assert IngestBatch.objects.get(pk=given_up.pk).status == "ingested"
    page = client.get(reverse("usage:batch-detail", args=[given_up.pk])).content.decode()
    assert "Marked as dealt with</dt>" in page and "Window re-sent in 123" in page
    assert "its usage is recorded only if it is read again" not in page
    assert "Dealt with</strong>" not in client.get(reverse("usage:batch-list")).content.decode()


def test_a_batch_marked_as_dealt_with_that_fails_again_when_read_stays_dealt_with(
    client, admin, system, django_capture_on_commit_callbacks
):
    garbage = receive_payload(system=system, payload=b"Not sacct output\n", source="upload").batch
    IngestBatch.objects.filter(pk=garbage.pk).update(status=IngestBatch.Status.FAILED, error="Not sacct output")
    client.post(reverse("usage:batch-dealt-with", args=[garbage.pk]), {"note": "Uploaded by mistake"})

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("usage:batch-read", args=[garbage.pk]))

    assert IngestBatch.objects.get(pk=garbage.pk).status == "failed"
    assert client.get(reverse("usage:batch-list")).context["waiting"] == 0
    assert "Why: Uploaded by mistake" in client.get(reverse("usage:batch-detail", args=[garbage.pk])).content.decode()


def test_a_batch_cannot_be_marked_as_dealt_with_without_a_short_note(system, make_persona):
    failed = failed_batch(system)
    admin = make_persona("admin")
    for note, refusal in [(" ", "Enter why"), ("x" * 301, "300 characters or fewer")]:
        with pytest.raises(UsageError, match=refusal):
            mark_batch_dealt_with(batch=failed, note=note, actor=admin)
    with pytest.raises(IntegrityError), transaction.atomic():
        IngestBatch.objects.filter(pk=failed.pk).update(dealt_with_at=timezone.now())


def test_a_batch_being_read_is_not_called_lost(client, admin, system):
    page = client.get(reverse("usage:batch-detail", args=[received_minutes_ago(system, 5).pk])).content.decode()

    assert "its rows are being read" in page
    assert "still not read" not in page and "Read this batch now" not in page


def test_a_systems_staff_have_a_lost_batch_of_their_system_read_and_not_one_of_another(
    client, make_persona, system, django_capture_on_commit_callbacks
):
    assessor = make_persona("assessor")  # staff of `system`
    client.force_login(assessor)
    lost = received_minutes_ago(system, 60)
    dawn = SystemFactory(slug="dawn")
    theirs = received_minutes_ago(dawn, 60)

    page = client.get(reverse("usage:batch-detail", args=[lost.pk])).content.decode()

    assert "still not read" in page and "Read this batch now" in page
    assert client.post(reverse("usage:batch-read", args=[theirs.pk])).status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(reverse("usage:batch-read", args=[lost.pk])).status_code == 302
    assert dict(IngestBatch.objects.values_list("pk", "status")) == {lost.pk: "ingested", theirs.pk: "received"}


def test_a_systems_staff_operate_its_usage_and_no_other_systems_and_cannot_assign(client, make_persona, system):
    """A system's operators (its technical assessors) make its ingest tokens, upload its sacct output and replay
    its rejected rows; another system's are out of their reach, and assigning unmatched usage is for admins."""
    assessor = make_persona("assessor")
    client.force_login(assessor)
    mine = ingest_sacct(system=system, payload=payload(sacct_line(1), "a broken line"), source="command").batch
    dawn = SystemFactory(slug="dawn")
    theirs = ingest_sacct(
        system=dawn, payload=payload(sacct_line(2, cluster=dawn.cluster_name), "a broken line"), source="command"
    ).batch
    create_ingest_token(system=dawn, name="Dawn's cron", actor=None)
    dawn_token = IngestToken.objects.get(system=dawn)

    assert client.get(reverse("usage:batch-detail", args=[mine.pk])).status_code == 200
    assert client.get(reverse("usage:batch-detail", args=[theirs.pk])).status_code == 404
    assert "Assign" not in client.get(reverse("usage:unmatched")).content.decode()

    # Tokens: their own system's only.
    assert "Dawn's cron" not in client.get(reverse("usage:token-list")).content.decode()
    refused = client.post(reverse("usage:token-create"), {"system": dawn.pk, "name": "Not mine"})
    assert "Select a valid choice" in refused.content.decode()
    made = client.post(reverse("usage:token-create"), {"system": system.pk, "name": "Our cron"})
    key = made.context["key"]
    assert client.get(reverse("usage:token-revoke", args=[dawn_token.pk])).status_code == 404
    assert client.post(reverse("usage:token-revoke", args=[dawn_token.pk])).status_code == 404
    assert not IngestToken.objects.get(pk=dawn_token.pk).is_revoked
    posted = Client().generic(
        "POST",
        reverse("usage-ingest", args=[system.slug]),
        payload(sacct_line(3)),
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert posted.status_code == 201 and posted.json()["new"] == 1

    # Uploads and replays: their own system's only.
    refused = client.post(reverse("usage:upload"), {"system": dawn.pk, "file": SimpleUploadedFile("a.txt", b"x")})
    assert "Select a valid choice" in refused.content.decode()
    assert client.post(reverse("usage:batch-replay", args=[theirs.pk])).status_code == 404
    assert client.post(reverse("usage:batch-replay", args=[mine.pk])).status_code == 302
    assert RejectedRow.objects.get(batch=mine).replay_outcome.startswith("Still rejected")
    assert RejectedRow.objects.get(batch=theirs).replay_outcome == ""


def test_the_pi_sees_usage_per_job_and_per_member_and_the_balance_moving(client, system, alice):
    allocation = funded_allocation(system, hours=10, holder=alice)
    client.force_login(alice)
    ingest_sacct(
        system=system,
        payload=payload(sacct_line(1, user="alice", gpus=2), sacct_line(2, user="bob"), sacct_line(3, user="bob")),
        source="command",
    )
    reconcile_system(system=system)

    response = client.get(reverse("usage:allocation-usage", args=[allocation.pk]))

    assert response.status_code == 200
    assert [(row["user"], row["seconds"]) for row in response.context["per_member"]] == [
        ("alice", 2 * HOUR),
        ("bob", 2 * HOUR),
    ]
    assert response.context["report"].remaining == 6 * HOUR
    assert len(response.context["page"].object_list) == 3


def test_each_usage_movement_of_the_statement_leads_to_the_jobs_it_charged_or_refunded(client, system, alice):
    allocation = funded_allocation(system, hours=10, holder=alice)
    client.force_login(alice)
    ingest_sacct(system=system, payload=payload(sacct_line(1, gpus=2), sacct_line(2)), source="command")
    first = reconcile_system(system=system)
    ingest_sacct(system=system, payload=payload(sacct_line(2, elapsed=HOUR // 2), sacct_line(3)), source="command")
    second = reconcile_system(system=system)
    page = reverse("usage:allocation-usage", args=[allocation.pk])
    movements = {}
    for run in (first, second):
        for charge in JobCharge.objects.filter(run=run).select_related("transaction", "job_record"):
            movements.setdefault(charge.transaction, []).append((charge.job_record.job_id, charge.seconds))
    assert sorted(len(jobs) for jobs in movements.values()) == [1, 1, 2]  # a charge, then a charge and a refund

    statement = client.get(page).content.decode()

    for movement, jobs in movements.items():
        link = f'href="{page}?transaction={movement.pk}#jobs"'
        assert link in statement, movement.reason
        shown = client.get(f"{page}?transaction={movement.pk}")
        rows = [(job.job_id, job.movement_seconds) for job in shown.context["page"].object_list]
        assert sorted(rows) == sorted(jobs)
        assert -sum(seconds for _, seconds in rows) == movement.entries.get(account__allocation=allocation).amount


def test_a_movements_link_and_the_way_back_keep_the_statements_dates_and_page(client, system, alice):
    allocation = funded_allocation(system, hours=1000, holder=alice)
    client.force_login(alice)
    ingest_sacct(system=system, payload=payload(sacct_line(1)), source="command")
    run = reconcile_system(system=system)
    [movement] = {charge.transaction for charge in JobCharge.objects.filter(run=run)}
    page = reverse("usage:allocation-usage", args=[allocation.pk])
    window = "start_day=1&start_month=3&start_year=2026&statement_page=1"
    kept = window.replace("&", "&amp;")

    statement = client.get(f"{page}?{window}&page=1").content.decode()
    jobs = client.get(f"{page}?{window}&transaction={movement.pk}").content.decode()

    assert f'href="{page}?{kept}&amp;transaction={movement.pk}#jobs"' in statement
    assert f'href="{page}?{kept}#jobs">Show every job' in jobs


def test_both_pagers_keep_the_movement_whose_jobs_are_shown(client, system, alice):
    from allocations.usage.views import PAGE_SIZE

    allocation = funded_allocation(system, hours=1000, holder=alice)
    client.force_login(alice)
    ingest_sacct(system=system, payload=payload(*(sacct_line(n) for n in range(1, PAGE_SIZE + 2))), source="command")
    run = reconcile_system(system=system)
    [movement] = {charge.transaction for charge in JobCharge.objects.filter(run=run)}
    page = reverse("usage:allocation-usage", args=[allocation.pk])

    second = client.get(page, {"transaction": movement.pk, "page": 2})  # PAGE_SIZE + 1 jobs: one on page 2

    assert len(second.context["page"].object_list) == 1
    jobs = second.content.decode().split('aria-label="Job pages"')[1].split("</nav>")[0]
    assert f"transaction={movement.pk}&amp;page=1" in jobs


def test_a_movement_shows_a_co_investigator_only_their_jobs_and_another_allocations_nothing(
    client, system, alice, bob, charlie
):
    proposal = make_proposal(call=CallFactory(), pi=alice, system=system, state="accepted")
    ProposalMember.objects.create(
        proposal=proposal, email=bob.email, user=bob, token="bob-token", accepted_at=timezone.now()
    )
    allocation = funded_allocation(system, holder=alice, proposal=proposal)
    other = funded_allocation(system, account="airr-00002", holder=charlie)
    MemberSchedulerUser.objects.create(allocation=allocation, user=bob, username="bob")
    lines = (sacct_line(1, user="alice"), sacct_line(2, user="bob"), sacct_line(3, account="airr-00002"))
    ingest_sacct(system=system, payload=payload(*lines), source="command")
    run = reconcile_system(system=system)
    [mine] = {charge.transaction for charge in JobCharge.objects.filter(run=run, job_record__allocation=allocation)}
    [theirs] = {charge.transaction for charge in JobCharge.objects.filter(run=run, job_record__allocation=other)}
    page = reverse("usage:allocation-usage", args=[allocation.pk])

    client.force_login(bob)
    shown = client.get(page, {"transaction": mine.pk})
    assert [(job.job_id, job.movement_seconds) for job in shown.context["page"].object_list] == [("2", HOUR)]
    client.force_login(alice)
    foreign = client.get(page, {"transaction": theirs.pk})
    assert foreign.context["movement"] is None
    assert "The jobs of the movement" not in foreign.content.decode()
    assert sorted(job.job_id for job in foreign.context["page"].object_list) == ["1", "2"]


def test_a_movement_of_none_of_a_co_investigators_jobs_says_so_rather_than_showing_an_empty_table(
    client, system, alice, bob
):
    proposal = make_proposal(call=CallFactory(), pi=alice, system=system, state="accepted")
    ProposalMember.objects.create(
        proposal=proposal, email=bob.email, user=bob, token="bob-token", accepted_at=timezone.now()
    )
    allocation = funded_allocation(system, holder=alice, proposal=proposal)
    MemberSchedulerUser.objects.create(allocation=allocation, user=bob, username="bob")
    ingest_sacct(system=system, payload=payload(sacct_line(1, user="alice")), source="command")
    run = reconcile_system(system=system)
    [movement] = {charge.transaction for charge in JobCharge.objects.filter(run=run)}
    client.force_login(bob)

    page = client.get(reverse("usage:allocation-usage", args=[allocation.pk]), {"transaction": movement.pk})

    html = page.content.decode()
    assert "None of your jobs is in this movement." in html
    assert "Job runs, newest first" not in html


@pytest.mark.parametrize("value", ["9" * 5000, "9" * 30, "\u00b2", "\uff11", "-1", "0", "abc", ""])
def test_a_movement_that_is_not_one_of_the_allocations_shows_all_its_jobs(client, system, alice, value):
    allocation = funded_allocation(system, holder=alice)
    client.force_login(alice)
    ingest_sacct(system=system, payload=payload(sacct_line(1)), source="command")

    response = client.get(reverse("usage:allocation-usage", args=[allocation.pk]), {"transaction": value})

    assert response.status_code == 200
    assert response.context["movement"] is None
    assert [job.job_id for job in response.context["page"].object_list] == ["1"]


def test_the_usage_page_says_how_far_past_the_award_the_pools_grace_lets_jobs_run(client, system, alice, bob):
    graced = funded_allocation(system, holder=alice, pool_options={"grace_percent": 10})
    strict = funded_allocation(system, account="airr-00002", holder=bob, pool_options={"grace_percent": 0})
    client.force_login(alice)

    page = client.get(reverse("usage:allocation-usage", args=[graced.pk])).content.decode()

    assert "until 110% of it is used: the fund pool allows 10% over" in page
    client.force_login(bob)
    assert 'id="grace"' not in client.get(reverse("usage:allocation-usage", args=[strict.pk])).content.decode()
    # Once it has ended no job runs: the grace is not offered.
    ledger.expire_allocation(allocation=graced, idempotency_key="expire-graced")
    client.force_login(alice)
    assert 'id="grace"' not in client.get(reverse("usage:allocation-usage", args=[graced.pk])).content.decode()


def _given_back_three_hours_twice(system, holder, *, charged=4 * HOUR, reported=HOUR):
    """An award of 10 hours whose job's 4 hours (`charged`) were given back by hand, then the job reported at 1 hour
    (`reported`): reconciliation gives back 3 more, and its usage is 3 hours (their difference) below zero."""
    allocation, _ = given_back_twice(system, charged=charged, reported=reported, hours=10, holder=holder)
    return allocation


def test_an_allocation_given_back_more_than_its_jobs_were_charged_shows_its_usage_below_zero_and_why(
    client, system, alice
):
    allocation = _given_back_three_hours_twice(system, alice)
    client.force_login(alice)

    page = client.get(reverse("usage:allocation-usage", args=[allocation.pk])).content.decode()

    figures = _figures(page)
    assert "Used 3 GPU-hours below zero: more has been given back than its jobs were charged" in figures
    assert "%)" not in figures.split("Remaining")[0]
    # The 3 hours given back twice are in its account, but no time to run (the scheduler limits count usage below
    # zero as none): what remains to run is the award, as for an allocation that used nothing.
    assert "Remaining 10 GPU-hours (its account holds 13: the 3 GPU-hours given back twice" in figures
    assert "Remaining 13" not in figures

    ledger.expire_allocation(allocation=allocation, idempotency_key="expire")
    page = client.get(reverse("usage:allocation-usage", args=[allocation.pk])).content.decode()

    figures = _figures(page)
    assert "Remaining 0 GPU-hours (its account holds 3: the 3 GPU-hours given back twice" in figures


def test_usage_a_few_gpu_seconds_below_zero_never_reads_as_none(client, system, alice):
    """Rounded to two decimals, 5 GPU-seconds below zero once read "Used 0 GPU-hours: more has been given back"."""
    allocation = _given_back_three_hours_twice(system, alice, charged=HOUR, reported=HOUR - 5)
    client.force_login(alice)

    figures = _figures(client.get(reverse("usage:allocation-usage", args=[allocation.pk])).content.decode())

    assert "Used less than 0.01 GPU-hours below zero: more has been given back" in figures
    assert "the less than 0.01 GPU-hours given back twice are no time to run" in figures


def test_per_member_counts_every_run_reported_and_adds_up_to_what_the_ledger_charged(client, system, alice):
    """Runs reported but not yet charged (reconciliation comes every few minutes) and runs with no GPU are still
    their members' runs: the table never says no job was reported above a list of jobs, and its GPU-hours are
    what the ledger charged."""
    allocation = funded_allocation(system, hours=10, holder=alice)
    client.force_login(alice)
    ingest_sacct(system=system, payload=payload(sacct_line(1, user="alice", gpus=2)), source="command")
    reconcile_system(system=system)
    ingest_sacct(
        system=system, payload=payload(sacct_line(2, user="bob"), sacct_line(3, user="carol", gpus=0)), source="command"
    )

    response = client.get(reverse("usage:allocation-usage", args=[allocation.pk]))

    rows = [(row["user"], row["jobs"], row["seconds"]) for row in response.context["per_member"]]
    assert rows == [("alice", 1, 2 * HOUR), ("bob", 1, 0), ("carol", 1, 0)]
    assert sum(jobs for _, jobs, _ in rows) == response.context["page"].paginator.count == 3
    assert sum(seconds for _, _, seconds in rows) == response.context["report"].used
    assert "No jobs have been reported" not in response.content.decode()
    api = client.get(reverse("api-allocation-usage", args=[allocation.pk])).json()
    assert [(row["user"], row["jobs"]) for row in api["per_member"]] == [("alice", 1), ("bob", 1), ("carol", 1)]


def test_paging_through_jobs_keeps_the_statements_dates(client, system, alice):
    allocation = funded_allocation(system, hours=1000, holder=alice)
    client.force_login(alice)
    ingest_sacct(system=system, payload=payload(*(sacct_line(n) for n in range(1, 52))), source="command")
    window = "start_day=1&start_month=3&start_year=2026&end_day=31&end_month=3&end_year=2026"

    page = client.get(reverse("usage:allocation-usage", args=[allocation.pk]) + "?" + window).content.decode()

    assert f'href="?{window.replace("&", "&amp;")}&amp;page=2"' in page


def test_someone_elses_allocation_is_not_found(client, system, charlie, alice):
    allocation = funded_allocation(system, holder=alice)
    client.force_login(charlie)

    assert client.get(reverse("usage:allocation-usage", args=[allocation.pk])).status_code == 404


def test_an_upload_over_the_limit_is_refused_with_an_error_summary(client, admin, system, settings):
    settings.INGEST_MAX_BYTES = 10
    upload = SimpleUploadedFile("jobs.txt", payload(sacct_line(1)), content_type="text/plain")

    response = client.post(reverse("usage:upload"), {"system": system.pk, "file": upload})

    assert response.status_code == 413  # as the API answers
    assert "The file must be smaller than 0 MB" in response.content.decode()
    assert not IngestBatch.objects.exists()


def csrf_checking_client(user) -> Client:
    """A client that, like a browser's requests in production, passes Django's CSRF check only with a token."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def test_an_upload_declared_over_the_limit_is_refused_with_the_form_before_its_body_is_read(
    admin, system, settings, monkeypatch
):
    from django.http.multipartparser import MultiPartParser

    from allocations.usage.views import UPLOAD_FIELDS_ALLOWANCE

    settings.INGEST_MAX_BYTES = 1000
    # The CSRF check reads the whole body to find its token, and so would the form.
    monkeypatch.setattr(MultiPartParser, "parse", lambda parser: pytest.fail("the body was read"))
    upload = SimpleUploadedFile("jobs.txt", b"x" * (UPLOAD_FIELDS_ALLOWANCE + 2000), content_type="text/plain")

    response = csrf_checking_client(admin).post(reverse("usage:upload"), {"system": system.pk, "file": upload})

    assert response.status_code == 413
    page = response.content.decode()
    assert "The file must be smaller than 0 MB: gzip it, or split it by date" in page
    assert 'class="govuk-error-summary' in page and 'type="file"' in page  # the form, to choose a smaller file
    assert not IngestBatch.objects.exists()


def test_an_upload_within_the_limit_still_needs_the_csrf_token(admin, system):
    upload = SimpleUploadedFile("jobs.txt", payload(sacct_line(1)), content_type="text/plain")

    response = csrf_checking_client(admin).post(reverse("usage:upload"), {"system": system.pk, "file": upload})

    assert response.status_code == 403
    assert not IngestBatch.objects.exists()


def test_an_upload_whose_fields_are_over_djangos_limit_is_refused_with_the_form_and_a_reason(
    client, admin, system, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    # A script's `curl -F "file=<jobs.txt"` sends the file's content as a plain field, which Django counts.
    response = client.post(
        reverse("usage:upload"), {"system": system.pk, "file": payload(sacct_line(1)).decode() * 200}
    )

    assert response.status_code == 413
    page = response.content.decode()
    assert "The form&#x27;s fields other than the file are larger than 9 KB" in page
    assert 'class="govuk-error-summary' in page and 'type="file"' in page
    assert not IngestBatch.objects.exists()


def form_with_too_many_fields(encoding: str, system) -> dict:
    """A POST of the upload form with 9 fields beside the system, in the encoding named, for the client's `post`."""
    fields = {"system": system.pk, **{f"field{n}": "x" for n in range(9)}}
    if encoding == "multipart":
        return {"data": {**fields, "file": SimpleUploadedFile("jobs.txt", payload(sacct_line(1)))}}
    return {"data": "&".join(f"{name}={value}" for name, value in fields.items()), "content_type": encoding}


def assert_refused_with_the_form(response, reason: str) -> None:
    assert response.status_code == 400
    page = response.content.decode()
    assert reason in page
    assert 'class="govuk-error-summary' in page and 'type="file"' in page  # the form, to send again
    assert not IngestBatch.objects.exists()


@pytest.mark.parametrize("encoding", ["multipart", "application/x-www-form-urlencoded"])
def test_an_upload_with_more_fields_than_django_reads_is_refused_with_the_form_and_a_reason(
    client, admin, system, settings, encoding
):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5

    response = client.post(reverse("usage:upload"), **form_with_too_many_fields(encoding, system))

    assert_refused_with_the_form(response, "The form had more than 5 fields, so nothing was stored")


def test_an_upload_with_more_files_than_django_reads_is_refused_with_the_form_and_a_reason(
    client, admin, system, settings
):
    settings.DATA_UPLOAD_MAX_NUMBER_FILES = 2
    files = [SimpleUploadedFile(f"jobs{n}.txt", payload(sacct_line(n))) for n in range(1, 4)]

    response = client.post(reverse("usage:upload"), {"system": system.pk, "file": files})

    assert_refused_with_the_form(response, "The form had more than 2 files, so nothing was stored")


def test_a_browsers_upload_with_too_many_fields_is_refused_with_the_form_by_its_csrf_check(admin, system, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    browser = csrf_checking_client(admin)
    browser.get(reverse("usage:upload"))  # sets the CSRF cookie, as opening the page does
    request = form_with_too_many_fields("multipart", system)
    request["data"]["csrfmiddlewaretoken"] = browser.cookies["csrftoken"].value

    # The CSRF check reads the fields to find its token: the count is over before the token is compared.
    response = browser.post(reverse("usage:upload"), **request)

    assert_refused_with_the_form(response, "The form had more than 5 fields, so nothing was stored")


def test_an_upload_with_too_many_fields_and_no_csrf_cookie_is_still_forbidden(admin, system, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5

    response = csrf_checking_client(admin).post(
        reverse("usage:upload"), **form_with_too_many_fields("multipart", system)
    )

    assert response.status_code == 403
    assert not IngestBatch.objects.exists()


# The PI's allocation page: usage over time, what is left, thresholds, the statement and its CSV ---------------


@pytest.fixture
def used_allocation(system, alice):
    """100 GPU-hours awarded for 30 days from 9 days ago; 10 used 8 days ago, 4 used and 1 refunded 3 days ago."""
    today = timezone.localdate()
    start = today - timedelta(days=9)
    pool = FundPoolFactory(system=system, valid_from=today - timedelta(days=30), valid_until=today + timedelta(days=60))
    ledger.deposit_to_pool(
        pool=pool,
        seconds=1000 * HOUR,
        actor=None,
        reason="Budget",
        idempotency_key=f"deposit-{pool.pk}",
        effective_at=start_of_day(pool.valid_from),
    )
    allocation = AllocationFactory(
        pool=pool,
        holder=alice,
        start_date=start,
        end_date=today + timedelta(days=20),
        scheduler_account="airr-00009",
    )
    ledger.commit_to_allocation(
        allocation=allocation,
        seconds=100 * HOUR,
        actor=None,
        reason="Award",
        idempotency_key="award-00009",
        effective_at=start_of_day(start),
    )
    for key, hours, days_ago in (("a", 10, 8), ("b", 4, 3)):
        ledger.charge_usage(
            allocation=allocation,
            seconds=hours * HOUR,
            reason="Usage",
            idempotency_key=f"usage-{key}",
            effective_at=start_of_day(today - timedelta(days=days_ago)) + timedelta(hours=12),
        )
    ledger.refund_usage(
        allocation=allocation,
        seconds=HOUR,
        actor=None,
        reason="A node failed",
        idempotency_key="refund-b",
        effective_at=start_of_day(today - timedelta(days=3)) + timedelta(hours=18),
    )
    return allocation


def test_the_allocation_page_shows_usage_per_day_with_a_chart_and_a_table_of_the_same_numbers(
    client, used_allocation, alice
):
    today = timezone.localdate()
    client.force_login(alice)

    response = client.get(reverse("usage:allocation-usage", args=[used_allocation.pk]))

    report = response.context["report"]
    assert [point.bucket.first for point in report.usage] == [today - timedelta(days=n) for n in range(9, -1, -1)]
    used = {point.bucket.first: point.used for point in report.usage}
    assert used[today - timedelta(days=8)] == 10 * HOUR and used[today - timedelta(days=3)] == 3 * HOUR
    assert sum(used.values()) == report.used == 13 * HOUR
    assert report.usage[-1].cumulative == 13 * HOUR
    assert (report.committed, report.remaining, report.days_left) == (100 * HOUR, 87 * HOUR, 21)
    page = response.content.decode()
    assert f'aria-describedby="usage-{used_allocation.pk}-description"' in page
    table = re.search(rf'id="usage-{used_allocation.pk}-table">.*?<tbody[^>]*>(.*?)</tbody>', page, re.S).group(1)
    rows = [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
    ]
    assert [row[1:] for row in rows] == [
        [ledger.format_gpu_hours(point.used), ledger.format_gpu_hours(point.cumulative)] for point in report.usage
    ]
    assert "21 days, today and the end date included" in page


def test_each_pager_of_the_allocation_page_keeps_the_others_page(client, system, alice):
    from allocations.usage.views import PAGE_SIZE

    allocation = funded_allocation(system, hours=1000, holder=alice)
    # A page and a half of jobs, and of statement movements (a charge per reconciliation).
    for n in range(1, PAGE_SIZE * 3 // 2 + 1):
        ingest_sacct(system=system, payload=payload(sacct_line(n, elapsed=60)), source="command")
        reconcile_system(system=system)
    client.force_login(alice)

    page = client.get(reverse("usage:allocation-usage", args=[allocation.pk]), {"page": 2, "statement_page": 2})

    html = page.content.decode()
    jobs = html.split('aria-label="Job pages"')[1].split("</nav>")[0]
    statement = html.split('aria-label="Statement pages"')[1].split("</nav>")[0]
    assert "statement_page=2&amp;page=1" in jobs
    assert "page=2&amp;statement_page=1" in statement


def test_the_allocation_page_counts_days_by_its_systems_date_as_its_limit_does(system):
    """At 23:30 UTC on its last day (already the next day in London in summer) a UTC system's allocation still
    runs, and its page says so."""
    from datetime import UTC, date, datetime
    from unittest import mock

    from allocations.dashboards import allocation_report

    year = date.today().year - 1
    allocation = funded_allocation(
        system,
        start_date=date(year, 7, 1),
        end_date=date(year, 7, 31),
        pool_options={"valid_from": date(year, 1, 1), "valid_until": date(year + 2, 12, 31)},
    )

    with mock.patch("django.utils.timezone.now", return_value=datetime(year, 7, 31, 23, 30, tzinfo=UTC)):
        assert allocation_report(allocation).days_left == 1
    with mock.patch("django.utils.timezone.now", return_value=datetime(year, 8, 1, 0, 30, tzinfo=UTC)):
        assert allocation_report(allocation).days_left == 0


def test_the_allocation_page_lists_the_thresholds_reached(client, used_allocation, alice):
    ThresholdNotice.objects.create(allocation=used_allocation, percent=50, used_seconds=50 * HOUR)
    client.force_login(alice)

    page = client.get(reverse("usage:allocation-usage", args=[used_allocation.pk])).content.decode()

    assert f"50% on {timezone.localdate():%-d %B %Y}" in page


def _figures(page: str) -> str:
    """The text of the allocation page's summary list, tags and repeated spaces taken out."""
    summary = page.split('id="allocation-figures"')[1].split("</dl>")[0]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", summary))


def test_an_ended_allocation_lists_the_thresholds_its_usage_passed_as_it_ended_though_nobody_was_emailed(
    client, system, alice
):
    """Usage reported late is charged as the allocation ends, after which no notices are sent: the page said
    "None yet" of an allocation that had used 60 %."""
    from allocations.usage.thresholds import expire_ended_allocations

    allocation = funded_allocation(system, hours=10, holder=alice)
    ingest_sacct(system=system, payload=payload(sacct_line(1, elapsed=6 * HOUR)), source="command")
    expire_ended_allocations(today=allocation.end_date + timedelta(days=settings.USAGE_SETTLING_DAYS + 1))
    client.force_login(alice)

    figures = _figures(client.get(reverse("usage:allocation-usage", args=[allocation.pk])).content.decode())

    assert not ThresholdNotice.objects.exists()
    assert "Used 6 GPU-hours (60%)" in figures
    thresholds = figures.split("Thresholds reached")[1].strip()
    assert thresholds == "50% (the team was not emailed: notices are sent only while an allocation is open)"


def test_the_allocation_page_lists_a_threshold_passed_before_its_email_and_one_emailed_then_refunded_under(
    client, used_allocation, alice
):
    """53 of 100 GPU-hours used: 50 % passed, its email not sent yet; the notice of 75 % stays, though refunds have
    taken usage back under it."""
    ledger.charge_usage(allocation=used_allocation, seconds=40 * HOUR, reason="Usage", idempotency_key="usage-c")
    ThresholdNotice.objects.create(allocation=used_allocation, percent=75, used_seconds=75 * HOUR)
    client.force_login(alice)

    figures = _figures(client.get(reverse("usage:allocation-usage", args=[used_allocation.pk])).content.decode())

    assert "Used 53 GPU-hours (53%)" in figures
    assert (
        f"Thresholds reached 50% (the team has not been emailed yet) 75% on {timezone.localdate():%-d %B %Y}" in figures
    )


@pytest.mark.parametrize(
    ("used", "shown"),
    [
        (3600 - 17, "Used 1 GPU-hours (99%) Remaining less than 0.01 GPU-hours"),
        (17, "Used less than 0.01 GPU-hours (0%) Remaining 1 GPU-hours"),
        (3600, "Used 1 GPU-hours (100%) Remaining 0 GPU-hours"),
    ],
)
def test_the_percentage_used_and_the_hours_remaining_never_contradict_each_other(client, system, alice, used, shown):
    """The percentage is rounded down (99 % until all is used); the hours to two decimals, so the last 17 of an
    award's GPU-seconds once read "Remaining 0" beside "99%"."""
    allocation = funded_allocation(system, hours=1, holder=alice)
    ledger.charge_usage(allocation=allocation, seconds=used, reason="Usage", idempotency_key="usage")
    client.force_login(alice)

    figures = _figures(client.get(reverse("usage:allocation-usage", args=[allocation.pk])).content.decode())

    assert shown in figures


def test_an_allocation_with_no_usage_says_so(client, system, alice):
    allocation = funded_allocation(system, holder=alice)
    client.force_login(alice)

    page = client.get(reverse("usage:allocation-usage", args=[allocation.pk])).content.decode()

    assert "No usage yet" in page and 'role="img"' not in page


def _csv(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_statement_csv_equals_the_ledger_and_the_pages_statement(client, used_allocation, alice):
    today = timezone.localdate()
    first = today - timedelta(days=5)
    window = {"start_day": first.day, "start_month": first.month, "start_year": first.year}
    client.force_login(alice)

    page = client.get(reverse("usage:allocation-usage", args=[used_allocation.pk]), window)
    response = client.get(reverse("usage:allocation-statement", args=[used_allocation.pk]), window)

    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = _csv(response)
    statement = account_statement(ledger.allocation_account(used_allocation), start=first)
    assert page.context["statement"].opening_balance == statement.opening_balance
    assert page.context["statement"].closing_balance == statement.closing_balance
    assert ["From", first.isoformat()] in rows
    header = rows.index(
        ["Effective", "Recorded", "Movement", "Reason", "By", "Change (GPU-hours)", "Balance (GPU-hours)"]
    )
    opening, *movements, closing = rows[header + 1 :]
    # Awarded 100 and charged 10 before the window: it opens at 90, then −4 and +1.
    assert opening[2:] == ["Opening balance", "", "", "", "90.00"]
    assert [(row[2], row[5], row[6]) for row in movements] == [
        ("Usage charge", "-4.00", "86.00"),
        ("Usage refund", "1.00", "87.00"),
    ]
    assert [Decimal(row[5]) * 3600 for row in movements] == [entry.amount for entry in statement.movements]
    assert closing[2:] == ["Closing balance", "", "", "", "87.00"]
    assert Decimal(closing[6]) * 3600 == statement.closing_balance == 87 * HOUR


def test_a_statement_asked_for_with_impossible_dates_sends_the_user_back_to_the_form(client, used_allocation, alice):
    client.force_login(alice)
    query = {"start_day": "31", "start_month": "2", "start_year": "2026"}

    response = client.get(reverse("usage:allocation-statement", args=[used_allocation.pk]), query)

    assert response.status_code == 302
    page = client.get(response.url)
    assert page.status_code == 200 and "govuk-error-summary" in page.content.decode()


def test_accepted_co_investigators_see_the_allocation_and_invited_ones_do_not(client, system, alice, bob, charlie):
    call = CallFactory()
    proposal = make_proposal(call=call, pi=alice, system=system, state="accepted")
    ProposalMember.objects.create(
        proposal=proposal, email=bob.email, user=bob, token="bob-token", accepted_at=timezone.now()
    )
    ProposalMember.objects.create(proposal=proposal, email=charlie.email, user=charlie, token="charlie-token")
    allocation = funded_allocation(system, holder=alice, proposal=proposal)

    client.force_login(bob)
    assert client.get(reverse("usage:allocation-usage", args=[allocation.pk])).status_code == 200
    assert client.get(reverse("api-allocation-usage", args=[allocation.pk])).status_code == 200
    assert list(Allocation.objects.visible_to(bob)) == [allocation]
    client.force_login(charlie)
    assert client.get(reverse("usage:allocation-usage", args=[allocation.pk])).status_code == 404
    assert client.get(reverse("usage:allocation-statement", args=[allocation.pk])).status_code == 404
    assert client.get(reverse("api-allocation-usage", args=[allocation.pk])).status_code == 404


def test_the_usage_api_gives_the_pages_numbers(client, used_allocation, alice):
    client.force_login(alice)

    data = client.get(reverse("api-allocation-usage", args=[used_allocation.pk])).json()

    assert data["figures"]["gpu_seconds"] == {
        "committed": 100 * HOUR,
        "used": 13 * HOUR,
        "returned": 0,
        "forfeited": 0,
        "remaining": 87 * HOUR,
        "given_back_twice": 0,
    }
    assert data["figures"]["gpu_hours"]["remaining"] == "87.00"
    assert data["percent_used"] == 13
    assert data["days_left"] == 21
    assert len(data["usage_over_time"]) == 10
    assert sum(point["gpu_seconds"]["used"] for point in data["usage_over_time"]) == 13 * HOUR


def test_the_usage_api_gives_the_pages_remaining_hours_for_an_allocation_given_back_more_than_it_was_charged(
    client, system, alice
):
    """Its account holds 13 hours of a 10-hour award; the 3 given back twice are no time to run, as on the page."""
    allocation = _given_back_three_hours_twice(system, alice)
    client.force_login(alice)

    data = client.get(reverse("api-allocation-usage", args=[allocation.pk])).json()

    assert data["figures"]["gpu_seconds"] == {
        "committed": 10 * HOUR,
        "used": -3 * HOUR,
        "returned": 0,
        "forfeited": 0,
        "remaining": 10 * HOUR,
        "given_back_twice": 3 * HOUR,
    }
    assert data["figures"]["gpu_hours"]["given_back_twice"] == "3.00"
    assert data["percent_used"] == 0
    assert data["thresholds_reached"] == []

    ledger.expire_allocation(allocation=allocation, idempotency_key="expire")
    figures = client.get(reverse("api-allocation-usage", args=[allocation.pk])).json()["figures"]["gpu_seconds"]

    assert (figures["remaining"], figures["given_back_twice"], figures["returned"]) == (0, 3 * HOUR, 10 * HOUR)


def test_an_allocation_not_yet_started_counts_its_days_from_its_start(client, system, alice):
    today = timezone.localdate()
    allocation = funded_allocation(
        system,
        holder=alice,
        state="scheduled",
        start_date=today + timedelta(days=10),
        end_date=today + timedelta(days=19),
        pool_options={"valid_from": today, "valid_until": today + timedelta(days=60)},
    )
    client.force_login(alice)

    response = client.get(reverse("usage:allocation-usage", args=[allocation.pk]))

    assert response.context["report"].days_left == 10
    assert f"10 days from its start on {allocation.start_date:%-d %B %Y}" in response.content.decode()


def test_the_upload_form_marks_its_optional_fields_once_and_names_what_is_missing(client, admin, system):
    page = client.get(reverse("usage:upload")).content.decode()
    assert "Delimiter (optional)" in page and "(optional) (optional)" not in page
    # The example lists every run of a requeued job and no step rows, as the cron's command does.
    assert "sacct --allusers --allocations --duplicates --parsable2" in page

    response = client.post(reverse("usage:upload"), {"system": system.pk})

    assert "Choose a file of sacct output" in response.content.decode()


def test_a_batch_read_with_a_delimiter_and_columns_shows_them(client, admin, system):
    data = payload(sacct_line(1)).split(b"\n", 1)[1].replace(b"|", "\u2603".encode())
    columns = "JobID,JobIDRaw,Cluster,Account,User,State,Submit,Start,End,ElapsedRaw,AllocTRES,JobName"
    batch = ingest_sacct(
        system=system, payload=data, source="command", delimiter="\u2603", columns=columns.split(",")
    ).batch

    page = client.get(reverse("usage:batch-detail", args=[batch.pk])).content.decode()

    assert batch.new == 1
    assert f"delimiter <code>\u2603</code>; columns <code>{columns}</code>" in page


def test_usage_that_cannot_be_assigned_says_why_instead_of_offering_a_button(client, admin, system):
    dawn = SystemFactory(slug="dawn", name="Dawn")
    funded_allocation(system)
    ingest_sacct(system=system, payload=payload(sacct_line(1, account="")), source="command")
    ingest_sacct(
        system=dawn, payload=payload(sacct_line(2, account="old-name", cluster=dawn.cluster_name)), source="command"
    )

    page = client.get(reverse("usage:unmatched")).content.decode()

    assert "Cannot be assigned: the cluster reported these jobs without an account" in page
    assert "No allocation on Dawn open to it: each has ended or none exists yet" in page
    assert page.count(">Assign<") == 0


def test_operators_see_each_accounts_latest_usage_report_flagged_first(client, make_persona, system):
    from allocations.usage.variance import record_usage_report

    dawn = SystemFactory(slug="dawn", name="Dawn")
    allocation = funded_allocation(system, account="airr-00001")
    funded_allocation(system, account="airr-00002")
    ingest_sacct(system=system, payload=payload(sacct_line(1, elapsed=2 * HOUR)), source="command")
    reconcile_system(system=system)

    def report(on, *rows):
        record_usage_report(system=on, payload=("Account|User|GrpTRESRaw\n" + "".join(rows)).encode())

    report(system, "airr-00001||gres/gpu=900\n", "airr-00002||gres/gpu=0\n")  # an earlier, flagged reading
    report(system, "airr-00001||gres/gpu=120\n", "airr-00002||gres/gpu=600\n")
    report(dawn, "dawn-only||gres/gpu=60\n")
    assessor = make_persona("assessor")  # the technical assessor of Isambard-AI only
    client.force_login(assessor)

    page = client.get(reverse("usage:variance"))

    rows = [(r.account, r.allocation, r.reported_seconds, r.is_flagged) for r in page.context["page"].object_list]
    assert rows == [
        ("airr-00002", Allocation.objects.get(scheduler_account="airr-00002"), 10 * HOUR, True),
        ("airr-00001", allocation, 2 * HOUR, False),
    ]
    html = page.content.decode()
    assert "Flagged" in html and "Within tolerance" in html and "dawn-only" not in html
    flagged = client.get(reverse("usage:variance"), {"flagged": "yes"}).context["page"].object_list
    assert [r.account for r in flagged] == ["airr-00002"]


def test_the_variance_page_says_a_variance_is_flagged_only_beyond_both_the_tolerance_and_one_gpu_hour(
    client, admin, system
):
    """1.5 GPU-hours off is within 2 % of a hundred charged, so it is not flagged; off an account with nothing
    charged it is. The page states the rule it applies, not "the tolerance or one GPU-hour", which reads as
    flagging the first."""
    from allocations.usage.variance import record_usage_report

    funded_allocation(system, account="airr-00001", hours=1000)
    funded_allocation(system, account="airr-00002")
    ingest_sacct(system=system, payload=payload(sacct_line(1, gpus=100)), source="command")
    reconcile_system(system=system)

    record_usage_report(
        system=system, payload=b"Account|User|GrpTRESRaw\nairr-00001||gres/gpu=6090\nairr-00002||gres/gpu=90\n"
    )
    page = client.get(reverse("usage:variance"))

    rows = [(r.account, r.variance_seconds, r.is_flagged) for r in page.context["page"].object_list]
    assert rows == [("airr-00002", 90 * 60, True), ("airr-00001", 90 * 60, False)]
    assert "beyond both 2.0&nbsp;% of the ledger's figure and one GPU-hour" in page.content.decode()


def test_the_variance_page_links_only_the_allocations_its_reader_may_open(client, make_persona, system):
    """A system's staff operate its usage but do not see its allocations' pages: their variance rows name the
    allocation without a link that would answer 404; an admin's link to the same allocation opens it."""
    from allocations.usage.variance import record_usage_report

    allocation = funded_allocation(system, account="airr-00001")
    record_usage_report(system=system, payload=b"Account|User|GrpTRESRaw\nairr-00001||gres/gpu=60\n")
    usage_page = reverse("usage:allocation-usage", args=[allocation.pk])

    client.force_login(make_persona("assessor"))
    html = client.get(reverse("usage:variance")).content.decode()
    assert "airr-00001" in html and usage_page not in html
    assert client.get(usage_page).status_code == 404

    client.force_login(make_persona("admin"))
    assert f'href="{usage_page}"' in client.get(reverse("usage:variance")).content.decode()
    assert client.get(usage_page).status_code == 200


def test_a_batch_in_which_no_run_used_a_gpu_warns_that_slurm_may_not_account_gpus(client, admin, system):
    untracked = ingest_sacct(system=system, payload=payload(sacct_line(1, gpus=None)), source="command").batch
    mixed = ingest_sacct(system=system, payload=payload(sacct_line(2, gpus=0), sacct_line(3)), source="command").batch

    assert (untracked.without_gpus, mixed.without_gpus) == (1, 1)
    warning = "No run in this batch used a GPU"
    assert warning in client.get(reverse("usage:batch-detail", args=[untracked.pk])).content.decode()
    page = client.get(reverse("usage:batch-detail", args=[mixed.pk])).content.decode()
    assert warning not in page and "1 without a GPU" in page


@pytest.mark.parametrize("policy, said", [("return", "Returned to the fund pool"), ("forfeit", "Forfeited")])
def test_an_ended_allocations_figures_add_up_with_the_hours_returned_or_forfeited(client, system, alice, policy, said):
    """Awarded 10, used 4: after its end the page says where the other 6 went, not just 'Remaining 0'."""
    from allocations.usage.thresholds import expire_ended_allocations

    allocation = funded_allocation(system, hours=10, holder=alice, pool_options={"unused_hours_policy": policy})
    ingest_sacct(system=system, payload=payload(sacct_line(1, elapsed=4 * HOUR)), source="command")
    reconcile_system(system=system)
    expire_ended_allocations(today=allocation.end_date + timedelta(days=settings.USAGE_SETTLING_DAYS + 1))
    client.force_login(alice)

    page = client.get(reverse("usage:allocation-usage", args=[allocation.pk])).content.decode()
    data = client.get(reverse("api-allocation-usage", args=[allocation.pk])).json()

    figures = _figures(page)
    assert "Used 4 GPU-hours (40%)" in figures
    assert f"{said} at its end 6 GPU-hours" in figures
    assert "Remaining 0 GPU-hours" in figures
    key = "returned" if policy == "return" else "forfeited"
    assert data["figures"]["gpu_seconds"][key] == 6 * HOUR
