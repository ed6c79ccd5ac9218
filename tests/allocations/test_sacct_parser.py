"""The sacct parser on small hand-written payloads, plus property tests over arbitrary input."""

import dataclasses
import gzip
import io
import json
import signal
import tracemalloc
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocations.usage.sacct import (
    ELAPSED_SECONDS_LIMIT,
    GPU_COUNT_LIMIT,
    MAX_LINE_BYTES,
    JobRow,
    RejectedRow,
    SacctFormatError,
    _fields_of_row,
    _new_job_row,
    iter_sacct,
    parse_sacct,
)

COLUMNS = [
    "JobID",
    "JobIDRaw",
    "Cluster",
    "Account",
    "User",
    "State",
    "Submit",
    "Start",
    "End",
    "ElapsedRaw",
    "AllocTRES",
    "JobName",
]
DEFAULT_ROW = {
    "JobID": "1001",
    "JobIDRaw": "1001",
    "Cluster": "isambard-ai",
    "Account": "airr-00042",
    "User": "alice",
    "State": "COMPLETED",
    "Submit": "2025-03-01T09:00:00",
    "Start": "2025-03-01T10:00:00",
    "End": "2025-03-01T12:00:00",
    "ElapsedRaw": "7200",
    "AllocTRES": "billing=8,cpu=8,gres/gpu=4,mem=64G,node=1",
    "JobName": "train",
}


def line(columns=COLUMNS, delimiter="|", trailing="", **values):
    row = DEFAULT_ROW | values
    return delimiter.join(row[column] for column in columns) + trailing


def payload(*lines):
    return ("\n".join(lines) + "\n").encode()


def parse_rows(*rows, columns=COLUMNS, **options):
    header = "|".join(columns)
    return parse_sacct(payload(header, *[line(columns, **row) for row in rows]), **options)


def only_job(result):
    assert result.rejected == []
    assert len(result.jobs) == 1
    return result.jobs[0]


def only_rejection(result):
    assert result.jobs == []
    assert len(result.rejected) == 1
    return result.rejected[0]


# --- Reading the columns ---------------------------------------------------------------------------------


def test_it_reads_every_field_of_a_parsable2_allocation_row():
    data = payload("|".join(COLUMNS), line())

    result = parse_sacct(data)

    assert result.format == "parsable2"
    assert result.jobs == [
        JobRow(
            line_number=2,
            job_id="1001",
            job_id_raw="1001",
            cluster="isambard-ai",
            account="airr-00042",
            user="alice",
            state="COMPLETED",
            submit=datetime(2025, 3, 1, 9, tzinfo=UTC),
            start=datetime(2025, 3, 1, 10, tzinfo=UTC),
            end=datetime(2025, 3, 1, 12, tzinfo=UTC),
            elapsed_seconds=7200,
            gpus=4,
            job_name="train",
            raw=line(),
        )
    ]
    assert result.jobs[0].running is False


@pytest.mark.parametrize(
    "columns",
    [
        list(reversed(COLUMNS[:-1])) + ["JobName"],
        ["AllocTRES", "JobName", "State", "Start", "User", "End", "JobID", "Account", "ElapsedRaw", "Submit"],
    ],
)
def test_it_reads_columns_in_any_order(columns):
    job = only_job(parse_rows({}, columns=columns))

    assert (job.job_id, job.account, job.user, job.state) == ("1001", "airr-00042", "alice", "COMPLETED")
    assert (job.start, job.end) == (
        datetime(2025, 3, 1, 10, tzinfo=UTC),
        datetime(2025, 3, 1, 12, tzinfo=UTC),
    )
    assert (job.elapsed_seconds, job.gpus, job.job_name) == (7200, 4, "train")


def test_it_matches_column_names_whatever_their_case():
    header = "|".join(column.upper() if index % 2 else column.lower() for index, column in enumerate(COLUMNS))

    job = only_job(parse_sacct(payload(header, line())))

    assert (job.job_id_raw, job.cluster, job.gpus) == ("1001", "isambard-ai", 4)


def test_it_reads_parsable_output_with_a_trailing_delimiter():
    data = payload("|".join(COLUMNS) + "|", line(trailing="|"), line(JobID="1002", JobIDRaw="1002", trailing="|"))

    result = parse_sacct(data)

    assert result.format == "parsable"
    assert result.rejected == []
    assert [job.job_id for job in result.jobs] == ["1001", "1002"]
    assert result.jobs[0].job_name == "train"


def test_it_rejects_a_parsable_line_without_its_trailing_delimiter_as_truncated():
    data = payload("|".join(COLUMNS) + "|", line(trailing="|"), line(JobName="tra"))

    result = parse_sacct(data)

    assert [job.line_number for job in result.jobs] == [2]
    assert [(row.line_number, row.raw) for row in result.rejected] == [(3, line(JobName="tra"))]
    assert "truncated" in result.rejected[0].reason


@pytest.mark.parametrize("delimiter", ["\u2603", ";", "\t"])
def test_it_detects_the_delimiter_from_the_header(delimiter):
    data = payload(delimiter.join(COLUMNS), line(delimiter=delimiter, AllocTRES="gres/gpu=2"))

    job = only_job(parse_sacct(data))

    assert (job.job_id, job.account, job.gpus, job.job_name) == ("1001", "airr-00042", 2, "train")


@pytest.mark.parametrize("given", [None, ","])
def test_a_comma_delimiter_is_refused_since_alloctres_holds_commas(given):
    """sacct does not escape its delimiter: split on commas, AllocTRES would lose its GPUs to JobName."""
    data = payload(",".join(COLUMNS), line(delimiter=",", AllocTRES="billing=8,cpu=8,gres/gpu=4"))

    with pytest.raises(SacctFormatError, match="',' cannot be the delimiter: sacct does not escape it"):
        parse_sacct(data, delimiter=given)


@pytest.mark.parametrize("delimiter", [":", "=", "-", " ", "x", "7", "|:"])
def test_a_delimiter_that_occurs_in_sacct_values_is_refused(delimiter):
    data = payload(delimiter.join(COLUMNS), line(delimiter=delimiter))

    with pytest.raises(SacctFormatError, match="cannot be the delimiter"):
        parse_sacct(data, delimiter=delimiter)


def test_an_explicit_delimiter_overrides_detection():
    data = payload(";".join(COLUMNS), line(delimiter=";"))

    assert only_job(parse_sacct(data, delimiter=";")).gpus == 4
    with pytest.raises(SacctFormatError, match="not a sacct header"):
        parse_sacct(data, delimiter="|")


def test_it_keeps_the_delimiter_inside_a_job_name_in_the_last_column():
    data = payload("|".join(COLUMNS), line(JobName="sweep|lr=0.1||final|"))
    parsable = payload("|".join(COLUMNS) + "|", line(JobName="a|b", trailing="|"))

    assert only_job(parse_sacct(data)).job_name == "sweep|lr=0.1||final|"
    assert only_job(parse_sacct(parsable)).job_name == "a|b"


def test_it_rejects_a_line_with_too_many_fields_when_job_name_is_not_last():
    columns = ["JobName", *COLUMNS[:-1]]

    rejected = only_rejection(parse_rows({"JobName": "sweep|7"}, columns=columns))

    assert rejected.line_number == 2
    assert rejected.reason.startswith("expected 12 fields, found 13")


