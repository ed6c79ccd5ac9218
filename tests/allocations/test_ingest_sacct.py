"""Ingesting sacct payloads: stored raw first, one record per run, rejected rows kept, counts that add up."""

import gzip
import os
import sys
import threading
from collections import defaultdict
from datetime import date
from pathlib import Path

import pytest
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from allocations.models import IngestBatch, JobRecord, RejectedRow
from allocations.usage.ingest import IngestError, ingest_sacct, process_batch, receive_payload
from tests.allocations.test_sacct_parser import json_job, json_payload
from tests.allocations.test_sacct_real_data import HABROK_COLUMNS, SNOWMAN, seconds_of, untyped_gpus
from tests.allocations.usage_helpers import funded_allocation, payload, sacct_line, sacct_sample
from tests.factories import SystemFactory

pytestmark = pytest.mark.django_db


def ingest(system, data, **options):
    return ingest_sacct(system=system, payload=data, source="command", **options)


def test_it_records_one_job_per_run_and_counts_new_rows(system):
    funded_allocation(system)
    outcome = ingest(system, payload(sacct_line(1, gpus=4), sacct_line(2, gpus=2, elapsed=60)))

    assert outcome.batch.counts() == {
        "new": 2,
        "updated": 0,
        "unchanged": 0,
        "unmatched": 0,
        "rejected": 0,
        "never_started": 0,
        "without_gpus": 0,
    }
    assert sorted(JobRecord.objects.values_list("job_id", "gpu_seconds")) == [("1", 4 * 3600), ("2", 120)]


def test_it_stores_the_payload_as_received_before_reading_it_and_compresses_it_while_reading(system, monkeypatch):
    from allocations.usage import ingest as ingest_module

    data = payload(sacct_line(1))
    seen = {}
    record_rows = ingest_module._record_rows

    def record_rows_noting_what_is_stored(*, batch, rows, seq, **options):
        seen["stored"] = (Path(settings.MEDIA_ROOT) / batch.raw_path).read_bytes()
        seen["batch"] = IngestBatch.objects.filter(pk=batch.pk).exists()
        return record_rows(batch=batch, rows=rows, seq=seq, **options)

    monkeypatch.setattr(ingest_module, "_record_rows", record_rows_noting_what_is_stored)
    outcome = ingest(system, data)

    assert seen == {"stored": data, "batch": True}
    stored = Path(settings.MEDIA_ROOT) / outcome.batch.raw_path
    assert stored.suffix == ".gz" and gzip.decompress(stored.read_bytes()) == data
    assert IngestBatch.objects.get().raw_path == outcome.batch.raw_path
    # Only the compressed copy is kept.
    assert [path.name for path in stored.parent.iterdir()] == [stored.name]
    assert outcome.batch.size == len(data)


def test_a_gzip_payload_is_stored_as_it_came(system):
    data = gzip.compress(payload(sacct_line(1)))
    outcome = ingest(system, data)

    assert (Path(settings.MEDIA_ROOT) / outcome.batch.raw_path).read_bytes() == data
    assert outcome.batch.size == len(data)


def test_a_batch_read_from_the_database_before_its_payload_was_compressed_still_opens_it(system):
    from allocations.usage.ingest import open_raw, receive_payload

    data = payload(sacct_line(1))
    stale = receive_payload(system=system, payload=data, source="command").batch
    assert stale.raw_path.endswith(".raw")
    ingest(system, data)  # the same bytes: reads the batch received above, and compresses its payload

    assert not (Path(settings.MEDIA_ROOT) / stale.raw_path).exists()
    with open_raw(stale) as raw:
        assert raw.read() == data


def test_a_payload_that_cannot_be_read_keeps_its_plain_copy(system):
    from allocations.usage.ingest import open_raw

    data = b"JobID|State\n1|COMPLETED\n"
    with pytest.raises(IngestError):
        ingest(system, data)

    batch = IngestBatch.objects.get()
    assert batch.raw_path.endswith(".raw")
    with open_raw(batch) as raw:
        assert raw.read() == data


