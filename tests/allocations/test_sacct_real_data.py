"""The sacct parser on real cluster output (shared/data/sacct), checked against sums worked out here."""

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from allocations.usage.sacct import SacctFormatError, parse_sacct

# Field order of the Habrok file, which has no header (shared/data/README.md).
HABROK_COLUMNS = [
    "JobID",
    "JobName",
    "User",
    "Partition",
    "NodeList",
    "NNodes",
    "NCPUs",
    "NTasks",
    "State",
    "Submit",
    "Start",
    "End",
    "Timelimit",
    "Elapsed",
    "TotalCPU",
    "CPUTime",
    "UserCPU",
    "SystemCPU",
    "ReqMem",
    "MaxRSS",
    "MaxVMSize",
    "ReqTRES",
    "AllocTRES",
    "TRESUsageInMax",
    "TRESUsageInTot",
    "TRESUsageOutTot",
    "MaxDiskRead",
    "MaxDiskWrite",
    "MaxRSSNode",
    "MaxRSSTask",
    "MaxVMSizeNode",
    "MaxVMSizeTask",
    "MaxDiskReadNode",
    "MaxDiskReadTask",
    "MaxDiskWriteNode",
    "MaxDiskWriteTask",
    "Comment",
]
SNOWMAN = "\u2603"


def sacct_sample(name: str) -> Path:
    directory = Path(__file__).resolve().parents[3] / "shared" / "data" / "sacct"
    if not directory.is_dir():
        pytest.skip(f"the real sacct samples are not beside the clone (looked in {directory})")
    return directory / name


def habrok_fields() -> list[list[str]]:
    text = sacct_sample("habrok-hb-jobinfo-sacct.txt").read_text(encoding="utf-8")
    return [line.split(SNOWMAN) for line in text.split("\n") if line]


def seconds_of(elapsed: str) -> int:
    days, hours, minutes, seconds = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d):(\d\d)", elapsed).groups()
    return ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)


def untyped_gpus(tres: str) -> int:
    return sum(int(entry.split("=")[1]) for entry in tres.split(",") if entry.split("=")[0] == "gres/gpu")


def parse_habrok(**options):
    return parse_sacct(sacct_sample("habrok-hb-jobinfo-sacct.txt").read_bytes(), columns=HABROK_COLUMNS, **options)


def test_habrok_has_100_jobs_and_142_steps_and_nothing_unreadable():
    result = parse_habrok()

    assert result.format == "parsable"
    assert (len(result.jobs), result.skipped_steps, result.skipped_pending, result.rejected) == (
        100,
        142,
        0,
        [],
    )


def test_habrok_reads_the_same_with_the_delimiter_given_or_detected():
    assert parse_habrok(delimiter=SNOWMAN) == parse_habrok()


def test_habrok_gpu_seconds_per_user_match_a_sum_worked_out_from_the_file():
    expected = defaultdict(int)
    for fields in habrok_fields():
        if "." not in fields[0]:
            expected[fields[2]] += untyped_gpus(fields[22]) * seconds_of(fields[13])

    charged = defaultdict(int)
    for job in parse_habrok().jobs:
        charged[job.user] += job.gpus * job.elapsed_seconds

    assert charged == expected


def test_habrok_gpu_jobs_are_the_nine_checked_by_hand():
    by_hand = {
        "7965768": 1 * seconds_of("15:28:22"),
        "7946767": 1 * seconds_of("11:23:23"),
        "7939708": 1 * 4,
        "8150389": 2 * (2 * 86400 + 21 * 3600 + 9 * 60 + 16),
        "8298012": 1 * seconds_of("06:34:03"),
        "8202099": 1 * (86400 + 14 * 3600 + 17 * 60 + 59),
        "8069225": 1 * seconds_of("08:45:49"),
        "7971484": 4 * (3 * 60 + 53),
        "7961058": 2 * (40 * 60 + 15),
    }

    gpu_jobs = {job.job_id: job.gpus * job.elapsed_seconds for job in parse_habrok().jobs if job.gpus}

    assert gpu_jobs == by_hand
    assert sum(gpu_jobs.values()) == 793_454