def test_it_rejects_a_truncated_line():
    truncated = line()[:60]
    data = payload("|".join(COLUMNS), truncated, line(JobID="1002", JobIDRaw="1002"))

    result = parse_sacct(data)

    assert [job.job_id for job in result.jobs] == ["1002"]
    assert [(row.line_number, row.raw) for row in result.rejected] == [(2, truncated)]
    assert result.rejected[0].reason.startswith(f"expected 12 fields, found {truncated.count('|') + 1}")


# --- Which rows are jobs ---------------------------------------------------------------------------------


def test_it_skips_step_rows_which_repeat_the_jobs_gpus():
    steps = [
        "1001.batch",
        "1001.extern",
        "1001.0",
        "1001.interactive",
        "1002_4.batch",
        "1003+1.0",
        "1004.0+1",
    ]

    result = parse_rows({}, *[{"JobID": step, "JobIDRaw": step} for step in steps])

    assert [job.job_id for job in result.jobs] == ["1001"]
    assert result.skipped_steps == len(steps)
    assert result.rejected == []


def test_it_reads_array_tasks_and_heterogeneous_components_as_separate_jobs():
    result = parse_rows(
        {"JobID": "2000_4", "JobIDRaw": "2004"},
        {"JobID": "2000_5", "JobIDRaw": "2005"},
        {"JobID": "3000+0", "JobIDRaw": "3000"},
        {"JobID": "3000+1", "JobIDRaw": "3001"},
    )

    assert [(job.job_id, job.job_id_raw) for job in result.jobs] == [
        ("2000_4", "2004"),
        ("2000_5", "2005"),
        ("3000+0", "3000"),
        ("3000+1", "3001"),
    ]


def test_it_takes_the_job_id_as_raw_id_when_there_is_no_job_id_raw_column():
    columns = [column for column in COLUMNS if column != "JobIDRaw"]

    result = parse_rows({"JobID": "2000_4"}, {"JobID": "2001"}, columns=columns)

    assert [(job.job_id, job.job_id_raw) for job in result.jobs] == [("2000_4", "2000_4"), ("2001", "2001")]


def test_it_skips_pending_array_ranges_which_are_not_jobs():
    ranges = ["4000_[5-9]", "4001_[1-2]", "4002_[1,3-5%2]", "4003_[1]"]

    result = parse_rows(*[{"JobID": job_id, "JobIDRaw": "4000", "Start": "Unknown"} for job_id in ranges])

    assert result.jobs == []
    assert result.rejected == []
    assert result.skipped_pending == len(ranges)


@pytest.mark.parametrize("job_id", ["abc", "12x", "", "1001_", "1001.", "1001_[]", "١٢٣", " 1001"])
def test_it_rejects_a_job_id_that_slurm_would_not_print(job_id):
    rejected = only_rejection(parse_rows({"JobID": job_id}))

    assert rejected.reason == f"JobID {job_id!r} is not a Slurm job id"


def test_it_rejects_a_job_id_raw_that_is_not_a_number():
    rejected = only_rejection(parse_rows({"JobIDRaw": "1001.batch"}))

    assert rejected.reason == "JobIDRaw '1001.batch' is not a job number"


def test_it_keeps_both_runs_of_a_requeued_job():
    result = parse_rows(
        {
            "State": "REQUEUED",
            "Start": "2025-03-01T10:00:00",
            "End": "2025-03-01T10:30:00",
            "ElapsedRaw": "1800",
        },
        {
            "State": "COMPLETED",
            "Start": "2025-03-01T11:00:00",
            "End": "2025-03-01T12:00:00",
            "ElapsedRaw": "3600",
        },
    )

    assert [(job.job_id_raw, job.start.hour, job.state, job.elapsed_seconds) for job in result.jobs] == [
        ("1001", 10, "REQUEUED", 1800),
        ("1001", 11, "COMPLETED", 3600),
    ]


# --- GPUs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tres", "gpus"),
    [
        ("billing=4,cpu=4,gres/gpu:a100=2,gres/gpu=2,mem=16G,node=1", 2),
        ("billing=4,cpu=4,gres/gpu=2,gres/gpu:a100=2,mem=16G,node=1", 2),
        ("gres/gpu=8", 8),
        ("billing=4,cpu=4,gres/gpu:a100=2,mem=16G,node=1", 0),
        ("billing=4,cpu=4,mem=16G,node=1", 0),
        ("", 0),
        ("cpu=4,gres/gpumem=40G,gres/gpuutil=80,node=1", 0),
        ("cpu=4,gres/gpumem=40G,gres/gpu=3,gres/gpuutil=80", 3),
        (f"gres/gpu={GPU_COUNT_LIMIT - 1}", GPU_COUNT_LIMIT - 1),
        ("gres/gpu=004", 4),
    ],
)
def test_it_counts_gpus_from_the_untyped_gres_entry_only(tres, gpus):
    assert only_job(parse_rows({"AllocTRES": tres})).gpus == gpus


@pytest.mark.parametrize(
    "tres",
    [
        "cpu=4,gres/gpu=abc",
        "gres/gpu=-1",
        "gres/gpu=",
        "gres/gpu",
        "cpu=4,gres/gpu,mem=16G",
        "gres/gpu=1.5",
        "gres/gpu=²",
        f"gres/gpu={GPU_COUNT_LIMIT}",
        "gres/gpu=" + "9" * 5000,
        "gres/gpu=2,gres/gpu=3",
    ],
)
def test_it_rejects_an_unreadable_gpu_count(tres):
    rejected = only_rejection(parse_rows({"AllocTRES": tres}))

    assert rejected.reason.startswith("AllocTRES")
    assert rejected.raw == line(AllocTRES=tres)


@pytest.mark.parametrize(
    "tres",
    [
        "billing=1,cpu=8,gres/gpu,gres/gpu=2,node=1",
        "billing=1,cpu=8,gres/gpu=2,gres/gpu,node=1",
        "gres/gpu:a100=2,gres/gpu=2,gres/gpu",
        "gres/gpu=2,gres/gpu=4",
    ],
)
def test_an_alloctres_naming_the_untyped_gpu_entry_twice_is_rejected_by_both_readings_not_charged_on_a_guess(tres):
    data = payload("|".join(COLUMNS), line(AllocTRES=tres))
    rejection = RejectedRow(2, line(AllocTRES=tres), f"AllocTRES {tres!r} lists gres/gpu more than once")

    assert only_rejection(parse_sacct(data)) == rejection
    assert list(iter_sacct(data).records()) == [rejection]  # the ingest's fast path


# --- States and times --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("printed", "state"),
    [
        ("CANCELLED by 1234", "CANCELLED"),
        ("CANCELLED", "CANCELLED"),
        ("NODE_FAIL", "NODE_FAIL"),
        ("OUT_OF_MEMORY", "OUT_OF_MEMORY"),
        ("SOME_NEW_STATE", "SOME_NEW_STATE"),
    ],
)
def test_it_normalises_the_state(printed, state):
    assert only_job(parse_rows({"State": printed})).state == state