def test_rows_are_recorded_when_the_payload_cannot_be_compressed(system, monkeypatch, caplog):
    from allocations.usage import ingest as ingest_module

    def disk_full(plain):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ingest_module, "_gzip_file", disk_full)
    data = payload(sacct_line(1))
    outcome = ingest(system, data)

    assert outcome.batch.status == "ingested" and JobRecord.objects.count() == 1
    assert IngestBatch.objects.get().raw_path.endswith(".raw")
    assert (Path(settings.MEDIA_ROOT) / outcome.batch.raw_path).read_bytes() == data
    assert "stays uncompressed" in caplog.text


@pytest.mark.skipif(sys.platform != "linux", reason="a priority per thread is Linux's")
def test_a_payload_is_compressed_at_the_lowest_cpu_priority_and_the_ingest_keeps_its_own(system, monkeypatch):
    """The compression runs beside the reading of the rows: on a host with few cores, at the same priority, it
    slowed both the reading and the database."""
    from allocations.usage import ingest as ingest_module

    compress = ingest_module._gzip_file
    priorities = []

    def compressing(plain):
        stored = compress(plain)
        priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return stored

    monkeypatch.setattr(ingest_module, "_gzip_file", compressing)
    own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    outcome = ingest(system, payload(sacct_line(1)))

    assert priorities == [19]
    assert outcome.batch.raw_path.endswith(".gz")
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == own


def test_a_payload_posted_again_leaves_one_stored_file(system):
    data = payload(sacct_line(1))
    first = ingest(system, data)
    ingest(system, data)

    folder = (Path(settings.MEDIA_ROOT) / first.batch.raw_path).parent
    assert [path.name for path in folder.iterdir()] == [Path(first.batch.raw_path).name]


def test_a_byte_identical_payload_is_a_no_op_that_returns_the_first_batch(system):
    data = payload(sacct_line(1))
    first = ingest(system, data)
    second = ingest(system, data)

    assert second.is_duplicate and second.batch.pk == first.batch.pk
    assert IngestBatch.objects.count() == 1
    assert JobRecord.objects.count() == 1


def test_a_payload_recorded_meanwhile_by_another_request_leaves_one_stored_file(system, monkeypatch):
    from django.db.models import QuerySet

    from allocations.usage.ingest import receive_payload

    data = payload(sacct_line(1))
    first = ingest(system, data)  # recorded, and its payload compressed
    look_up = QuerySet.first
    looked = []

    def not_yet_recorded_at_first_look(queryset):
        # As if the other request recorded the batch between this one's look and its insert.
        if queryset.model is IngestBatch and not looked:
            looked.append(queryset)
            return None
        return look_up(queryset)

    monkeypatch.setattr(QuerySet, "first", not_yet_recorded_at_first_look)
    outcome = receive_payload(system=system, payload=data, source="api")

    assert looked and outcome.is_duplicate and outcome.batch.pk == first.batch.pk
    folder = (Path(settings.MEDIA_ROOT) / first.batch.raw_path).parent
    assert [path.name for path in folder.iterdir()] == [Path(first.batch.raw_path).name]


def test_the_same_rows_in_a_new_payload_are_unchanged_and_keep_their_change_number(system):
    ingest(system, payload(sacct_line(1), sacct_line(2)))
    before = dict(JobRecord.objects.values_list("job_id", "changed_seq"))

    outcome = ingest(system, payload(sacct_line(2), sacct_line(1), sacct_line(3)))

    assert (outcome.batch.new, outcome.batch.updated, outcome.batch.unchanged) == (1, 0, 2)
    after = dict(JobRecord.objects.values_list("job_id", "changed_seq"))
    assert after["1"] == before["1"] and after["2"] == before["2"]
    assert after["3"] > before["1"]


def test_a_running_job_reported_again_when_it_ends_is_updated_not_duplicated(system):
    ingest(system, payload(sacct_line(1, state="RUNNING", end="Unknown", elapsed=600)))
    assert JobRecord.objects.get().is_running

    outcome = ingest(system, payload(sacct_line(1, state="COMPLETED", elapsed=3600)))

    assert (outcome.batch.new, outcome.batch.updated) == (0, 1)
    record = JobRecord.objects.get()
    assert (record.state, record.gpu_seconds, record.is_running) == ("COMPLETED", 3600, False)


