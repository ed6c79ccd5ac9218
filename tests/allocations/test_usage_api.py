"""The cluster's API: posting job records with an ingest token, and nothing else that token can do."""

import gzip
import io

import pytest
from django.test import Client
from django.urls import reverse

from allocations import ledger
from allocations.models import IngestBatch, JobRecord
from allocations.usage.services import create_ingest_token, revoke_ingest_token
from programmes.models import System
from tests.allocations.usage_helpers import HOUR, funded_allocation, payload, sacct_line
from tests.factories import SystemFactory, UserFactory, give_mfa

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(system):
    _, key = create_ingest_token(system=system, name="cron on login1", actor=None)
    return key


def post(client, system, body, key, **headers):
    return client.generic(
        "POST",
        reverse("usage-ingest", args=[system.slug]),
        body,
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        **headers,
    )


def mixed_payload() -> bytes:
    """A job of an allocation, a job of an account nobody holds, and a line that is not sacct."""
    return payload(sacct_line(1), sacct_line(2, account="nobody"), "garbage")


OUTCOME_OF_MIXED_PAYLOAD = (
    {"new": 2, "updated": 0, "unchanged": 0, "unmatched": 1, "rejected": 1},
    [{"line_number": 4, "reason": "expected 12 fields, found 1: the line may be truncated"}],
)


def outcome_of(body: dict) -> tuple[dict, list]:
    """What an answer says of a payload's rows: its counts and its rejected rows."""
    return {name: body[name] for name in OUTCOME_OF_MIXED_PAYLOAD[0]}, body["rejected_rows"]


def test_a_cluster_posts_sacct_output_and_gets_the_counts(client, system, key, django_capture_on_commit_callbacks):
    allocation = funded_allocation(system)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, system, mixed_payload(), key)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert outcome_of(body) == OUTCOME_OF_MIXED_PAYLOAD
    # Reconciliation ran after the ingest committed (eagerly in tests): the balance moved.
    assert ledger.net_usage(ledger.allocation_account(allocation)) == HOUR


def test_posting_the_same_bytes_again_returns_the_first_counts_and_changes_nothing(client, system, key):
    data = payload(sacct_line(1))
    first = post(client, system, data, key).json()
    response = post(client, system, data, key)

    assert response.status_code == 200
    assert response.json()["batch"] == first["batch"] and response.json()["duplicate"] is True
    assert IngestBatch.objects.count() == 1