@pytest.mark.parametrize("printed", ["", "completed", "CANCELLED by", "CANCELLED by root", "CANCELLED+", "4"])
def test_it_rejects_a_state_slurm_would_not_print(printed):
    assert only_rejection(parse_rows({"State": printed})).reason == f"State {printed!r} is not a Slurm job state"


@pytest.mark.parametrize("start", ["None", "Unknown", ""])
def test_it_reads_a_missing_start_as_a_job_that_never_ran(start):
    job = only_job(parse_rows({"State": "CANCELLED by 42", "Start": start, "ElapsedRaw": "0"}))

    assert job.start is None
    assert job.running is False


def test_it_reads_an_unknown_end_as_a_job_still_running():
    job = only_job(parse_rows({"State": "RUNNING", "End": "Unknown"}))

    assert job.end is None
    assert job.running is True


def test_it_reads_naive_timestamps_in_the_given_time_zone():
    london = ZoneInfo("Europe/London")

    summer = only_job(parse_rows({"Start": "2024-07-01T12:00:00", "End": "2024-07-01T13:00:00"}, tz=london))
    winter = only_job(parse_rows({"Start": "2024-01-15T12:00:00"}, tz=london))

    assert summer.start == datetime(2024, 7, 1, 11, tzinfo=UTC)
    assert summer.start.utcoffset() == timedelta(0)
    assert summer.end == datetime(2024, 7, 1, 12, tzinfo=UTC)
    assert winter.start == datetime(2024, 1, 15, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "start_utc", "end_utc"),
    [
        # 25 October 2026: London's clocks go back at 02:00 BST, so 01:00-02:00 comes twice. Started at 01:50 in
        # the first, ran 20 minutes, ended at 01:10 in the second: sacct prints both without an offset.
        ("2026-10-25T01:50:00", "2026-10-25T01:10:00", (0, 50), (1, 10)),
        # Started and ended in the first: the first occurrence, as for any time in that hour.
        ("2026-10-25T01:10:00", "2026-10-25T01:30:00", (0, 10), (0, 30)),
    ],
)
def test_an_end_in_the_repeated_autumn_hour_is_read_in_the_occurrence_that_follows_its_start(
    start, end, start_utc, end_utc
):
    data = payload("|".join(COLUMNS), line(Submit=start, Start=start, End=end, ElapsedRaw="1200"))
    london = ZoneInfo("Europe/London")

    job = only_job(parse_sacct(data, tz=london))
    (record,) = iter_sacct(data, tz=london).records()

    assert (job.start, job.end) == (
        datetime(2026, 10, 25, *start_utc, tzinfo=UTC),
        datetime(2026, 10, 25, *end_utc, tzinfo=UTC),
    )
    assert record[8:10] == (job.start.isoformat(), job.end.isoformat())


@pytest.mark.parametrize(
    ("printed", "moment"),
    [
        ("2025-03-01T10:00:00+01:00", datetime(2025, 3, 1, 9, tzinfo=UTC)),
        ("2025-03-01T10:00:00Z", datetime(2025, 3, 1, 10, tzinfo=UTC)),
        ("2025-03-01 10:00:00", datetime(2025, 3, 1, 15, tzinfo=UTC)),
    ],
)
def test_it_honours_an_explicit_offset_over_the_given_time_zone(printed, moment):
    job = only_job(parse_rows({"Start": printed}, tz=ZoneInfo("America/New_York")))

    assert job.start == moment
    assert job.start.tzinfo is UTC


@pytest.mark.parametrize(
    "start", ["2024-13-01T00:00:00", "yesterday", "2024-03-01", "2024-02-30T10:00:00", "2024-03-01T25:00:00"]
)
def test_it_rejects_an_unreadable_timestamp(start):
    assert only_rejection(parse_rows({"Start": start})).reason == f"Start {start!r} is not a date and time"


def test_it_rejects_a_timestamp_that_leaves_the_calendar_when_converted_to_utc():
    rejected = only_rejection(parse_rows({"End": "0001-01-01T00:00:00"}, tz=ZoneInfo("Europe/Berlin")))

    assert rejected.reason == "End '0001-01-01T00:00:00' is out of range"


# --- Elapsed time ------------------------------------------------------------------------------------------


def test_it_takes_elapsed_seconds_from_elapsed_raw_even_when_elapsed_is_also_there():
    columns = [*COLUMNS[:-1], "Elapsed", "JobName"]

    job = only_job(parse_sacct(payload("|".join(columns), line(columns, Elapsed="00:00:01", ElapsedRaw="7200"))))

    assert job.elapsed_seconds == 7200


@pytest.mark.parametrize(
    ("elapsed", "seconds"),
    [
        ("22-08:05:48", ((22 * 24 + 8) * 60 + 5) * 60 + 48),
        ("01:00:29", 3629),
        ("00:00:00", 0),
        ("05:07", 307),
        ("21:33.052", 21 * 60 + 33),
        ("0-00:00:01", 1),
        ("100:00:00", 360_000),
    ],
)
def test_it_reads_elapsed_when_there_is_no_elapsed_raw(elapsed, seconds):
    columns = [column if column != "ElapsedRaw" else "Elapsed" for column in COLUMNS]

    assert only_job(parse_sacct(payload("|".join(columns), line(columns, Elapsed=elapsed)))).elapsed_seconds == seconds


@pytest.mark.parametrize("elapsed", ["1:2:3:4", "00:61:00", "00:00:60", "abc", "", "-01:00:00", "1-05:07", "INVALID"])
def test_it_rejects_an_unreadable_elapsed(elapsed):
    columns = [column if column != "ElapsedRaw" else "Elapsed" for column in COLUMNS]

    result = parse_sacct(payload("|".join(columns), line(columns, Elapsed=elapsed)))

    assert only_rejection(result).reason.startswith(f"Elapsed {elapsed!r} is not a duration")


@pytest.mark.parametrize(
    ("elapsed_raw", "reason"),
    [
        ("-5", "ElapsedRaw '-5' is not a whole number of seconds"),
        ("1.5", "ElapsedRaw '1.5' is not a whole number of seconds"),
        ("", "ElapsedRaw '' is not a whole number of seconds"),
        ("٣", "ElapsedRaw '٣' is not a whole number of seconds"),
        (str(ELAPSED_SECONDS_LIMIT), f"ElapsedRaw is {ELAPSED_SECONDS_LIMIT} or more, which no job reaches"),
        ("9" * 5000, f"ElapsedRaw is {ELAPSED_SECONDS_LIMIT} or more, which no job reaches"),
    ],
)
def test_it_rejects_an_unreadable_or_absurd_elapsed_raw(elapsed_raw, reason):
    assert only_rejection(parse_rows({"ElapsedRaw": elapsed_raw})).reason == reason


def test_it_accepts_the_largest_elapsed_raw_below_the_limit_and_leading_zeros():
    result = parse_rows({"ElapsedRaw": str(ELAPSED_SECONDS_LIMIT - 1)}, {"ElapsedRaw": "0" * 20 + "42"})

    assert [job.elapsed_seconds for job in result.jobs] == [ELAPSED_SECONDS_LIMIT - 1, 42]


# --- Lines and payloads ------------------------------------------------------------------------------------