def test_habrok_states_starts_and_ends_are_read_as_found_by_inspection():
    jobs = parse_habrok().jobs

    assert Counter(job.state for job in jobs) == {
        "COMPLETED": 66,
        "CANCELLED": 8,
        "FAILED": 8,
        "TIMEOUT": 7,
        "PENDING": 7,
        "RUNNING": 3,
        "NODE_FAIL": 1,
    }
    never_ran = [job for job in jobs if job.start is None]
    assert len(never_ran) == 10  # 3 printed "None" (cancelled or failed before starting), 7 "Unknown" (pending)
    assert sorted(job.job_id for job in jobs if job.running) == ["8202099", "8298012", "8322514_33"]
    assert len([job for job in jobs if job.end is None]) == 10
    assert len([job for job in jobs if "_" in job.job_id]) == 24
    assert {job.account for job in jobs} == {""}


def test_habrok_rows_keep_their_physical_line_and_text():
    lines = sacct_sample("habrok-hb-jobinfo-sacct.txt").read_text(encoding="utf-8").split("\n")

    for job in parse_habrok().jobs:
        assert lines[job.line_number - 1] == job.raw

    first = parse_habrok().jobs[0]
    assert (first.job_id, first.user, first.state) == ("4034541", "user424", "CANCELLED")
    assert first.start == datetime(2023, 9, 1, 5, 51, 10, tzinfo=UTC)
    assert first.elapsed_seconds == 3 * 3600 + 34 * 60 + 13


def test_compute_canada_output_with_every_column_is_read_from_its_tab_separated_header():
    result = parse_sacct(sacct_sample("tdhock-sacct-allcols.txt").read_bytes())

    assert (result.format, result.skipped_steps, result.rejected) == ("parsable2", 2, [])
    [job] = result.jobs
    assert (job.job_id, job.job_id_raw, job.cluster, job.account) == (
        "32650736",
        "32650736",
        "cedar",
        "rpp-kenclark_cpu",
    )
    assert (job.user, job.state, job.elapsed_seconds, job.gpus) == ("icecube10", "TIMEOUT", 3606, 0)
    assert job.start == datetime(2019, 12, 11, 20, 36, 18, tzinfo=UTC)
    assert job.end == datetime(2019, 12, 11, 21, 36, 24, tzinfo=UTC)


def test_compute_canada_output_with_elapsed_but_no_elapsed_raw_is_read():
    result = parse_sacct(sacct_sample("tdhock-sacct-manyfields.txt").read_bytes())

    [job] = result.jobs
    assert (job.job_id, job.account, job.state, job.elapsed_seconds) == (
        "32641375",
        "rpp-kenclark_cpu",
        "TIMEOUT",
        3629,
    )
    assert result.skipped_steps == 2


@pytest.mark.parametrize("name", ["tdhock-sacct-multiuser.txt", "tdhock-sacct-PENDING.txt"])
def test_output_without_the_columns_needed_for_charging_is_refused_naming_them(name):
    with pytest.raises(SacctFormatError, match="lacks required columns: Account, User, Start, End, AllocTRES;"):
        parse_sacct(sacct_sample(name).read_bytes())


def test_the_real_job_ids_states_and_elapsed_times_of_the_multiuser_file_are_classified_and_summed():
    # The file lacks the columns needed for charging; give every row the same made-up ones and keep the real
    # JobID, State and Elapsed, which hold the quirks: day-long elapsed times, steps and pending ranges.
    real_lines = sacct_sample("tdhock-sacct-multiuser.txt").read_text(encoding="utf-8").splitlines()[1:]
    rows = [line.split("|") for line in real_lines]
    lines = ["JobID|State|Elapsed|Account|User|Start|End|AllocTRES"] + [
        f"{job_id}|{state}|{elapsed}|def-tdhock|tdhock|Unknown|Unknown|gres/gpu=1"
        for job_id, _, state, _, elapsed in rows
    ]

    result = parse_sacct("\n".join(lines).encode())

    allocation_rows = [row for row in rows if "." not in row[0] and "[" not in row[0]]
    assert (len(result.jobs), result.skipped_steps, result.skipped_pending) == (len(allocation_rows), 124, 2)
    assert len(result.jobs) == 446
    assert result.rejected == []
    assert sum(job.elapsed_seconds for job in result.jobs) == sum(seconds_of(row[4]) for row in allocation_rows)
    assert sum(job.elapsed_seconds for job in result.jobs) == 125_108_500
    assert Counter(job.state for job in result.jobs) == Counter(row[2] for row in allocation_rows)
