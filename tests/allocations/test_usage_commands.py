"""The management commands: ingest a file with a progress bar, reconcile, and export the Slurm limits."""

import contextlib
import gzip
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from tqdm import tqdm

from allocations import ledger
from allocations.models import IngestBatch, JobRecord
from tests.allocations.test_ingest_sacct import expected_habrok_seconds, habrok_with_accounts
from tests.allocations.test_sacct_real_data import HABROK_COLUMNS
from tests.allocations.usage_helpers import HOUR, funded_allocation, payload, sacct_line

pytestmark = pytest.mark.django_db


def test_ingest_sacct_reads_a_file_charges_it_and_prints_the_counts(system, tmp_path, capsys):
    allocation = funded_allocation(system)
    file = tmp_path / "jobs.txt.gz"
    file.write_bytes(gzip.compress(payload(sacct_line(1, gpus=2), "broken|line")))

    call_command("ingest_sacct", str(file), "--system", "isambard-ai")

    out, err = capsys.readouterr()
    assert "1 new, 0 updated, 0 unchanged, 0 unmatched, 1 rejected" in out
    assert "line 3: expected 12 fields, found 2" in out
    assert "reading" in err  # the progress bar
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 2 * HOUR


def test_ingest_sacct_of_a_file_stored_before_but_never_read_reads_it_charges_it_and_says_so(system, tmp_path, capsys):
    from allocations.usage.ingest import receive_payload

    allocation = funded_allocation(system)
    file = tmp_path / "jobs.txt"
    file.write_bytes(payload(sacct_line(1, gpus=2)))
    waiting = receive_payload(system=system, payload=file.read_bytes(), source="upload").batch  # never read

    call_command("ingest_sacct", str(file), "--system", "isambard-ai")

    out, _ = capsys.readouterr()
    assert "nothing changed" not in out
    assert f"Batch {waiting.pk}: 1 new" in out
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 2 * HOUR


def test_ingest_sacct_charges_the_real_habrok_file_per_account_as_worked_out_from_its_fields(system, tmp_path):
    expected = expected_habrok_seconds()
    allocations = {account: funded_allocation(system, account=account) for account in expected}
    file = tmp_path / "habrok.txt"
    file.write_bytes(habrok_with_accounts())

    call_command(
        "ingest_sacct",
        str(file),
        "--system",
        "isambard-ai",
        "--columns",
        ",".join([*HABROK_COLUMNS, "Account"]),
    )

    charged = {
        account: ledger.net_usage(ledger.allocation_account(allocation)) for account, allocation in allocations.items()
    }
    assert charged == expected
    assert JobRecord.objects.with_charged_seconds().filter(charged_seconds__gt=0).count() == 9


def test_ingest_sacct_names_an_unknown_system(tmp_path):
    file = tmp_path / "jobs.txt"
    file.write_bytes(payload(sacct_line(1)))

    with pytest.raises(CommandError, match="No system has the slug 'nowhere'"):
        call_command("ingest_sacct", str(file), "--system", "nowhere")


def test_ingest_sacct_refuses_a_delimiter_longer_than_a_batch_keeps_with_a_message_not_a_traceback(system, tmp_path):
    file = tmp_path / "jobs.txt"
    file.write_bytes(payload(sacct_line(1)).replace(b"|", b"<sep>"))

    with pytest.raises(CommandError, match="1 to 4 characters"):
        call_command("ingest_sacct", str(file), "--system", "isambard-ai", "--delimiter", "<sep>", "--quiet")

    assert not IngestBatch.objects.exists()


def stored_files(settings) -> list[str]:
    folder = Path(settings.MEDIA_ROOT) / "ingest"
    return sorted(path.name for path in folder.rglob("*") if path.is_file())


def test_ingest_sacct_refuses_a_file_over_the_size_limit_before_storing_it_and_keeps_what_was_stored(
    system, tmp_path, settings
):
    earlier = tmp_path / "earlier.txt"
    earlier.write_bytes(payload(sacct_line(1)))
    call_command("ingest_sacct", str(earlier), "--system", "isambard-ai", "--quiet")
    kept = stored_files(settings)
    settings.INGEST_MAX_UNCOMPRESSED_BYTES = 1024 * 1024
    file = tmp_path / "jobs.txt"
    file.write_bytes(payload(*[sacct_line(n) for n in range(2, 12_000)]))
    assert file.stat().st_size > 1024 * 1024

    with pytest.raises(CommandError, match=r"jobs.txt is larger than 1 MB, .*split it by date"):
        call_command("ingest_sacct", str(file), "--system", "isambard-ai", "--quiet")

    assert IngestBatch.objects.count() == 1 and JobRecord.objects.count() == 1
    assert stored_files(settings) == kept