def test_it_rejects_a_line_that_is_not_utf8_and_reads_the_others():
    latin1_line = line(JobID="1002", JobIDRaw="1002", User="bøb").encode().replace(b"train", b"tr\xe6in")
    data = b"\n".join([payload("|".join(COLUMNS), line()).strip(), latin1_line, payload(line(JobID="1003"))])

    result = parse_sacct(data)

    assert [job.job_id for job in result.jobs] == ["1001", "1003"]
    assert result.rejected[0].line_number == 3
    assert result.rejected[0].reason == "the line is not valid UTF-8"
    assert result.rejected[0].raw == line(JobID="1002", JobIDRaw="1002", User="bøb", JobName="tr\ufffdin")


def test_it_rejects_a_line_containing_a_nul_character_which_the_database_cannot_store():
    rejected = only_rejection(parse_rows({"JobName": "bad\x00name"}))

    assert rejected.reason == "the line contains a NUL character"
    assert "\x00" not in rejected.raw


def test_it_ignores_blank_lines_but_keeps_physical_line_numbers():
    data = payload("", "|".join(COLUMNS), "", "   ", line(), "\t", line(JobID="1002", JobIDRaw="1002"), "")

    result = parse_sacct(data)

    assert [job.line_number for job in result.jobs] == [5, 7]


def test_it_reads_windows_line_endings_and_a_byte_order_mark():
    data = b"\xef\xbb\xbf" + payload("|".join(COLUMNS), line()).replace(b"\n", b"\r\n")

    job = only_job(parse_sacct(data))

    assert (job.job_id, job.job_name, job.raw) == ("1001", "train", line())


@pytest.mark.parametrize("data", [b"", b"   \n\n\t\r\n", b"\xef\xbb\xbf\n"])
def test_it_refuses_an_empty_payload(data):
    with pytest.raises(SacctFormatError, match="^the payload is empty$"):
        parse_sacct(data)


def test_it_refuses_a_payload_missing_required_columns_and_names_them():
    columns = [column for column in COLUMNS if column not in ("Account", "AllocTRES", "ElapsedRaw")]

    with pytest.raises(SacctFormatError) as raised:
        parse_sacct(payload("|".join(columns), line(columns)))

    assert str(raised.value).startswith(
        "the sacct output lacks required columns: Account, AllocTRES, ElapsedRaw (or Elapsed)"
    )


@pytest.mark.parametrize(
    "first_line",
    [
        line(),  # made with --noheader
        "       JobID    JobName  Partition    Account  AllocCPUS      State ExitCode",  # not --parsable
        "hello world",
    ],
)
def test_it_refuses_a_payload_without_a_header(first_line):
    with pytest.raises(SacctFormatError, match="not a sacct header"):
        parse_sacct(payload(first_line, line()))


def test_it_refuses_a_header_naming_a_column_twice():
    with pytest.raises(SacctFormatError, match="more than once: User, user"):
        parse_sacct(payload("|".join([*COLUMNS[:-1], "user", "JobName"]), line()))


def test_a_header_of_very_many_columns_is_read_in_time_proportional_to_its_length():
    # 80,000 names are a 0.9 MB header, inside a post and under the longest line read. Checking each name against
    # all the others for repeats took minutes on it, holding a web worker: the check has to count the names once.
    header = "|".join([*COLUMNS, *(f"extra{number}" for number in range(80_000))])

    def too_slow(signum, frame):
        raise TimeoutError("reading the header took more than 10 seconds")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(10)
    try:
        result = parse_sacct(payload(header, line()))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

    assert result.jobs == [] and "expected 80012 fields, found 12" in result.rejected[0].reason


def parsed_with_peak_memory(data: bytes):
    """The payload read from a file as ingest reads it, and the most memory the reading held, in bytes."""
    stream = io.BufferedReader(io.BytesIO(data))
    tracemalloc.start()
    try:
        result = parse_sacct(stream)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("first", [line().encode(), json.dumps({"jobs": []}).encode()])
def test_blank_lines_before_the_first_are_skipped_without_being_held(first):
    # A gzip body of a megabyte can hold a gigabyte of blank lines: held as a list until the first line, each
    # three-byte line took some fifty bytes, and the payload exhausted the worker's memory before the size limit.
    header = "|".join(COLUMNS).encode() + b"\n" if first[:1] != b"{" else b""
    result, peak = parsed_with_peak_memory(b" \n" * 1_000_000 + header + first + b"\n")

    assert peak < 10 * 2**20
    assert len(result.jobs) == (0 if result.format == "json" else 1)


def test_a_line_longer_than_any_sacct_line_is_rejected_without_being_read_whole_and_the_next_lines_are_read():
    # 20 MB on one line (a gzip body of some 20 KB): read whole and split at its delimiters, it took hundreds of MB.
    too_long = b"1002|" + b"x|" * (10 * 2**20)
    header = "|".join(COLUMNS).encode()
    result, peak = parsed_with_peak_memory(
        b"\n".join([header, line().encode(), too_long, line(JobID="1003", JobIDRaw="1003").encode()])
    )

    assert peak < 20 * 2**20
    assert [job.job_id for job in result.jobs] == ["1001", "1003"]
    [rejected] = result.rejected
    assert rejected.line_number == 3
    assert "longer than 1 MB" in rejected.reason
    assert rejected.raw.startswith("1002|x|x|") and len(rejected.raw) == 1001  # its beginning, and an ellipsis


def test_a_line_of_exactly_the_longest_length_is_read():
    name = "n" * (MAX_LINE_BYTES - len(line(JobName="")))
    result = parse_sacct(payload("|".join(COLUMNS), line(JobName=name)))

    assert result.rejected == [] and len(result.jobs) == 1


def test_a_first_line_longer_than_any_sacct_line_is_refused():
    with pytest.raises(SacctFormatError, match="the first line, is longer than 1 MB"):
        parse_sacct(payload("JobID|" + "x" * MAX_LINE_BYTES, line()))


def test_sacct_json_on_one_line_longer_than_the_longest_text_line_is_read():
    jobs = [json_job(job_id=5001 + number, name="n" * 1000) for number in range(1500)]
    data = json_payload(*jobs)
    assert len(data) > 1.2 * MAX_LINE_BYTES and b"\n" not in data

    result = parse_sacct(io.BufferedReader(io.BytesIO(data)))

    assert result.rejected == [] and len(result.jobs) == 1500


def test_it_refuses_a_first_line_that_is_not_utf8():
    with pytest.raises(SacctFormatError, match="line 1, the first line, is not valid UTF-8"):
        parse_sacct(b"JobID|\xff\n" + line().encode())


def test_it_reads_headerless_output_with_the_columns_given_and_account_optional():
    columns = [column for column in COLUMNS if column != "Account"]
    data = payload(line(columns, delimiter="\u2603", trailing="\u2603"), line(columns, "\u2603", "\u2603", JobID="7"))

    result = parse_sacct(data, columns=columns)

    assert result.format == "parsable"
    assert [(job.line_number, job.job_id, job.account, job.gpus) for job in result.jobs] == [
        (1, "1001", "", 4),
        (2, "7", "", 4),
    ]


def test_it_skips_a_header_matching_the_columns_given():
    data = payload("|".join(COLUMNS), line())

    assert [job.line_number for job in parse_sacct(data, columns=COLUMNS).jobs] == [2]