@pytest.mark.parametrize("newer_chunks", [False, True], ids=["merged", "copied straight"])
def test_a_batch_read_after_a_batch_received_later_does_not_put_back_its_older_report_of_a_run(
    system, monkeypatch, newer_chunks
):
    # Batches are read by workers in any order (and one whose reading was lost, by the beat up to a day later):
    # the report of a run by a batch received later is the newer one, whichever was read first.
    if newer_chunks:
        monkeypatch.setattr("allocations.usage.ingest.COPY_CHUNK_ROWS", 1)
        monkeypatch.setattr("allocations.usage.ingest.CHUNK_ROWS", 1)
    funded_allocation(system)
    older = receive_payload(
        system=system,
        payload=payload(sacct_line(1, state="RUNNING", end="Unknown", elapsed=600), sacct_line(2)),
        source="api",
    ).batch
    ingest(system, payload(sacct_line(1, state="COMPLETED", elapsed=3600)))

    process_batch(batch=older)

    record = JobRecord.objects.get(job_id="1")
    assert (record.state, record.gpu_seconds, record.is_running) == ("COMPLETED", 3600, False)
    older.refresh_from_db()
    assert (older.new, older.updated, older.unchanged) == (1, 0, 1)


@pytest.mark.parametrize("newer_chunks", [False, True], ids=["merged", "copied straight"])
def test_a_run_that_has_ended_is_not_put_back_to_running_by_a_stale_report_received_later(
    system, monkeypatch, newer_chunks
):
    # A run (JobIDRaw, Start) that ended never runs again, so a report of it running is older whenever it
    # arrives: a file saved earlier and loaded late, or a slow sacct whose post lands after a quicker one's.
    if newer_chunks:
        monkeypatch.setattr("allocations.usage.ingest.COPY_CHUNK_ROWS", 1)
        monkeypatch.setattr("allocations.usage.ingest.CHUNK_ROWS", 1)
    funded_allocation(system)
    ingest(system, payload(sacct_line(1, state="COMPLETED", elapsed=3600)))

    outcome = ingest(system, payload(sacct_line(2), sacct_line(1, state="RUNNING", end="Unknown", elapsed=600)))

    record = JobRecord.objects.get(job_id="1")
    assert (record.state, record.gpu_seconds, record.is_running) == ("COMPLETED", 3600, False)
    assert (outcome.batch.new, outcome.batch.updated, outcome.batch.unchanged) == (1, 0, 1)