def test_a_gzip_body_is_accepted(client, system, key):
    response = post(client, system, gzip.compress(payload(sacct_line(1))), key, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 201
    assert JobRecord.objects.count() == 1


def test_an_empty_body_is_a_400_with_a_reason(client, system, key):
    response = post(client, system, b"", key)

    assert response.status_code == 400
    assert response.json()["errors"] == {"body": ["The body is empty: send sacct output"]}


def test_an_empty_usage_report_is_a_400_that_names_what_to_send(system):
    from tests.allocations.usage_helpers import post_usage_report

    response = post_usage_report(system, b"")

    assert response.status_code == 400
    assert response.json()["errors"] == {"body": ["The body is empty: send sreport or sshare output"]}


@pytest.mark.parametrize(
    ("query", "field"),
    [("delimiter=%00", "delimiter"), ("columns=JobID,Account%00,User", "columns")],
)
def test_a_nul_character_in_the_delimiter_or_the_columns_is_a_400_not_a_500(system, key, query, field):
    client = Client(raise_request_exception=False)
    response = client.generic(
        "POST",
        reverse("usage-ingest", args=[system.slug]) + "?" + query,
        payload(sacct_line(1)),
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )

    assert response.status_code == 400
    assert "NUL" in response.json()["errors"][field][0]
    assert not IngestBatch.objects.exists()


def test_an_unreadable_payload_is_a_400_and_is_kept(client, system, key):
    response = post(client, system, b"\xff\xfe\x00 not sacct", key)

    assert response.status_code == 400
    assert response.json()["code"] == "unreadable_payload"
    assert IngestBatch.objects.get().status == "failed"


def test_a_body_over_the_limit_is_refused_with_413_before_it_is_read(client, system, key):
    class EndlessBody(io.RawIOBase):
        """200 MB of sacct lines that are never materialised: it counts what the server reads."""

        read_bytes = 0

        def readinto(self, buffer):
            chunk = (sacct_line(1) + "\n").encode() * (len(buffer) // 120 + 1)
            size = min(len(buffer), len(chunk))
            buffer[:size] = chunk[:size]
            self.read_bytes += size
            return size

    body = EndlessBody()
    response = client.generic(
        "POST",
        reverse("usage-ingest", args=[system.slug]),
        b"",
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        CONTENT_LENGTH=str(200 * 1024 * 1024),
        **{"wsgi.input": body},
    )

    assert response.status_code == 413
    assert "larger than 100 MB" in response.json()["detail"]
    assert body.read_bytes < 1024 * 1024


def test_a_body_without_a_truthful_length_is_cut_off_at_the_limit(client, system, key, settings):
    settings.INGEST_MAX_BYTES = 1000
    response = post(client, system, payload(*[sacct_line(n) for n in range(100)]), key)

    assert response.status_code == 413
    assert not JobRecord.objects.exists()


@pytest.mark.parametrize("endpoint", ["usage-ingest", "usage-report"])
def test_more_query_parameters_than_django_reads_are_a_json_400(client, system, key, settings, endpoint):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    query = "&".join(f"option{n}=x" for n in range(9))

    response = client.generic(
        "POST",
        f"{reverse(endpoint, args=[system.slug])}?{query}",
        payload(sacct_line(1)),
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )

    assert response.status_code == 400
    assert response.json()["code"] == "too_many_fields"
    assert "more than 5 query parameters or form fields" in response.json()["detail"]
    assert not IngestBatch.objects.exists()


@pytest.mark.parametrize("encoding", ["multipart/form-data; boundary=form", "application/x-www-form-urlencoded"])
def test_a_form_body_with_more_fields_than_django_reads_is_read_as_the_payload_not_as_fields(
    client, system, key, settings, encoding
):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 5
    if encoding.startswith("multipart"):
        parts = [f'--form\r\nContent-Disposition: form-data; name="field{n}"\r\n\r\nx\r\n' for n in range(9)]
        body = "".join(parts) + "--form--\r\n"
    else:
        body = "&".join(f"field{n}=x" for n in range(9))

    response = client.generic(
        "POST",
        reverse("usage-ingest", args=[system.slug]),
        body,
        content_type=encoding,
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )

    # The API has no parsers: any body is sacct output or nothing, and this one is nothing.
    assert response.status_code == 400
    assert response.json()["code"] == "unreadable_payload"
    assert not JobRecord.objects.exists()


def test_a_wrong_token_is_401(client, system):
    response = post(client, system, payload(sacct_line(1)), "airr_ingest_not-a-real-key")

    assert response.status_code == 401
    assert response.json()["detail"] == "The ingest token is not valid or has been revoked"


def test_a_revoked_token_is_401(client, system):
    token, key = create_ingest_token(system=system, name="old", actor=None)
    revoke_ingest_token(token=token, actor=None)

    assert post(client, system, payload(sacct_line(1)), key).status_code == 401


def test_a_token_of_another_system_is_403_and_names_both(client, system):
    dawn = SystemFactory(slug="dawn", name="Dawn")
    _, key = create_ingest_token(system=dawn, name="dawn cron", actor=None)

    response = post(client, system, payload(sacct_line(1)), key)

    assert response.status_code == 403
    assert response.json()["detail"] == "This token belongs to dawn, not to isambard-ai"
    assert not JobRecord.objects.exists()


def test_no_credentials_is_401(client, system):
    response = client.generic("POST", reverse("usage-ingest", args=[system.slug]), b"x", content_type="text/plain")

    assert response.status_code == 401


def test_an_ingest_token_can_do_nothing_else(client, system, key):
    for url in ("/api/me/", "/api/pools/", "/api/programmes/", reverse("allocations:pool-list")):
        response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {key}")
        assert response.status_code in (302, 401, 403), url
        assert response.status_code != 200


def test_an_admin_session_is_not_a_credential_for_the_cluster_endpoint(client, system):
    admin = UserFactory(is_staff=True)
    give_mfa(admin)
    client.force_login(admin)

    response = client.generic("POST", reverse("usage-ingest", args=[system.slug]), b"x", content_type="text/plain")

    assert response.status_code == 401
    assert not IngestBatch.objects.exists()


def test_the_limits_are_read_with_the_systems_token(client, system, key):
    funded_allocation(system, account="airr-00001", hours=10)
    response = client.get(reverse("system-limits", args=[system.slug]), HTTP_AUTHORIZATION=f"Bearer {key}")

    assert response.status_code == 200
    [limit] = response.json()["accounts"]
    assert (limit["account"], limit["state"], limit["gpu_minutes_limit"]) == ("airr-00001", "active", 600)


# Prefer: respond-async: the payload is stored, a worker reads it, the cluster polls the batch -----------------


def post_async(client, system, body, key, prefer="respond-async", **headers):
    return post(client, system, body, key, HTTP_PREFER=prefer, **headers)


def poll(client, response, key):
    return client.get(response["Location"], HTTP_AUTHORIZATION=f"Bearer {key}")


def test_a_cluster_that_prefers_not_to_wait_gets_202_and_then_the_counts_from_the_batch(
    client, system, key, django_capture_on_commit_callbacks
):
    allocation = funded_allocation(system)
    with django_capture_on_commit_callbacks() as queued:
        response = post_async(client, system, mixed_payload(), key)

    assert response.status_code == 202, response.json()
    assert response["Preference-Applied"] == "respond-async"
    batch = IngestBatch.objects.get()
    assert response["Location"] == f"http://testserver/api/systems/{system.slug}/usage/batches/{batch.pk}/"
    assert response.json()["status_url"] == response["Location"]
    assert (response.json()["batch"], response.json()["status"]) == (batch.pk, "received")
    # Stored and recorded, not yet read: no job, no charge, and the batch says so.
    assert not JobRecord.objects.exists()
    waiting = poll(client, response, key)
    assert waiting.status_code == 200
    assert (waiting.json()["status"], waiting.json()["new"]) == ("received", 0)

    for run_task in queued:  # the worker's turn (tasks run in process in tests)
        run_task()

    done = poll(client, response, key).json()
    assert done["status"] == "ingested"
    assert outcome_of(done) == OUTCOME_OF_MIXED_PAYLOAD
    assert done["error"] == ""
    # The worker reconciled after reading: the balance moved.
    assert ledger.net_usage(ledger.allocation_account(allocation)) == HOUR


@pytest.mark.parametrize("prefer", ["wait=10, respond-async", "RESPOND-ASYNC", "respond-async; x=1"])
def test_respond_async_is_read_among_other_preferences(client, system, key, prefer):
    assert post_async(client, system, payload(sacct_line(1)), key, prefer=prefer).status_code == 202


@pytest.mark.parametrize("prefer", ["return=minimal", "respond-asyncx", ""])
def test_without_respond_async_the_rows_are_read_within_the_request(client, system, key, prefer):
    response = post_async(client, system, payload(sacct_line(1)), key, prefer=prefer)

    assert response.status_code == 201
    assert "Preference-Applied" not in response
    assert JobRecord.objects.count() == 1


def test_bytes_already_read_answer_their_counts_at_once_even_asynchronously(client, system, key):
    data = payload(sacct_line(1))
    first = post(client, system, data, key).json()

    response = post_async(client, system, data, key)

    assert response.status_code == 200
    assert (response.json()["batch"], response.json()["duplicate"], response.json()["new"]) == (first["batch"], True, 1)


def test_bytes_still_waiting_are_queued_again_on_the_same_batch(
    client, system, key, django_capture_on_commit_callbacks
):
    data = payload(sacct_line(1))
    with django_capture_on_commit_callbacks() as first_queued:
        first = post_async(client, system, data, key)
    with django_capture_on_commit_callbacks() as again_queued:
        again = post_async(client, system, data, key)

    assert again.status_code == 202
    assert again.json()["batch"] == first.json()["batch"] and again.json()["duplicate"] is True
    assert len(first_queued) == len(again_queued) == 1
    for run_task in [*first_queued, *again_queued]:  # a batch is read once, however often it is queued
        run_task()
    assert poll(client, first, key).json()["new"] == 1
    assert JobRecord.objects.count() == 1


def test_bytes_still_waiting_posted_again_without_waiting_are_read_answered_as_new_and_charged(
    client, system, key, django_capture_on_commit_callbacks
):
    from allocations.usage.ingest import receive_payload

    allocation = funded_allocation(system)
    data = payload(sacct_line(1))
    waiting = receive_payload(system=system, payload=data, source="api").batch  # its reading lost, say
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, system, data, key)

    assert response.status_code == 201, response.json()
    assert response.json()["batch"] == waiting.pk and response.json()["duplicate"] is False
    assert response.json()["new"] == 1
    assert ledger.net_usage(ledger.allocation_account(allocation)) == HOUR  # reconciled, not left to the beat


def test_an_unreadable_payload_shows_failed_with_its_reason(client, system, key, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_async(client, system, b"\xff\xfe\x00 not sacct", key)

    assert response.status_code == 202
    failed = poll(client, response, key).json()
    assert failed["status"] == "failed"
    assert failed["error"] == "line 1, the first line, is not valid UTF-8"


def test_bytes_that_failed_are_read_again_with_the_column_names_their_error_asked_for(
    client, system, key, django_capture_on_commit_callbacks
):
    headerless = payload(sacct_line(1)).split(b"\n", 1)[1]  # sacct --noheader
    refused = post(client, system, headerless, key)
    assert refused.status_code == 400 and "pass the column names" in refused.json()["detail"]

    columns = "JobID,JobIDRaw,Cluster,Account,User,State,Submit,Start,End,ElapsedRaw,AllocTRES,JobName"
    with django_capture_on_commit_callbacks(execute=True):
        response = client.generic(
            "POST",
            reverse("usage-ingest", args=[system.slug]) + f"?columns={columns}",
            headerless,
            content_type="text/plain",
            HTTP_AUTHORIZATION=f"Bearer {key}",
        )

    assert response.status_code == 201, response.json()
    assert (response.json()["batch"], response.json()["duplicate"]) == (IngestBatch.objects.get().pk, False)
    assert response.json()["new"] == 1 and JobRecord.objects.count() == 1
    # Read now: the same bytes again change nothing.
    assert post(client, system, headerless, key).json()["duplicate"] is True


def test_a_payload_too_large_once_unzipped_is_a_413_and_is_read_once_the_limit_allows(client, system, key, settings):
    body = gzip.compress(payload(*[sacct_line(n) for n in range(1, 200)]))
    settings.INGEST_MAX_UNCOMPRESSED_BYTES = 10_000

    refused = post(client, system, body, key, HTTP_CONTENT_ENCODING="gzip")

    assert refused.status_code == 413
    assert refused.json()["detail"].startswith("The payload expands to more than")
    settings.INGEST_MAX_UNCOMPRESSED_BYTES = 10_000_000
    response = post(client, system, body, key, HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 201 and response.json()["new"] == 199


def test_a_json_payload_over_its_own_lower_limit_is_a_413_before_it_is_held_in_memory(client, system, key, settings):
    """JSON is read whole, at some 25 times its size: a small gzip of `{},` repeated must not take a worker's memory."""
    bomb = gzip.compress(b'{"jobs": [' + b"{}," * 5_000 + b"{}]}")
    settings.INGEST_MAX_JSON_BYTES = 10_000

    refused = post(client, system, bomb, key, HTTP_CONTENT_ENCODING="gzip")

    assert refused.status_code == 413
    assert "sacct --json payload is read whole, and this one is over" in refused.json()["detail"]
    assert IngestBatch.objects.get().status == "failed"
    assert not JobRecord.objects.exists()
    # Text of the same size is read line by line, and goes through.
    text = payload(*[sacct_line(n) for n in range(1, 200)])
    assert len(text) > 10_000
    assert post(client, system, text, key).json()["new"] == 199


def test_a_batch_is_read_only_with_its_systems_token_or_by_an_admin(client, system, key):
    dawn = SystemFactory(slug="dawn", name="Dawn")
    _, dawn_key = create_ingest_token(system=dawn, name="dawn cron", actor=None)
    dawn_batch = post(client, dawn, payload(sacct_line(1)), dawn_key).json()["batch"]
    batch = post(client, system, payload(sacct_line(1)), key).json()["batch"]
    url = reverse("usage-batch", args=[system.slug, batch])

    assert client.get(url).status_code == 401
    another_systems_token = client.get(url, HTTP_AUTHORIZATION=f"Bearer {dawn_key}")
    assert another_systems_token.status_code == 403
    assert another_systems_token.json()["detail"] == "This token belongs to dawn, not to isambard-ai"
    # Dawn's batch through this system's address: no such batch here.
    assert (
        client.get(
            reverse("usage-batch", args=[system.slug, dawn_batch]), HTTP_AUTHORIZATION=f"Bearer {key}"
        ).status_code
        == 404
    )
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {key}").json()["batch"] == batch
    admin = UserFactory(is_staff=True)
    give_mfa(admin)
    client.force_login(admin)
    assert client.get(url).json()["new"] == 1


def test_a_batch_marked_as_dealt_with_says_when_and_why_to_its_systems_token_and_who_only_to_an_admin(
    client, system, key
):
    from django.utils.dateparse import parse_datetime

    from allocations.usage.services import mark_batch_dealt_with

    assert post(client, system, b"Not sacct output\n", key).status_code == 400
    failed = IngestBatch.objects.get()
    url = reverse("usage-batch", args=[system.slug, failed.pk])
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {key}").json()["dealt_with"] is None
    admin = UserFactory(is_staff=True, email="operator@example.ac.uk")
    give_mfa(admin)
    failed = mark_batch_dealt_with(batch=failed, note="Uploaded by mistake", actor=admin)

    to_token = client.get(url, HTTP_AUTHORIZATION=f"Bearer {key}").json()
    client.force_login(admin)
    to_admin = client.get(url).json()

    assert (to_token["status"], to_token["batch"]) == ("failed", failed.pk)  # the fields it had stay as they were
    assert parse_datetime(to_token["dealt_with"]["at"]) == failed.dealt_with_at
    assert to_token["dealt_with"] == {"at": to_token["dealt_with"]["at"], "by": None, "note": "Uploaded by mistake"}
    assert to_admin["dealt_with"] == {**to_token["dealt_with"], "by": "operator@example.ac.uk"}


def test_the_beat_reads_again_a_batch_whose_reading_was_lost_for_a_day_and_no_longer(system):
    from datetime import timedelta

    from django.utils import timezone

    from allocations.tasks import ingest_stalled_batches_task
    from allocations.usage.ingest import receive_payload

    def batch_received(job: int, minutes_ago: int):
        batch = receive_payload(system=system, payload=payload(sacct_line(job)), source="api").batch
        IngestBatch.objects.filter(pk=batch.pk).update(received_at=timezone.now() - timedelta(minutes=minutes_ago))
        return batch

    lost = batch_received(1, minutes_ago=20)
    being_read = batch_received(2, minutes_ago=5)
    given_up = batch_received(3, minutes_ago=25 * 60)

    assert ingest_stalled_batches_task() == 1

    statuses = dict(IngestBatch.objects.values_list("pk", "status"))
    assert statuses == {lost.pk: "ingested", being_read.pk: "received", given_up.pk: "received"}
    assert list(JobRecord.objects.values_list("job_id", flat=True)) == ["1"]
    assert ingest_stalled_batches_task() == 0  # read once


def test_the_beat_reads_again_a_failed_batch_whose_bytes_were_posted_again_timed_from_then(system, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from allocations.tasks import ingest_stalled_batches_task
    from allocations.usage.ingest import receive_payload

    data = payload(sacct_line(1))
    failed = receive_payload(system=system, payload=data, source="api").batch
    three_days_ago = timezone.now() - timedelta(days=3)
    IngestBatch.objects.filter(pk=failed.pk).update(status="failed", error="Not sacct", received_at=three_days_ago)
    reopened = receive_payload(system=system, payload=data, source="api").batch  # posted again; its reading lost
    assert (reopened.pk, reopened.status, reopened.received_at) == (failed.pk, "received", three_days_ago)

    assert ingest_stalled_batches_task() == 0  # posted a moment ago: being read
    twenty_minutes_later = timezone.now() + timedelta(minutes=20)
    monkeypatch.setattr(timezone, "now", lambda: twenty_minutes_later)

    assert ingest_stalled_batches_task() == 1
    assert IngestBatch.objects.get(pk=failed.pk).status == "ingested"
    assert list(JobRecord.objects.values_list("job_id", flat=True)) == ["1"]


def test_sacct_output_split_by_commas_is_a_400_not_jobs_charged_nothing(client, system, key):
    header = "JobID,JobIDRaw,Cluster,Account,User,State,Submit,Start,End,ElapsedRaw,AllocTRES,JobName"
    row = sacct_line(1).replace("|", ",")  # sacct --delimiter=, : AllocTRES's own commas split it apart

    response = post(client, system, f"{header}\n{row}\n".encode(), key)

    assert response.status_code == 400
    assert response.json()["detail"].startswith("',' cannot be the delimiter")
    assert not JobRecord.objects.exists()


def test_a_mistyped_system_time_zone_is_a_400_that_says_so_and_the_batch_is_read_once_corrected(
    client, system, key, django_capture_on_commit_callbacks
):
    from django.core.exceptions import ValidationError

    system.time_zone = "Europe/Londn"
    with pytest.raises(ValidationError, match="Enter a time zone of the IANA database"):
        system.full_clean()
    System.objects.filter(pk=system.pk).update(time_zone="Europe/Londn")  # as it might be from before the check
    data = payload(sacct_line(1))

    response = post(client, system, data, key)

    assert response.status_code == 400
    assert response.json()["detail"].startswith("Isambard-AI's time zone 'Europe/Londn' is not a known time zone")
    assert IngestBatch.objects.get().status == "failed"
    System.objects.filter(pk=system.pk).update(time_zone="Europe/London")
    assert post(client, system, data, key).status_code == 201
    assert JobRecord.objects.count() == 1


# When the broker is down -----------------------------------------------------------------------------------


@pytest.mark.parametrize("prefer", [None, "respond-async"])
def test_a_post_while_the_broker_is_down_is_stored_and_answered_and_the_beat_catches_up(
    client, system, key, prefer, django_capture_on_commit_callbacks, caplog
):
    """The rows (or the payload) are committed before any task is queued: a broker that cannot take the task
    must not turn the answer into a 500, which would tell the cluster its post failed. The beat reconciles every
    system, and reads a batch left unread, when the broker is back."""
    from unittest import mock

    from kombu.exceptions import OperationalError

    down = OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    headers = {"HTTP_PREFER": prefer} if prefer else {}
    with (
        mock.patch("celery.app.task.Task.apply_async", side_effect=down),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = post(client, system, payload(sacct_line(1)), key, **headers)

    assert response.status_code == (202 if prefer else 201), response.content
    batch = IngestBatch.objects.get()
    assert batch.status == ("received" if prefer else "ingested")
    assert "could not be queued" in caplog.text