def test_it_still_requires_the_other_columns_when_columns_are_given():
    with pytest.raises(SacctFormatError, match="lacks required columns: JobID;"):
        parse_sacct(payload(line()), columns=["Job", *COLUMNS[1:]])


def test_iter_sacct_streams_a_gzip_file_and_counts_skipped_rows_as_it_goes():
    data = payload("|".join(COLUMNS), line(), line(JobID="1001.batch"), line(JobID="1002", JobIDRaw="1002"))
    compressed = gzip.GzipFile(fileobj=io.BytesIO(gzip.compress(data)))

    reader = iter_sacct(compressed)
    first = next(reader)

    assert (first.job_id, reader.skipped_steps) == ("1001", 0)
    assert next(reader).job_id == "1002"
    assert reader.skipped_steps == 1
    assert list(reader) == []


def test_iter_sacct_raises_format_errors_before_any_row_is_asked_for():
    with pytest.raises(SacctFormatError):
        iter_sacct(payload("JobID|State"))


def test_a_job_row_built_for_speed_equals_one_built_by_its_constructor():
    values = {field.name: index for index, field in enumerate(dataclasses.fields(JobRow))}

    fast = _new_job_row(dict(values))

    assert fast == JobRow(**values)
    assert hash(fast) == hash(JobRow(**values))
    assert dataclasses.asdict(fast) == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.gpus = 1


def test_the_rows_read_by_the_parser_carry_every_field_of_job_row():
    job = only_job(parse_rows({}))

    assert set(vars(job)) == {field.name for field in dataclasses.fields(JobRow)}


# The ingest's fast path (SacctReader.records) must read every line exactly as the JobRow path does: the
# ordinary line it reads inline, everything else it hands to the full rules.
ODD_LINES = [
    "1|1|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|3600|gres/gpu=2|train",
    "2_4|2|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|a",
    "3+1|3|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|het",
    "4.batch|4.batch|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60||b",
    "5_[1-9]|5|c|acc|u|PENDING|2026-03-01T09:00:00|Unknown|Unknown|0||pending",
    "6|6|c|acc|u|CANCELLED by 1234|2026-03-01T09:00:00|None|None|0||never",
    "7|7|c|acc|u|RUNNING|2026-03-01T09:00:00|2026-03-01T10:00:00|Unknown|60|billing=1,gres/gpu=8|run",
    "8|8|c|acc|u|COMPLETED|2026-02-29T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|feb29",
    "9|9|c|acc|u|COMPLETED|2026-02-30T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|feb30",
    "10|10|c|acc|u|COMPLETED|2026-W09-1T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|week",
    "11|11|c|acc|u|COMPLETED|2026-03-01 09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|space",
    "12|12|c|acc|u|COMPLETED|2026-03-01T09:00:00+01:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60||offset",
    "13|13|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1,gres/gpu=2|x",
    "14|14|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu:a100=4|typed",
    "15|15|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpumem=80G|mem",
    "16|16|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|xgres/gpu=3|prefix",
    "17|17|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=999999|big",
    "18|18|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=٣|arabic",
    "19|19|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|99999999999|gres/gpu=1|x",
    "20|20|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|-5|gres/gpu=1|neg",
    "21|21|c|acc|u|WEIRD STATE|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|s",
    "22|x22|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|raw",
    "23|23|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|a|b|c",
    "24|24|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00",
    "25|25|c|a\\b|u\tv|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|t\\n",
    "26|26|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|nul\x00",
    "27|27|c|acc|u|COMPLETED||2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|no-submit",
    "",
    "   ",
    "２８|28|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|wide",
    "29|29|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=01|zero",
    "30|30|c|acc|u|COMPLETED|9999-12-31T23:59:59|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=1|far",
    "32|32|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|cpu=1,gres/gpu|bare",
    "33|33|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=|empty",
    "34|34|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu,gres/gpu=2|2x",
    "35|35|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=2,gres/gpu|2x",
    "36|36|c|acc|u|COMPLETED|2026-03-01T09:00:00|2026-03-01T10:00:00|2026-03-01T11:00:00|60|gres/gpu=2,gres/gpu:a100=2|t",
]


def records_and_rows(data: bytes, **options):
    fast = iter_sacct(data, **options)
    records = list(fast.records())
    slow = iter_sacct(data, **options)
    rows = [_fields_of_row(row) if type(row) is JobRow else row for row in slow]
    return (records, fast.skipped_steps, fast.skipped_pending), (rows, slow.skipped_steps, slow.skipped_pending)


@pytest.mark.parametrize("tz", [UTC, ZoneInfo("Europe/London")], ids=["utc", "london"])
def test_the_fast_reading_of_the_ingest_gives_what_the_job_rows_give_on_odd_lines(tz):
    data = ("|".join(COLUMNS) + "\n" + "\n".join(ODD_LINES) + "\n").encode() + b"31|\xff|bad utf-8\n"

    fast, slow = records_and_rows(data, tz=tz)

    assert fast == slow
    assert len(fast[0]) > 20 and fast[1] == 1 and fast[2] == 1


@pytest.mark.parametrize("name", ["tdhock-sacct-allcols.txt", "tdhock-sacct-manyfields.txt", "habrok"])
def test_the_fast_reading_of_the_ingest_gives_what_the_job_rows_give_on_real_output(name):
    from tests.allocations.test_sacct_real_data import HABROK_COLUMNS, sacct_sample

    if name == "habrok":
        options = {"columns": [*HABROK_COLUMNS], "data": sacct_sample("habrok-hb-jobinfo-sacct.txt").read_bytes()}
    else:
        options = {"data": sacct_sample(name).read_bytes()}

    fast, slow = records_and_rows(**options)

    assert fast == slow
    assert fast[0]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet="0123456789|-:T+_., gres/puNoUnkwCOMPLETD\t\\", max_size=120), max_size=5))
def test_the_fast_reading_of_the_ingest_gives_what_the_job_rows_give_on_any_text(lines):
    data = ("|".join(COLUMNS) + "\n" + "\n".join([ODD_LINES[0], *lines]) + "\n").encode()

    fast, slow = records_and_rows(data)

    assert fast == slow


# --- sacct --json ------------------------------------------------------------------------------------------


def json_job(**changes):
    """A job as data_parser v0.0.40 (Slurm 24.05) prints it, trimmed to the fields the parser reads."""
    job = {
        "account": "airr-00042",
        "array": {"job_id": 0, "task_id": {"set": False, "infinite": False, "number": 0}, "task": ""},
        "cluster": "isambard-ai",
        "het": {"job_id": 0, "job_offset": {"set": False, "infinite": False, "number": 0}},
        "job_id": 5001,
        "name": "train",
        "state": {"current": ["COMPLETED"], "reason": "None"},
        "steps": [
            {"step": {"id": "5001.batch", "name": "batch"}},
            {"step": {"id": "5001.0", "name": "python"}},
        ],
        "time": {"elapsed": 3600, "end": 1740826800, "start": 1740823200, "submission": 1740819600},
        "tres": {
            "allocated": [
                {"type": "cpu", "name": "", "id": 1, "count": 8},
                {"type": "energy", "name": "", "id": 3, "count": -2},
                {"type": "gres", "name": "gpu:gh200", "id": 1002, "count": 4},
                {"type": "gres", "name": "gpu", "id": 1001, "count": 4},
            ]
        },
        "user": "alice",
    }
    return job | changes