@pytest.mark.parametrize("chunk_rows", [1, 5000], ids=["a chunk each", "one chunk"])
def test_a_payload_reporting_a_run_ended_then_running_keeps_it_ended_wherever_the_chunks_fall(
    system, monkeypatch, chunk_rows
):
    # Two sacct outputs joined in one file: the later line is the older report, as it would be across payloads.
    monkeypatch.setattr("allocations.usage.ingest.COPY_CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr("allocations.usage.ingest.CHUNK_ROWS", chunk_rows)
    funded_allocation(system)

    outcome = ingest(
        system,
        payload(sacct_line(1, elapsed=3600), sacct_line(1, state="RUNNING", end="Unknown", elapsed=600)),
    )

    record = JobRecord.objects.get(job_id="1")
    assert (record.state, record.gpu_seconds, record.is_running) == ("COMPLETED", 3600, False)
    assert (outcome.batch.new, outcome.batch.updated, outcome.batch.unchanged) == (1, 0, 1)


def test_a_requeued_job_is_one_record_per_start(system):
    outcome = ingest(
        system,
        payload(
            sacct_line(7, state="REQUEUED", start="2026-03-01T10:00:00", end="2026-03-01T10:10:00", elapsed=600),
            sacct_line(7, start="2026-03-01T11:00:00", end="2026-03-01T12:00:00", elapsed=3600),
        ),
    )

    assert outcome.batch.new == 2
    assert sorted(JobRecord.objects.values_list("gpu_seconds", flat=True)) == [600, 3600]


def test_a_job_that_never_started_is_counted_but_not_recorded(system):
    outcome = ingest(system, payload(sacct_line(1, state="CANCELLED by 1234", start="None", end="None", elapsed=0)))

    assert (outcome.batch.never_started, outcome.batch.new) == (1, 0)
    assert not JobRecord.objects.exists()


def test_usage_for_an_account_no_allocation_owns_is_recorded_as_unmatched(system):
    allocation = funded_allocation(system, account="airr-00001")
    outcome = ingest(system, payload(sacct_line(1, account="airr-00001"), sacct_line(2, account="nobody")))

    assert (outcome.batch.new, outcome.batch.unmatched) == (2, 1)
    assert dict(JobRecord.objects.values_list("account", "allocation")) == {
        "airr-00001": allocation.pk,
        "nobody": None,
    }


def test_a_job_outside_the_allocation_window_is_recorded_and_flagged(system):
    allocation = funded_allocation(system)
    late = allocation.end_date.replace(year=allocation.end_date.year + 1)
    ingest(system, payload(sacct_line(1, start=f"{late}T10:00:00", end=f"{late}T11:00:00")))

    record = JobRecord.objects.get()
    assert record.is_outside_window and record.allocation == allocation


def test_the_charge_factor_is_applied_once_per_job_and_rounded(system):
    system.charge_factor = "1.5"
    system.save()
    ingest(system, payload(sacct_line(1, gpus=1, elapsed=3)))

    assert JobRecord.objects.get().gpu_seconds == 5  # 4.5 rounds half up once, not per GPU


def test_gzip_payloads_are_read(system):
    outcome = ingest(system, gzip.compress(payload(sacct_line(1), sacct_line(2))))

    assert outcome.batch.new == 2


BAD_LINES = {
    "truncated": (
        "1|1|isambard-ai|airr-00001|alice|COMPLETED|2026-03-01T09:00:00|2026",
        "expected 12 fields",
    ),
    "bad date": (sacct_line(2, start="yesterday"), "Start 'yesterday' is not a date and time"),
    "negative elapsed": (sacct_line(3, elapsed=-5), "ElapsedRaw '-5' is not a whole number"),
    "huge elapsed": (sacct_line(4, elapsed=10**30), "ElapsedRaw"),
    "bad tres": (sacct_line(5).replace("gres/gpu=1", "gres/gpu=lots"), "gres/gpu"),
}


def test_bad_rows_are_kept_with_line_numbers_and_reasons_and_do_not_block_good_ones(system):
    bad = [line for line, _ in BAD_LINES.values()]
    data = payload(sacct_line(100), *bad, sacct_line(101, name="a|name|with|pipes")) + b"\xff\xfe|broken\n"
    outcome = ingest(system, data)

    rejected = list(RejectedRow.objects.order_by("line_number").values_list("line_number", "reason"))
    assert [number for number, _ in rejected] == [3, 4, 5, 6, 7, 9]
    for (_, expected), (_, reason) in zip(BAD_LINES.values(), rejected, strict=False):
        assert expected in reason
    assert rejected[-1][1] == "the line is not valid UTF-8"
    assert (outcome.batch.new, outcome.batch.rejected) == (2, 6)
    assert JobRecord.objects.get(job_id="101").job_name == "a|name|with|pipes"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"JobID|State\n1|COMPLETED\n", "lacks required columns"),
        (b"\x1f\x8b\x08\x00garbage", "gzip"),
    ],
)
def test_an_unreadable_payload_is_stored_and_refused_with_a_reason(system, data, message):
    with pytest.raises(IngestError, match=message):
        ingest(system, data)

    batch = IngestBatch.objects.get()
    assert batch.status == "failed" and message in batch.error


def test_a_failed_payload_loses_nothing_accepted_earlier(system):
    ingest(system, payload(sacct_line(1)))
    with pytest.raises(IngestError):
        ingest(system, b"JobID|State\n2|COMPLETED\n")

    assert list(JobRecord.objects.values_list("job_id", flat=True)) == ["1"]


def habrok_with_accounts() -> bytes:
    """The real Habrok file with an Account column added (it has none): one account per user."""
    lines = sacct_sample("habrok-hb-jobinfo-sacct.txt").read_text(encoding="utf-8").split("\n")
    return "\n".join(f"{line}acct-{line.split(SNOWMAN)[2]}{SNOWMAN}" if line else line for line in lines).encode()


