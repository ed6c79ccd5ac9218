"""The usage pages: tokens shown once, uploads, batches and replays, unmatched usage, a PI's usage page."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from allocations import ledger
from allocations.models import IngestBatch, IngestToken, JobRecord, RejectedRow
from allocations.usage.ingest import ingest_sacct
from allocations.usage.reconcile import reconcile_system
from allocations.usage.services import hash_key
from tests.allocations.usage_helpers import HOUR, funded_allocation, payload, sacct_line
from tests.factories import SystemFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media_in_tmp(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


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


def test_a_token_without_a_name_is_refused_with_an_error_summary(client, admin, system):
    response = client.post(reverse("usage:token-create"), {"system": system.pk, "name": ""})

    assert response.status_code == 200
    assert "govuk-error-summary" in response.content.decode()
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


def test_a_row_still_unreadable_on_replay_keeps_its_place_with_the_new_reason(client, admin, system):
    batch = ingest_sacct(system=system, payload=payload(sacct_line(1), "broken"), source="command").batch

    client.post(reverse("usage:batch-replay", args=[batch.pk]))

    row = RejectedRow.objects.get()
    assert row.replayed_at is None and row.replay_outcome.startswith("Still rejected")


def test_an_admin_assigns_an_unmatched_account_and_its_usage_is_charged(
    client, admin, system, django_capture_on_commit_callbacks
):
    allocation = funded_allocation(system)
    ingest_sacct(system=system, payload=payload(sacct_line(1, account="typo-00001")), source="command")
    page = client.get(reverse("usage:unmatched")).content.decode()
    assert "typo-00001" in page and "Assign" in page

    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            reverse("usage:unmatched-assign", args=[system.slug]),
            {"account": "typo-00001", "allocation": allocation.pk},
        )

    assert ledger.net_usage(ledger.allocation_account(allocation)) == HOUR
    assert client.get(reverse("usage:unmatched")).context["accounts"] == []


def test_an_assessor_sees_the_batches_of_their_system_only_and_cannot_assign(client, make_persona, system):
    assessor = make_persona("assessor")
    client.force_login(assessor)
    mine = ingest_sacct(system=system, payload=payload(sacct_line(1)), source="command").batch
    dawn = SystemFactory(slug="dawn")
    theirs = ingest_sacct(system=dawn, payload=payload(sacct_line(2)), source="command").batch

    assert client.get(reverse("usage:batch-detail", args=[mine.pk])).status_code == 200
    assert client.get(reverse("usage:batch-detail", args=[theirs.pk])).status_code == 404
    assert "Assign" not in client.get(reverse("usage:unmatched")).content.decode()


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
    assert response.context["balance"] == 6 * HOUR
    assert len(response.context["page"].object_list) == 3


def test_someone_elses_allocation_is_not_found(client, system, charlie, alice):
    allocation = funded_allocation(system, holder=alice)
    client.force_login(charlie)

    assert client.get(reverse("usage:allocation-usage", args=[allocation.pk])).status_code == 404


def test_an_upload_over_the_limit_is_refused_with_an_error_summary(client, admin, system, settings):
    settings.INGEST_MAX_BYTES = 10
    upload = SimpleUploadedFile("jobs.txt", payload(sacct_line(1)), content_type="text/plain")

    response = client.post(reverse("usage:upload"), {"system": system.pk, "file": upload})

    assert response.status_code == 200
    assert "The file must be smaller than 0 MB" in response.content.decode()
    assert not IngestBatch.objects.exists()