def json_payload(*jobs):
    return json.dumps({"jobs": list(jobs), "meta": {"plugin": {"data_parser": "data_parser/v0.0.40"}}}).encode()


def test_it_reads_sacct_json():
    result = parse_sacct(b"  \n" + json_payload(json_job()))

    assert result.format == "json"
    assert result.skipped_steps == 2
    job = only_job(result)
    assert (job.line_number, job.job_id, job.job_id_raw, job.cluster) == (1, "5001", "5001", "isambard-ai")
    assert (job.account, job.user, job.state, job.job_name) == ("airr-00042", "alice", "COMPLETED", "train")
    assert job.submit == datetime(2025, 3, 1, 9, tzinfo=UTC)
    assert job.start == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert job.end == datetime(2025, 3, 1, 11, tzinfo=UTC)
    assert (job.elapsed_seconds, job.gpus, job.running) == (3600, 4, False)
    assert json.loads(job.raw)["job_id"] == 5001


def test_it_reads_sacct_json_after_a_byte_order_mark():
    result = parse_sacct(b"\xef\xbb\xbf" + json.dumps({"jobs": [json_job()]}, indent=1).encode())

    assert result.format == "json"
    assert only_job(result).gpus == 4


def test_it_names_json_array_tasks_and_het_components_as_sacct_prints_them():
    array_task = json_job(job_id=6004, array={"job_id": 6000, "task_id": {"set": True, "number": 4}, "task": ""})
    component = json_job(job_id=7001, het={"job_id": 7000, "job_offset": {"set": True, "number": 1}})
    older_array_task = json_job(job_id=6005, array={"job_id": 6000, "task_id": 5})

    result = parse_sacct(json_payload(array_task, component, older_array_task))

    assert [(job.job_id, job.job_id_raw) for job in result.jobs] == [
        ("6000_4", "6004"),
        ("7000+1", "7001"),
        ("6000_5", "6005"),
    ]


def test_it_names_a_json_job_outside_any_array_or_het_job_by_its_own_id():
    no_value = 0xFFFFFFFE  # Slurm's NO_VAL, which older versions print for "not set"
    older = json_job(array={"job_id": 0, "task_id": no_value}, het={"job_id": 0, "job_offset": no_value})
    zero_task = json_job(job_id=5002, array={"job_id": 0, "task_id": 0}, het={"job_id": 0, "job_offset": 0})
    unset_task = json_job(job_id=5003, array={"job_id": 5003, "task_id": no_value})

    result = parse_sacct(json_payload(older, zero_task, unset_task))

    assert [job.job_id for job in result.jobs] == ["5001", "5002", "5003"]


def test_it_reads_the_wrapped_numbers_and_plain_state_of_other_json_versions():
    job = json_job(
        state={"current": "CANCELLED", "reason": "None"},
        time={
            "elapsed": 60,
            "start": {"set": True, "infinite": False, "number": 1740823200},
            "end": {"set": True, "infinite": False, "number": 1740823260},
            "submission": {"set": False, "infinite": False, "number": 0},
        },
    )

    result = parse_sacct(json_payload(job, json_job(state="TIMEOUT")))

    wrapped, plain_state = result.jobs
    assert (wrapped.state, wrapped.submit, wrapped.elapsed_seconds) == ("CANCELLED", None, 60)
    assert wrapped.end - wrapped.start == timedelta(seconds=60)
    assert plain_state.state == "TIMEOUT"


def test_it_reads_a_json_job_with_end_zero_as_still_running():
    job = only_job(
        parse_sacct(json_payload(json_job(state={"current": ["RUNNING"]}, time={"elapsed": 5, "start": 1, "end": 0})))
    )

    assert (job.state, job.end, job.running) == ("RUNNING", None, True)


def test_it_skips_a_pending_array_range_in_json():
    pending = json_job(
        job_id=8000,
        state={"current": ["PENDING"]},
        array={"job_id": 8000, "task_id": {"set": False, "number": 0}, "task": "5-9"},
        time={"elapsed": 0, "start": 0, "end": 0, "submission": 1740819600},
    )

    result = parse_sacct(json_payload(pending, json_job()))

    assert result.skipped_pending == 1
    assert [job.job_id for job in result.jobs] == ["5001"]


def test_a_json_job_without_the_fields_that_say_when_it_started_and_what_it_held_is_rejected_not_charged_nothing():
    # A shape this reader does not know (fields moved or renamed in another Slurm version) must not read as a job
    # that never ran, or as one that held no GPU: both would charge nothing without a word.
    started_elsewhere = json_job(time={"elapsed": 3600, "end": 1740826800, "started": 1740823200})
    held_elsewhere = json_job(tres={"allocation": [{"type": "gres", "name": "gpu", "count": 4}]})
    never_ran = json_job(time={"elapsed": 0, "start": 0, "end": 0}, tres={"requested": []})

    result = parse_sacct(json_payload(started_elsewhere, held_elsewhere, never_ran))

    assert [(row.line_number, row.reason) for row in result.rejected] == [
        (1, "time.start is missing"),
        (2, "tres.allocated is missing"),
    ]
    assert [(job.line_number, job.start) for job in result.jobs] == [(3, None)]


@pytest.mark.parametrize(
    "entry",
    [
        {"type": "gres", "name": "gpu", "id": 1001, "count": None},
        {"type": "gres", "name": "gpu", "id": 1001},
        {"type": "gres", "name": "gpu", "id": 1001, "count": {"set": False, "infinite": False, "number": 0}},
        {"type": "gres", "name": "gpu", "id": 1001, "count": {"set": True, "infinite": True, "number": 0}},
    ],
    ids=["null", "missing", "unset", "infinite"],
)
def test_a_json_gpu_entry_without_a_count_is_rejected_not_charged_as_no_gpus(entry):
    job = json_job(tres={"allocated": [{"type": "cpu", "name": "", "id": 1, "count": 8}, entry]})

    rejected = only_rejection(parse_sacct(json_payload(job)))

    assert (rejected.line_number, rejected.reason) == (1, "the gres/gpu entry of tres.allocated has no count of GPUs")


def test_a_json_job_listing_the_untyped_gpu_entry_twice_is_rejected_not_charged_on_a_guess():
    gpu = {"type": "gres", "name": "gpu", "id": 1001}
    job = json_job(
        tres={"allocated": [{**gpu, "count": 2}, {"type": "gres", "name": "gpu:a100", "count": 2}, {**gpu, "count": 4}]}
    )

    rejected = only_rejection(parse_sacct(json_payload(job)))

    assert (rejected.line_number, rejected.reason) == (1, "tres.allocated lists gres/gpu more than once")


def test_a_json_gpu_count_of_zero_is_a_job_without_gpus():
    job = json_job(tres={"allocated": [{"type": "gres", "name": "gpu", "id": 1001, "count": 0}]})

    assert only_job(parse_sacct(json_payload(job))).gpus == 0