def expected_habrok_seconds() -> dict[str, int]:
    """Per-account GPU-seconds worked out here from the rules, straight from the file's fields."""
    text = sacct_sample("habrok-hb-jobinfo-sacct.txt").read_text(encoding="utf-8")
    expected = defaultdict(int)
    for line in filter(None, text.split("\n")):
        fields = line.split(SNOWMAN)
        is_step = "." in fields[0]
        never_ran = fields[10] in ("None", "Unknown")
        if not is_step and not never_ran:
            expected[f"acct-{fields[2]}"] += untyped_gpus(fields[22]) * seconds_of(fields[13])
    return dict(expected)


def test_the_real_habrok_file_records_the_gpu_seconds_worked_out_from_its_fields(system):
    outcome = ingest(system, habrok_with_accounts(), columns=[*HABROK_COLUMNS, "Account"])

    recorded = defaultdict(int)
    for account, seconds in JobRecord.objects.values_list("account", "gpu_seconds"):
        recorded[account] += seconds
    assert dict(recorded) == expected_habrok_seconds()
    assert sum(recorded.values()) == 793_454
    assert (outcome.batch.new, outcome.batch.never_started, outcome.batch.rejected) == (90, 10, 0)
    assert outcome.batch.skipped_steps == 142
    assert JobRecord.objects.filter(end__isnull=True).count() == 3


def test_ingesting_the_real_habrok_file_twice_in_another_payload_changes_nothing(system):
    data = habrok_with_accounts()
    ingest(system, data, columns=[*HABROK_COLUMNS, "Account"])
    again = ingest(system, gzip.compress(data), columns=[*HABROK_COLUMNS, "Account"])

    assert not again.is_duplicate
    assert (again.batch.new, again.batch.updated, again.batch.unchanged) == (0, 0, 90)


_sacct_lines = st.lists(
    st.one_of(
        st.builds(
            lambda job, gpus, elapsed, name: sacct_line(job, gpus=gpus, elapsed=elapsed, name=name),
            st.integers(1, 50),
            st.integers(0, 10**6),
            st.integers(0, 10**12),
            st.text(max_size=20),
        ),
        st.text(max_size=120),
    ),
    max_size=15,
)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=_sacct_lines, tail=st.binary(max_size=40))
def test_whatever_a_cluster_sends_is_recorded_rejected_or_refused_never_an_error(system, lines, tail):
    data = payload(*lines) + tail
    try:
        outcome = ingest(system, data)
    except IngestError:
        assert IngestBatch.objects.filter(status="failed").exists()
        return
    batch = outcome.batch
    assert batch.status == "ingested"
    if outcome.is_duplicate:
        return  # the same bytes as an earlier example: its records may have moved on since
    assert JobRecord.objects.filter(last_batch=batch).count() == batch.new + batch.updated
    assert RejectedRow.objects.filter(batch=batch).count() == batch.rejected
    assert all(record.gpu_seconds >= 0 for record in JobRecord.objects.all())


@pytest.mark.parametrize(
    "name, job_id, elapsed",
    [("tdhock-sacct-allcols.txt", "32650736", 3606), ("tdhock-sacct-manyfields.txt", "32641375", 3629)],
)
def test_real_compute_canada_output_records_its_cpu_job_at_zero_gpu_seconds(name, job_id, elapsed):
    cedar = SystemFactory(name="Cedar", slug="cedar", cluster_name="cedar")  # allcols names it; manyfields has none
    outcome = ingest(cedar, sacct_sample(name).read_bytes())

    record = JobRecord.objects.get()
    assert (record.job_id, record.account, record.elapsed_seconds) == (job_id, "rpp-kenclark_cpu", elapsed)
    assert (record.gpus, record.gpu_seconds) == (0, 0)  # no gres/gpu in AllocTRES: no GPUs, nothing to charge
    assert (outcome.batch.skipped_steps, outcome.batch.unmatched) == (2, 1)


def test_real_output_without_the_columns_for_charging_is_refused_and_kept(system):
    with pytest.raises(IngestError, match="lacks required columns"):
        ingest(system, sacct_sample("tdhock-sacct-multiuser.txt").read_bytes())

    assert IngestBatch.objects.get().status == "failed"