def test_ingest_sacct_takes_a_plain_file_larger_than_an_api_body_may_be_up_to_the_unzipped_limit(
    system, tmp_path, settings
):
    """A month of plain sacct text from the operator's disk is read as it would be once unzipped from the API."""
    funded_allocation(system)
    settings.INGEST_MAX_BYTES = 64 * 1024
    settings.INGEST_MAX_UNCOMPRESSED_BYTES = 1024 * 1024
    file = tmp_path / "month.txt"
    file.write_bytes(payload(*[sacct_line(n) for n in range(1, 1_000)]))
    assert 64 * 1024 < file.stat().st_size < 1024 * 1024

    call_command("ingest_sacct", str(file), "--system", "isambard-ai", "--quiet")

    assert IngestBatch.objects.get().status == "ingested" and JobRecord.objects.count() == 999


def test_ingest_sacct_stops_reading_a_pipe_at_the_size_limit_and_stores_none_of_it(system, tmp_path, settings):
    settings.INGEST_MAX_UNCOMPRESSED_BYTES = 1024 * 1024
    pipe = tmp_path / "sacct.fifo"
    os.mkfifo(pipe)
    lines = payload(*[sacct_line(n) for n in range(1, 30_000)])
    assert len(lines) > 2 * 1024 * 1024

    def write() -> None:
        # The command closes the pipe at the limit: what remains cannot be written, as with `sacct | ...`.
        with contextlib.suppress(BrokenPipeError), open(pipe, "wb") as out:
            out.write(lines)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        with pytest.raises(CommandError, match=r"sacct.fifo is larger than 1 MB.*Nothing was stored"):
            call_command("ingest_sacct", str(pipe), "--system", "isambard-ai", "--quiet")
    finally:
        writer.join(timeout=10)

    assert not IngestBatch.objects.exists() and not JobRecord.objects.exists()
    assert stored_files(settings) == []  # not even the part copied before the limit


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_ingest_sacct_of_dev_zero_stops_at_the_size_limit(system, settings):
    settings.INGEST_MAX_UNCOMPRESSED_BYTES = 3 * 1024 * 1024

    with pytest.raises(CommandError, match="/dev/zero is larger than 3 MB"):
        call_command("ingest_sacct", "/dev/zero", "--system", "isambard-ai", "--quiet")

    assert not IngestBatch.objects.exists()
    assert stored_files(settings) == []


def test_ingest_sacct_of_a_gzip_bomb_stops_at_the_unzipped_limit_and_records_no_job(system, tmp_path, settings):
    settings.INGEST_MAX_UNCOMPRESSED_BYTES = 10_000
    file = tmp_path / "jobs.txt.gz"
    file.write_bytes(gzip.compress(payload(*[sacct_line(n) for n in range(1, 200)])))
    assert file.stat().st_size < 10_000

    with pytest.raises(CommandError, match="expands to more than 0 MB.*No job was recorded: the file is kept"):
        call_command("ingest_sacct", str(file), "--system", "isambard-ai", "--quiet")

    assert not JobRecord.objects.exists()
    assert IngestBatch.objects.get().status == "failed"


def test_export_slurm_limits_prints_absolute_idempotent_sacctmgr_commands(system, capsys):
    funded_allocation(system, account="airr-00001", hours=10)
    funded_allocation(system, account="airr-00002", hours=10, state="exhausted")

    call_command("export_slurm_limits", "--system", "isambard-ai")

    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        "sacctmgr -i modify account where name=airr-00001 cluster=isambard-ai set GrpTRESMins=gres/gpu=600  # active"
    )
    assert out[2].endswith("set GrpTRESMins=gres/gpu=0  # exhausted")