def test_it_rejects_malformed_json_job_entries_and_reads_the_rest():
    malformed = [
        ("not a job", "the job entry is not a JSON object"),
        (json_job(job_id="5001"), "job_id is not a whole number"),
        (json_job(job_id=None), "job_id is missing"),
        (json_job(time={"elapsed": -1}), "time.elapsed is not a whole number"),
        (json_job(time={"start": 1}), "time.elapsed is missing"),
        (json_job(time={"elapsed": 1, "start": 10**20}), "time.start 100000000000000000000 is out of range"),
        (
            json_job(tres={"allocated": [{"type": "gres", "name": "gpu", "count": 2.0}]}),
            "is not a whole number",
        ),
        (
            json_job(tres={"allocated": [{"type": "gres", "name": "gpu", "count": True}]}),
            "is not a whole number",
        ),
        (json_job(tres={"allocated": [{"type": "gres", "name": "gpu", "count": 10**6}]}), "100000 or more"),
        (json_job(tres={"allocated": "gpu=1"}), "tres.allocated is not a list"),
        (json_job(state={"current": []}), "state is not a Slurm job state"),
        (json_job(state={"current": ["weird"]}), "State 'weird' is not a Slurm job state"),
        (json_job(user=7), "user is not text"),
        (json_job(account="a\x00b"), "account contains a NUL character or a lone surrogate"),
        (json_job(array=[]), "array is not a JSON object"),
    ]
    jobs = [entry for entry, _ in malformed]

    result = parse_sacct(json_payload(*jobs, json_job(job_id=9999)))

    assert [job.job_id for job in result.jobs] == ["9999"]
    assert [row.line_number for row in result.rejected] == list(range(1, len(malformed) + 1))
    for row, (_, reason) in zip(result.rejected, malformed, strict=True):
        assert reason in row.reason
    assert json.loads(result.rejected[0].raw) == "not a job"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"jobs": [', "starts like JSON but is not valid JSON"),
        (b'{"meta": {}}', 'has no "jobs" list'),
        (b'{"jobs": {"1": {}}}', 'has no "jobs" list'),
        (b'{"jobs": ["\xff"]}', "starts like JSON but is not valid UTF-8"),
        (b"{" * 100_000, "not valid JSON"),
    ],
)
def test_it_refuses_a_payload_that_starts_like_json_but_is_not_sacct_json(data, message):
    with pytest.raises(SacctFormatError, match=message):
        parse_sacct(data)


# --- Properties --------------------------------------------------------------------------------------------


def non_blank_line_numbers_after(data: bytes, header_line_number: int) -> list[int]:
    return [
        number for number, text in enumerate(data.split(b"\n"), start=1) if number > header_line_number and text.strip()
    ]


def assert_every_line_is_accounted_for(result, data, header_line_number=1):
    numbers = [row.line_number for row in result.jobs] + [row.line_number for row in result.rejected]
    expected = non_blank_line_numbers_after(data, header_line_number)
    assert len(numbers) == len(set(numbers))
    assert set(numbers) <= set(expected)
    assert len(numbers) + result.skipped_steps + result.skipped_pending == len(expected)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000) | st.builds(lambda tail: b"JobID|" + tail, st.binary(max_size=500)))
def test_arbitrary_bytes_raise_nothing_but_a_format_error(data):
    try:
        result = parse_sacct(data)
    except SacctFormatError as error:
        assert str(error)
        return
    assert all(row.reason for row in result.rejected)


FIELD_VALUES = st.sampled_from(
    [
        "",
        "1001",
        "1001_4",
        "1001+1",
        "1001.batch",
        "1001_[1-3]",
        "COMPLETED",
        "CANCELLED by 7",
        "None",
        "Unknown",
        "2025-03-01T10:00:00",
        "2025-02-30T10:00:00",
        "99999999999",
        "7200",
        "-1",
        "gres/gpu=2",
        "gres/gpu:a100=2,gres/gpu=x",
        "01:00:00",
        "\x00",
        "|",
    ]
)
PLAUSIBLE_LINES = st.lists(FIELD_VALUES | st.text(max_size=12), min_size=8, max_size=14).map("|".join)
ANY_LINES = st.lists(PLAUSIBLE_LINES | st.text(max_size=80), max_size=20)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(lines=ANY_LINES, trailing=st.booleans(), line_ending=st.sampled_from(["\n", "\r\n"]))
def test_every_line_after_a_valid_header_is_accounted_for_exactly_once(lines, trailing, line_ending):
    header = "|".join(COLUMNS) + ("|" if trailing else "")
    data = (header + line_ending + line_ending.join(lines)).encode()

    result = parse_sacct(data)

    assert_every_line_is_accounted_for(result, data)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(lines=ANY_LINES, garbage=st.lists(st.binary(max_size=30), max_size=5))
def test_every_line_is_accounted_for_with_columns_given_and_invalid_bytes_mixed_in(lines, garbage):
    data = b"\n".join([text.encode() for text in [line(), *lines]] + garbage)

    result = parse_sacct(data, columns=COLUMNS, delimiter="|")

    assert_every_line_is_accounted_for(result, data, header_line_number=0)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["job_id", "set", "number", "current", "count", "type", "name", "gpu", "gres", "start"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
JSON_JOB_KEYS = [
    "job_id",
    "array",
    "het",
    "cluster",
    "account",
    "user",
    "state",
    "time",
    "tres",
    "name",
    "steps",
]
JSON_JOBS = st.fixed_dictionaries({}, optional=dict.fromkeys(JSON_JOB_KEYS, JSON_VALUES))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(JSON_JOBS | JSON_VALUES | st.builds(json_job), max_size=6))
def test_every_json_job_entry_is_accounted_for_exactly_once(jobs):
    result = parse_sacct(json.dumps({"jobs": jobs}).encode())

    numbers = sorted([row.line_number for row in result.jobs] + [row.line_number for row in result.rejected])
    assert len(numbers) + result.skipped_pending == len(jobs)
    assert len(set(numbers)) == len(numbers)


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="|\n\r\x00", exclude_categories=["Cs"]), max_size=12)
MOMENTS = st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1)).map(
    lambda moment: moment.replace(microsecond=0, tzinfo=UTC)
)
STATES = st.sampled_from(["COMPLETED", "FAILED", "TIMEOUT", "RUNNING", "NODE_FAIL", "OUT_OF_MEMORY", "PENDING"])


@st.composite
def job_rows(draw):
    number = draw(st.integers(1, 10**9))
    job_id = draw(st.sampled_from([str(number), f"{number}_{draw(st.integers(0, 9999))}", f"{number}+1"]))
    gpus = draw(st.integers(0, GPU_COUNT_LIMIT - 1))
    tres = ["billing=8", "cpu=8", "mem=64G", "node=1"]
    if gpus or draw(st.booleans()):
        tres.append(f"gres/gpu={gpus}")
    if draw(st.booleans()):
        tres.append(f"gres/gpu:gh200={draw(st.integers(0, gpus))}")
    return {
        "job_id": job_id,
        "job_id_raw": str(draw(st.integers(0, 10**12))),
        "cluster": draw(TEXT),
        "account": draw(TEXT),
        "user": draw(TEXT),
        "state": draw(STATES),
        "submit": draw(st.none() | MOMENTS),
        "start": draw(st.none() | MOMENTS),
        "end": draw(st.none() | MOMENTS),
        "elapsed_seconds": draw(st.integers(0, ELAPSED_SECONDS_LIMIT - 1)),
        "gpus": gpus,
        "tres": ",".join(draw(st.permutations(tres))),
        "job_name": draw(st.text(st.characters(codec="utf-8", exclude_characters="\n\r\x00"), max_size=20)),
    }