def test_a_gpu_entry_without_a_count_is_rejected_with_its_line_and_reason_not_charged_as_no_gpus(system):
    funded_allocation(system)
    text = payload(sacct_line(1), sacct_line(2).replace("gres/gpu=1", "gres/gpu"), sacct_line(3, gpus=""))
    null_count = json_job(job_id=5002, tres={"allocated": [{"type": "gres", "name": "gpu", "count": None}]})

    text_batch = ingest(system, text).batch
    json_batch = ingest(system, json_payload(json_job(), null_count)).batch

    assert [(row.line_number, row.reason) for row in text_batch.rejected_rows.order_by("line_number")] == [
        (3, "AllocTRES entry 'gres/gpu' has no count of GPUs"),
        (4, "AllocTRES entry 'gres/gpu=' has no count of GPUs"),
    ]
    assert [(row.line_number, row.reason) for row in json_batch.rejected_rows.all()] == [
        (2, "the gres/gpu entry of tres.allocated has no count of GPUs")
    ]
    assert sorted(JobRecord.objects.values_list("job_id", "gpus")) == [("1", 1), ("5001", 4)]


def test_rejected_rows_are_saved_as_they_gather_not_held_until_the_payload_ends(system, monkeypatch):
    """A payload of mostly bad lines (a gigabyte of them would be millions of rows) is never held whole: the rows
    are saved each time REJECTED_ROWS_HELD of them are waiting, and every one is kept, with the good rows."""
    from allocations.usage import ingest as ingest_module

    monkeypatch.setattr(ingest_module, "REJECTED_ROWS_HELD", 10)
    save = RejectedRow.objects.bulk_create
    saved = []

    def saving(rows, *args, **kwargs):
        saved.append(len(rows))
        return save(rows, *args, **kwargs)

    monkeypatch.setattr(RejectedRow.objects, "bulk_create", saving)
    lines = []
    for job in range(1, 41):
        lines.append(sacct_line(job) if job % 8 == 0 else sacct_line(job, start="yesterday"))
    outcome = ingest(system, payload(*lines))

    assert max(saved) == 10
    assert outcome.batch.counts()["new"] == 5 and outcome.batch.rejected == 35
    assert sorted(RejectedRow.objects.values_list("line_number", flat=True)) == [
        job + 1 for job in range(1, 41) if job % 8
    ]
    assert sorted(JobRecord.objects.values_list("job_id", flat=True), key=int) == ["8", "16", "24", "32", "40"]


def test_a_gpu_entry_named_twice_is_rejected_with_its_line_and_reason_not_charged_on_a_guess(system):
    funded_allocation(system)
    twice = sacct_line(2, gpus=2).replace("gres/gpu=2", "gres/gpu,gres/gpu=2")

    batch = ingest(system, payload(sacct_line(1), twice)).batch

    assert [(row.line_number, row.reason) for row in batch.rejected_rows.all()] == [
        (3, "AllocTRES 'billing=1,cpu=8,gres/gpu,gres/gpu=2,node=1' lists gres/gpu more than once")
    ]
    assert list(JobRecord.objects.values_list("job_id", "gpus")) == [("1", 1)]


def test_a_gzip_bomb_is_refused_when_it_expands_past_the_limit_and_nothing_is_recorded(system, settings):
    settings.INGEST_MAX_UNCOMPRESSED_BYTES = 10_000
    bomb = gzip.compress(payload(*[sacct_line(n) for n in range(1, 200)]))
    assert len(bomb) < 10_000

    with pytest.raises(IngestError, match="expands to more than"):
        ingest(system, bomb)

    assert IngestBatch.objects.get().status == "failed"
    assert not JobRecord.objects.exists()


# Chunks: on PostgreSQL a payload's rows are copied straight into the job records a chunk at a time, and a chunk
# that repeats a stored run sends the rest of the payload to the merge. These run with chunks of two rows, so a
# handful of lines crosses every boundary; on SQLite they check the same outcome through the portable path.


@pytest.fixture
def two_row_chunks(monkeypatch):
    monkeypatch.setattr("allocations.usage.ingest.COPY_CHUNK_ROWS", 2)  # PostgreSQL
    monkeypatch.setattr("allocations.usage.ingest.CHUNK_ROWS", 2)  # other databases


def records() -> dict[str, tuple]:
    return {
        job_id: (state, seconds, changed_seq)
        for job_id, state, seconds, changed_seq in JobRecord.objects.values_list(
            "job_id", "state", "gpu_seconds", "changed_seq"
        )
    }