def test_export_slurm_limits_as_json(system, capsys):
    funded_allocation(system, account="airr-00001", hours=1)

    call_command("export_slurm_limits", "--system", "isambard-ai", "--format", "json")

    [limit] = json.loads(capsys.readouterr().out)
    assert (limit["account"], limit["gpu_minutes_limit"], limit["committed_gpu_seconds"]) == (
        "airr-00001",
        60,
        HOUR,
    )


def test_reconcile_usage_says_when_there_is_nothing_new(system, capsys):
    call_command("reconcile_usage", "--system", "isambard-ai")

    assert "Nothing new to charge." in capsys.readouterr().out


def test_export_slurm_limits_can_give_what_remains_for_a_qos_right_after_a_usage_reset(system, capsys):
    allocation = funded_allocation(system, account="airr-00001", hours=10)
    ledger.charge_usage(allocation=allocation, seconds=4 * HOUR, reason="Jobs", idempotency_key="used-4")

    call_command("export_slurm_limits", "--system", "isambard-ai", "--limit", "remaining", "--target", "qos")

    assert capsys.readouterr().out.splitlines()[1] == (
        "sacctmgr -i modify qos where name=airr-00001 set GrpTRESMins=gres/gpu=360  # active"
    )


def test_ingest_sacct_redraws_each_progress_bar_on_one_line_and_ends_the_reading_bar_at_its_full_size(
    system, tmp_path, capsys
):
    file = tmp_path / "jobs.txt.gz"
    text = payload(*(sacct_line(number) for number in range(1, 2000)))
    file.write_bytes(gzip.compress(text))

    call_command("ingest_sacct", str(file), "--system", "isambard-ai")

    _, err = capsys.readouterr()
    lines = [line for line in err.split("\n") if line.strip()]
    # A bar redraws itself after a carriage return: a newline after each redraw would print a line per update.
    assert [line.split(":")[0].strip("\r") for line in lines] == ["storing", "reading"]
    # Closed once the file is read, so its last figure is the whole uncompressed payload, not where it was drawn.
    assert lines[-1].rsplit("\r", 1)[-1].startswith(f"reading: {tqdm.format_sizeof(len(text))}B ")


def run_as_a_shell_script(script: str, directory) -> list[str]:
    """Run the exported commands with `sh`, as an operator would, against a sacctmgr that records its arguments."""
    bin_directory = directory / "bin"
    bin_directory.mkdir()
    fake = bin_directory / "sacctmgr"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$*" >> "$SACCTMGR_LOG"\n')
    fake.chmod(0o755)
    log = directory / "sacctmgr.log"
    log.touch()
    environment = {**os.environ, "PATH": f"{bin_directory}:/usr/bin:/bin", "SACCTMGR_LOG": str(log)}
    subprocess.run(["sh"], input=script, text=True, cwd=directory, env=environment, check=False)
    return log.read_text().splitlines()


def test_export_slurm_limits_never_writes_an_odd_account_name_into_a_command(system, capsys, tmp_path):
    funded_allocation(system, account="airr-00001", hours=10)
    # A comma makes sacctmgr read a list (name=a,root would cap the root account, so the whole cluster); a `;` or
    # a `$(...)` would run in the operator's shell; a newline would end the comment it is named in.
    for odd in ["airr-00002,root", "x;touch pwned", "$(touch pwned)", "y\ntouch pwned"]:
        funded_allocation(system, account=odd, hours=10)

    call_command("export_slurm_limits", "--system", "isambard-ai")
    script = capsys.readouterr().out

    assert run_as_a_shell_script(script, tmp_path) == [
        "-i modify account where name=airr-00001 cluster=isambard-ai set GrpTRESMins=gres/gpu=600"
    ]
    assert not (tmp_path / "pwned").exists()
    assert script.count("is not a plain Slurm name") == 4


def test_export_slurm_limits_writes_no_command_for_a_cluster_name_a_shell_would_split(system, capsys, tmp_path):
    system.cluster_name = "isambard ai;touch pwned"
    system.save()
    funded_allocation(system, account="airr-00001", hours=10)

    call_command("export_slurm_limits", "--system", "isambard-ai")
    script = capsys.readouterr().out

    assert run_as_a_shell_script(script, tmp_path) == []
    assert not (tmp_path / "pwned").exists()
    assert "# SKIPPED 'airr-00001': the cluster name 'isambard ai;touch pwned' is not a plain Slurm name" in script