def render(job, column):
    def time(moment, absent):
        return absent if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S")

    return {
        "JobID": job["job_id"],
        "JobIDRaw": job["job_id_raw"],
        "Cluster": job["cluster"],
        "Account": job["account"],
        "User": job["user"],
        "State": job["state"],
        "Submit": time(job["submit"], "Unknown"),
        "Start": time(job["start"], "None"),
        "End": time(job["end"], "Unknown"),
        "ElapsedRaw": str(job["elapsed_seconds"]),
        "AllocTRES": job["tres"],
        "JobName": job["job_name"],
    }[column]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    jobs=st.lists(job_rows(), min_size=1, max_size=10),
    order=st.permutations(COLUMNS[:-1]),
    trailing=st.sampled_from(["", "|"]),
)
def test_valid_rows_rendered_as_sacct_output_read_back_to_the_same_values(jobs, order, trailing):
    columns = [*order, "JobName"]
    lines = ["|".join(columns) + trailing] + ["|".join(render(job, c) for c in columns) + trailing for job in jobs]

    result = parse_sacct("\n".join(lines).encode())

    assert result.rejected == []
    assert result.format == ("parsable" if trailing else "parsable2")
    expected = [{field: value for field, value in job.items() if field != "tres"} for job in jobs]
    assert [{field: getattr(row, field) for field in expected[0]} for row in result.jobs] == expected
    assert [row.raw for row in result.jobs] == lines[1:]


# --- The system's cluster ----------------------------------------------------------------------------------


def test_a_row_of_another_cluster_is_rejected_and_one_of_this_cluster_or_none_is_read():
    from tests.allocations.usage_helpers import payload, sacct_line

    data = payload(
        sacct_line(1),
        sacct_line(2, cluster="ISAMBARD-AI"),  # sacct prints what slurm.conf says; case is not a different cluster
        sacct_line(3, cluster=""),
        sacct_line(4, cluster="dawn"),
        sacct_line(5, cluster="dawn", start="2026-03-01 10:00:00"),  # beside the fast path's common shape
    )
    for tz in (UTC, ZoneInfo("Europe/London")):  # the fast path reads UTC only: both ways
        result = parse_sacct(data, tz=tz, cluster="isambard-ai")
        assert [job.job_id for job in result.jobs] == ["1", "2", "3"]
        assert [row.line_number for row in result.rejected] == [5, 6]
        assert result.rejected[0].reason.startswith("Cluster 'dawn' is not this system's cluster ('isambard-ai')")
        records = list(iter_sacct(data, tz=tz, cluster="isambard-ai").records())
        assert [r.line_number if type(r) is RejectedRow else r[0] for r in records] == [2, 3, 4, 5, 6]
        assert [type(record) is RejectedRow for record in records] == [False, False, False, True, True]

    assert len(parse_sacct(data).jobs) == 5  # without a cluster to check, every row is read


def test_a_json_job_of_another_cluster_is_rejected():
    result = parse_sacct(json_payload(json_job(), json_job(job_id=5002, cluster="dawn")), cluster="Isambard-AI")

    assert [job.job_id for job in result.jobs] == ["5001"]
    [rejected] = result.rejected
    assert (rejected.line_number, rejected.reason[:50]) == (2, "Cluster 'dawn' is not this system's cluster ('isam")


@pytest.mark.parametrize("as_first_line", [False, True], ids=["a row", "the first line"])
def test_a_line_longer_than_any_sacct_line_that_begins_with_blanks_is_rejected_not_dropped_as_blank(as_first_line):
    # Its first megabyte is spaces and the rest a job: read as blank, it vanished with no row to say so.
    too_long = " " * (MAX_LINE_BYTES + 10) + line(JobID="1002", JobIDRaw="1002")
    if as_first_line:
        with pytest.raises(SacctFormatError, match="the first line, is longer than 1 MB"):
            parse_sacct(payload(too_long, "|".join(COLUMNS), line()))
        return
    result = parse_sacct(payload("|".join(COLUMNS), too_long, line()))

    assert [job.job_id for job in result.jobs] == ["1001"]
    [rejected] = result.rejected
    assert (rejected.line_number, "longer than 1 MB" in rejected.reason) == (2, True)


@pytest.mark.parametrize("delimiter", [None, "|"])
def test_output_made_with_noheader_whose_first_line_is_longer_than_any_sacct_line_rejects_that_line_only(delimiter):
    # Without a header its first line is a job's, rejected as any other too long one: the rest is still read.
    too_long = line(JobID="1002", JobIDRaw="1002", JobName="n" * (MAX_LINE_BYTES + 10))
    result = parse_sacct(payload(too_long, line()), columns=COLUMNS, delimiter=delimiter)

    assert [job.job_id for job in result.jobs] == ["1001"]
    [rejected] = result.rejected
    assert (rejected.line_number, "longer than 1 MB" in rejected.reason) == (1, True)


def test_output_made_with_noheader_opening_with_a_few_too_long_lines_rejects_them_and_reads_the_rest(monkeypatch):
    monkeypatch.setattr("allocations.usage.sacct.MAX_LINE_BYTES", 1024)  # lines of a kilobyte stand for a megabyte
    result = parse_sacct(payload(*["x" * 2000] * 10, line()), columns=COLUMNS)

    assert [job.job_id for job in result.jobs] == ["1001"]
    assert [row.line_number for row in result.rejected] == list(range(1, 11))


def test_output_made_with_noheader_opening_with_many_too_long_lines_is_refused_without_holding_them(monkeypatch):
    # Each is held until a line shows the layout: a gigabyte payload holds a thousand of a megabyte, and read one call
    # deeper each, they also passed Python's recursion limit.
    monkeypatch.setattr("allocations.usage.sacct.MAX_LINE_BYTES", 1024)
    with pytest.raises(SacctFormatError, match="the first 11 lines are all longer than"):
        parse_sacct(payload(*["x" * 2000] * 1500, line()), columns=COLUMNS)


def test_a_line_of_exactly_the_longest_length_ending_as_on_windows_is_read():
    # "\r\n" ends the line as "\n" does: its length is the same line's, not one byte more.
    name = "n" * (MAX_LINE_BYTES - len(line(JobName="")))
    data = "\r\n".join(["|".join(COLUMNS), line(JobName=name), ""]).encode()
    result = parse_sacct(data)

    assert result.rejected == [] and len(result.jobs) == 1


def test_a_line_cut_at_the_longest_length_just_after_carriage_returns_is_rejected_whole():
    # Its beginning ends in "\r"s: they are not its end, and the job on the rest of the line is not read apart.
    too_long = "x" * (MAX_LINE_BYTES - 5) + "\r" * 7 + line(JobID="1002", JobIDRaw="1002")
    result = parse_sacct(payload("|".join(COLUMNS), too_long, line()))

    assert [job.job_id for job in result.jobs] == ["1001"]
    assert [(row.line_number, "longer than 1 MB" in row.reason) for row in result.rejected] == [(2, True)]