def test_a_run_reported_again_in_a_later_chunk_keeps_its_last_report(system, two_row_chunks):
    funded_allocation(system)
    outcome = ingest(
        system,
        payload(
            sacct_line(1, state="RUNNING", end="Unknown", elapsed=600),
            sacct_line(2),
            sacct_line(3),
            sacct_line(4),
            sacct_line(1, state="COMPLETED", elapsed=3600),
        ),
    )

    stored = records()
    assert sorted(stored) == ["1", "2", "3", "4"]
    assert stored["1"][:2] == ("COMPLETED", 3600)
    assert JobRecord.objects.get(job_id="1").end is not None
    # A run reported twice in one payload is counted once, as new; its other report as unchanged.
    assert (outcome.batch.new, outcome.batch.updated, outcome.batch.unchanged) == (4, 0, 1)


@pytest.mark.parametrize("chunk_rows", [2, 5000])
def test_a_run_reported_twice_in_one_payload_counts_the_same_wherever_the_chunks_fall(system, monkeypatch, chunk_rows):
    monkeypatch.setattr("allocations.usage.ingest.COPY_CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr("allocations.usage.ingest.CHUNK_ROWS", chunk_rows)
    funded_allocation(system)
    ingest(system, payload(sacct_line(9)))  # stored before

    outcome = ingest(
        system,
        payload(
            sacct_line(1, state="RUNNING", end="Unknown", elapsed=600),
            sacct_line(2),
            sacct_line(9, state="FAILED"),
            sacct_line(1, state="COMPLETED", elapsed=3600),
            sacct_line(9, state="FAILED"),
        ),
    )

    # Run 1 is new and run 9 updated, each counted once; their second reports count as unchanged.
    assert (outcome.batch.new, outcome.batch.updated, outcome.batch.unchanged) == (2, 1, 2)
    assert records()["1"][0] == "COMPLETED" and records()["9"][0] == "FAILED"


def test_a_payload_that_opens_with_stored_runs_records_the_rest_and_leaves_those_alone(system, two_row_chunks):
    funded_allocation(system)
    ingest(system, payload(sacct_line(1), sacct_line(2)))
    before = records()

    outcome = ingest(system, payload(sacct_line(1), sacct_line(2), sacct_line(3), sacct_line(4), sacct_line(5)))

    after = records()
    assert (outcome.batch.new, outcome.batch.updated, outcome.batch.unchanged) == (3, 0, 2)
    assert after["1"] == before["1"] and after["2"] == before["2"]
    assert set(JobRecord.objects.filter(job_id__in=["3", "4", "5"]).values_list("last_batch", flat=True)) == {
        outcome.batch.pk
    }
    assert set(JobRecord.objects.filter(job_id__in=["1", "2"]).values_list("last_batch", flat=True)) != {
        outcome.batch.pk
    }


def test_a_stored_run_changed_after_new_chunks_is_updated_and_later_runs_still_recorded(system, two_row_chunks):
    funded_allocation(system)
    ingest(system, payload(sacct_line(1, state="RUNNING", end="Unknown", elapsed=60)))

    outcome = ingest(
        system,
        payload(
            sacct_line(2),
            sacct_line(3),
            sacct_line(1, state="COMPLETED", elapsed=7200, end="2026-03-01T12:00:00"),
            sacct_line(4),
            sacct_line(5),
            sacct_line(4, gpus=2),
        ),
    )

    stored = records()
    assert sorted(stored) == ["1", "2", "3", "4", "5"]
    assert stored["1"][:2] == ("COMPLETED", 7200)
    assert stored["4"][1] == 2 * 3600  # the run's last report in the payload
    assert (outcome.batch.new, outcome.batch.updated, outcome.batch.unchanged) == (4, 1, 1)


def test_rejected_rows_in_every_chunk_are_kept_with_their_line_numbers(system, two_row_chunks):
    bad = sacct_line(9, elapsed=-5)
    outcome = ingest(system, payload(sacct_line(1), bad, sacct_line(2), sacct_line(3), bad, sacct_line(4), bad))

    assert list(RejectedRow.objects.order_by("line_number").values_list("line_number", flat=True)) == [3, 6, 8]
    assert (outcome.batch.new, outcome.batch.rejected) == (4, 3)


def test_the_allocation_window_is_the_system_s_local_days(system):
    """A run is outside its allocation's window by the system's own calendar, whatever offset sacct printed."""
    system.time_zone = "Europe/London"
    system.save()
    funded_allocation(system, pool_options={"valid_from": date(2026, 6, 1), "valid_until": date(2026, 12, 31)})
    ingest(
        system,
        payload(
            # 00:30 on 1 June in London (summer time), printed in UTC: inside.
            sacct_line(1, start="2026-05-31T23:30:00+00:00", end="2026-06-01T01:30:00"),
            # 23:30 on 31 May in London: outside.
            sacct_line(2, start="2026-05-31T22:30:00+00:00", end="2026-06-01T01:30:00"),
            # Printed without an offset, so read as London time: inside.
            sacct_line(3, start="2026-06-01T00:30:00", end="2026-06-01T01:30:00"),
            # Ends at midnight after the last day, London time: outside.
            sacct_line(4, start="2026-12-31T23:00:00", end="2027-01-01T00:00:00"),
        ),
    )

    flags = dict(JobRecord.objects.values_list("job_id", "is_outside_window"))
    assert flags == {"1": False, "2": True, "3": False, "4": True}


def test_a_chunk_refused_at_its_first_row_still_records_every_row_after_it(system):
    """The database may stop reading a refused chunk early; the rows it never read are merged all the same."""
    funded_allocation(system)
    ingest(system, payload(sacct_line(1)))
    many = [sacct_line(job) for job in range(2, 6002)]  # about 800 kB: more than one read of the chunk

    outcome = ingest(system, payload(sacct_line(1), *many))

    assert (outcome.batch.new, outcome.batch.unchanged) == (6000, 1)
    assert JobRecord.objects.count() == 6001


def test_a_job_no_allocation_could_pay_for_is_rejected_and_the_rest_are_charged(system):
    """One absurd row (Slurm's no-value elapsed on a big job) must not stop its system's charging."""
    from allocations import ledger
    from allocations.usage.reconcile import reconcile_system
    from tests.allocations.usage_helpers import HOUR

    allocation = funded_allocation(system)
    data = payload(
        sacct_line(1, gpus=9999, elapsed=999_999_999),
        sacct_line(2, gpus=1, elapsed=2**32 - 2),
        sacct_line(3, gpus=2, elapsed=HOUR),
    )

    batch = ingest(system, data).batch

    reasons = dict(RejectedRow.objects.values_list("line_number", "reason"))
    assert reasons[2].startswith("the job would be charged 2,777,499,997 GPU-hours, more than the 2,777,777")
    assert reasons[3] == f"ElapsedRaw is {2**32 - 2} or more, which no job reaches"
    assert (batch.new, batch.rejected) == (1, 2)
    reconcile_system(system=system)
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 2 * HOUR


def test_rows_of_another_cluster_are_rejected_and_read_once_the_systems_cluster_name_is_corrected(system):
    """`sacct -M all`, or a token used for the wrong cluster, must not charge this system for another's jobs:
    an award's account (airr-00001) has the same name on every system it runs on."""
    from allocations.usage.services import replay_rejected_rows

    allocation = funded_allocation(system)
    outcome = ingest(system, payload(sacct_line(1), sacct_line(2, cluster="isambard-ai-2")))

    assert (outcome.batch.new, outcome.batch.rejected) == (1, 1)
    rejected = RejectedRow.objects.get()
    assert (rejected.line_number, rejected.reason.split(":")[0]) == (
        3,
        "Cluster 'isambard-ai-2' is not this system's cluster ('isambard-ai')",
    )
    assert list(JobRecord.objects.values_list("job_id", flat=True)) == ["1"]

    system.cluster_name = "Isambard-AI-2"  # the system's settings named the wrong cluster, and are corrected
    system.save()
    assert replay_rejected_rows(batch=outcome.batch, actor=None) == (1, 0)

    assert sorted(JobRecord.objects.values_list("job_id", "allocation", "system")) == [
        ("1", allocation.pk, system.pk),
        ("2", allocation.pk, system.pk),
    ]
