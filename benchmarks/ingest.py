"""Usage ingestion and reconciliation speed on PostgreSQL, on 1,000,000 job records made from a real trace.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/airr .venv/bin/python benchmarks/ingest.py [--steps]

The records come from the RICC workload log (RIKEN Integrated Cluster of Clusters, 2010, via the Parallel
Workloads Archive; ../shared/data/traces/RICC-2010-2.swf.gz), replayed until there are a million: each pass
shifts job numbers by 10,000,000 and times by 160 days. Rules (shared/data/README.md): Start = submit + wait,
End = Start + run time, ElapsedRaw = run time, GPUs = one per 8 allocated processors (at least 1), State from
the status (1 COMPLETED, 0 FAILED, 5 CANCELLED, else COMPLETED), scheduler account = job number mod 5,000, so
the usage spreads over 5,000 allocations. `--steps` adds the `.batch` and `.0` rows sacct prints for each job.

Prints (a) COPY of the same rows into a plain indexed table, the floor; (b) the portal's ingest path end to
end (the two taking turns three times, their medians compared); (c) reconciliation across 5,000 allocations;
(d) a second reconciliation with nothing new, beside the same before any record was stored; (e) re-ingest of the
same rows in a new payload, and what it charged. Each measured step starts after a CHECKPOINT. Then checks that
each account was charged exactly the GPU-seconds worked out here from the trace, and last prints PostgreSQL's own
part of (b): the rows the ingest stored, copied as text into an empty table built like the job records (its
columns and indexes), with no Python reading them. Works in its own throw-away database (`airr_bench_ingest`).
"""

import gzip
import io
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# BENCH_INGEST_RECORDS measures a smaller run first (the figures in the README are at 1,000,000).
RECORDS = int(os.environ.get("BENCH_INGEST_RECORDS") or 1_000_000)
ALLOCATIONS = 5_000
ROUNDS = 3
BENCH_DATABASE = os.environ.get("BENCH_INGEST_DATABASE") or "airr_bench_ingest"
TRACE = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "RICC-2010-2.swf.gz"
ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)
HEADER = "JobID|JobIDRaw|Cluster|Account|User|State|Submit|Start|End|ElapsedRaw|AllocTRES|JobName\n"
STATES = {"1": "COMPLETED", "0": "FAILED", "5": "CANCELLED"}


def _bench_database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/airr")
    return urlunsplit(urlsplit(url)._replace(path=f"/{BENCH_DATABASE}"))


def _recreate_database(bench_url: str) -> None:
    import psycopg2

    admin = psycopg2.connect(urlunsplit(urlsplit(bench_url)._replace(path="/postgres")))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        cursor.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    admin.close()


def _setup_django(bench_url: str, media: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["DATABASE_URL"] = bench_url
    os.environ["MEDIA_ROOT"] = media
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airr_portal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _moment(seconds: int) -> str:
    return (ORIGIN + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")


def generate(sacct_path: Path, floor_path: Path, *, steps: bool) -> dict[str, int]:
    """Write the sacct text and the floor's TSV of the same rows; return GPU-seconds per account."""
    if not TRACE.exists():
        sys.exit(f"The RICC trace is not at {TRACE}")
    jobs = []
    with gzip.open(TRACE, "rt") as trace:
        for line in trace:
            if line.startswith(";") or not line.strip():
                continue
            fields = line.split()
            jobs.append(fields)
    expected: dict[str, int] = defaultdict(int)
    written = 0
    with open(sacct_path, "w") as sacct, open(floor_path, "w") as floor:
        sacct.write(HEADER)
        replay = 0
        while written < RECORDS:
            shift = replay * 160 * 86400
            for fields in jobs:
                if written >= RECORDS:
                    break
                number = int(fields[0]) + replay * 10_000_000
                submit = int(fields[1]) + shift
                wait = max(int(fields[2]), 0)
                run = max(int(fields[3]), 0)
                processors = max(int(fields[4]), 1)
                gpus = max(processors // 8, 1)
                account = f"airr-{number % ALLOCATIONS:05d}"
                user = f"u{fields[11]}"
                state = STATES.get(fields[10], "COMPLETED")
                start, end = _moment(submit + wait), _moment(submit + wait + run)
                tres = f"billing={processors},cpu={processors},gres/gpu={gpus},node={max(processors // 64, 1)}"
                sacct.write(
                    f"{number}|{number}|isambard-ai|{account}|{user}|{state}|{_moment(submit)}|{start}|{end}|"
                    f"{run}|{tres}|job{number}\n"
                )
                if steps:
                    for step in ("batch", "0"):
                        sacct.write(
                            f"{number}.{step}|{number}.{step}|isambard-ai|{account}|{user}|{state}|"
                            f"{_moment(submit)}|{start}|{end}|{run}|{tres}|{step}\n"
                        )
                floor.write(
                    f"{number}\t{start}+00\t{number}\t{account}\t{user}\t{state}\t{_moment(submit)}+00\t{end}+00\t"
                    f"{run}\t{gpus}\tjob{number}\n"
                )
                expected[account] += gpus * run
                written += 1
            replay += 1
    return dict(expected)


def bench_floor(floor_path: Path) -> float:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            DROP TABLE IF EXISTS bench_floor;
            CREATE TABLE bench_floor (
                job_id_raw text, start timestamptz, job_id text, account text, "user" text, state text,
                submit timestamptz, "end" timestamptz, elapsed_seconds bigint, gpus integer, job_name text
            );
            CREATE UNIQUE INDEX bench_floor_key ON bench_floor (job_id_raw, start);
            """
        )
    began = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor, open(floor_path) as rows:
        cursor.cursor.copy_expert("COPY bench_floor FROM STDIN", rows)
    return time.perf_counter() - began


def forget_the_ingest() -> None:
    """Empty the job records, the id ranges their writes noted, and the batches (and their stored payloads), so that
    the next ingest starts as the first."""
    import shutil

    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE allocations_jobrecord, allocations_jobrecordidrange, allocations_rejectedrow, "
            "allocations_ingestbatch RESTART IDENTITY CASCADE"
        )
    shutil.rmtree(Path(settings.MEDIA_ROOT), ignore_errors=True)


def checkpoint() -> None:
    """Write out what earlier steps left in memory, so that each measured step pays only for its own writes.

    Without it a step can start while PostgreSQL is still flushing the one before, or pass the log's limit
    and trigger a checkpoint of the previous step's pages mid-way, which moved the figures by seconds.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")


def bench_job_records_table() -> float:
    """COPY the stored job records, as text, into an empty table built like theirs; return the seconds.

    What the database alone costs the ingest path: the same rows, columns and indexes, in the order the ingest
    sent them, but no payload to store or read and no Python on the way.
    """
    from django.db import connection, transaction

    from allocations.models import JobRecord

    table = JobRecord._meta.db_table
    columns = ", ".join(f'"{field.column}"' for field in JobRecord._meta.concrete_fields if not field.primary_key)
    with tempfile.TemporaryFile("w+") as rows:
        with connection.cursor() as cursor:
            cursor.cursor.copy_expert(f"COPY (SELECT {columns} FROM {table} ORDER BY id) TO STDOUT", rows)
            cursor.execute(f"CREATE TABLE bench_job_records (LIKE {table} INCLUDING ALL)")
        rows.seek(0)
        checkpoint()
        began = time.perf_counter()
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.cursor.copy_expert(f"COPY bench_job_records ({columns}) FROM STDIN", rows)
        took = time.perf_counter() - began
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_job_records")
    return took


def nothing_new(system) -> float:
    """The best of five reconciliations that find nothing to charge, in seconds."""
    from allocations.usage.reconcile import reconcile_system

    timings = []
    for _ in range(5):
        began = time.perf_counter()
        nothing = reconcile_system(system=system)
        timings.append(time.perf_counter() - began)
        assert nothing is None, "a reconciliation with nothing new charged something"
    return min(timings)


def world():
    from datetime import date

    from allocations.models import Allocation
    from programmes.models import FundPool, Programme, System

    system = System.objects.create(
        name="Isambard-AI", slug="isambard-ai", cluster_name="isambard-ai", gpu_model="GH200", gpus_per_node=4
    )
    programme = Programme.objects.create(name="Bench programme", slug="bench")
    pool = FundPool.objects.create(
        programme=programme,
        system=system,
        name="Bench pool",
        valid_from=date(2026, 1, 1),
        valid_until=date(2027, 12, 31),
    )
    # No awards are committed: a charge never depends on the balance, so they would not change what is
    # measured, and 5,000 commitments would add minutes to the set-up.
    Allocation.objects.bulk_create(
        Allocation(
            pool=pool,
            system_id=pool.system_id,
            scheduler_account=f"airr-{n:05d}",
            title=f"Bench {n}",
            start_date=pool.valid_from,
            end_date=pool.valid_until,
            state="active",
        )
        for n in range(ALLOCATIONS)
    )
    return system


def main() -> None:
    steps = "--steps" in sys.argv
    bench_url = _bench_database_url()
    _recreate_database(bench_url)
    with tempfile.TemporaryDirectory() as folder:
        _setup_django(bench_url, str(Path(folder) / "media"))
        from allocations import ledger
        from allocations.models import Allocation, JobRecord
        from allocations.usage.ingest import ingest_sacct
        from allocations.usage.reconcile import reconcile_system

        sacct_path, floor_path = Path(folder) / "sacct.txt", Path(folder) / "floor.tsv"
        began = time.perf_counter()
        expected = generate(sacct_path, floor_path, steps=steps)
        size = sacct_path.stat().st_size
        print(
            f"Generated {RECORDS:,} job records ({'with' if steps else 'without'} step rows, "
            f"{size / 1e6:.0f} MB of sacct text) from the RICC trace in {time.perf_counter() - began:.1f} s"
        )
        print(f"Setting up {ALLOCATIONS:,} allocations...", flush=True)
        system = world()

        # (d) before any record is stored, to show that it does not grow with the history.
        empty = nothing_new(system)

        # (a) and (b) take turns, ROUNDS times, and the medians are compared: on a shared machine one run of
        # either moved by a quarter from one minute to the next, and a slow spell then hits both alike.
        floors, ingests = [], []
        for round_number in range(ROUNDS):
            if round_number:
                forget_the_ingest()
            checkpoint()
            floors.append(bench_floor(floor_path))
            checkpoint()
            began = time.perf_counter()
            with open(sacct_path, "rb") as payload:
                outcome = ingest_sacct(system=system, payload=payload, source="command")
            ingests.append(time.perf_counter() - began)
        floor, ingest = statistics.median(floors), statistics.median(ingests)
        counts = outcome.batch.counts()
        print(
            f"(a) COPY of the same {RECORDS:,} rows into a plain indexed table: {floor:.2f} s  (the floor; median "
            f"of {', '.join(f'{t:.2f}' for t in floors)})"
        )
        print(
            f"(b) ingest through the portal (store raw, parse, validate, COPY, dedupe): {ingest:.2f} s "
            f"= {ingest / floor:.2f}x the floor (median of {', '.join(f'{t:.2f}' for t in ingests)}); {counts}"
        )

        checkpoint()
        began = time.perf_counter()
        run = reconcile_system(system=system)
        print(
            f"(c) reconciliation: {time.perf_counter() - began:.2f} s for {run.records:,} job records "
            f"across {run.allocations:,} allocations"
        )

        print(
            f"(d) reconciliation with nothing new: best {nothing_new(system) * 1000:.1f} ms of 5 with "
            f"{JobRecord.objects.count():,} job records stored ({empty * 1000:.1f} ms with none)"
        )

        before = sum(ledger.net_usage(ledger.allocation_account(a)) for a in Allocation.objects.all()[:50])
        checkpoint()
        began = time.perf_counter()
        with open(sacct_path, "rb") as payload:
            again = ingest_sacct(system=system, payload=io.BytesIO(gzip.compress(payload.read(), 1)), source="command")
        reingest = time.perf_counter() - began
        rerun = reconcile_system(system=system)
        after = sum(ledger.net_usage(ledger.allocation_account(a)) for a in Allocation.objects.all()[:50])
        print(
            f"(e) re-ingest of the same rows in a new (gzip) payload: {reingest:.2f} s; "
            f"{again.batch.counts()}; then reconciliation charged "
            f"{'nothing' if rerun is None and before == after else 'SOMETHING'}"
        )

        charged = {
            allocation.scheduler_account: ledger.net_usage(ledger.allocation_account(allocation))
            for allocation in Allocation.objects.all()
        }
        wrong = {account for account, seconds in expected.items() if charged.get(account, 0) != seconds}
        print(
            f"Check: per-account GPU-seconds charged equal those worked out from the trace for "
            f"{len(expected) - len(wrong):,} of {len(expected):,} accounts "
            f"({sum(expected.values()) / 3600:,.0f} GPU-hours); {JobRecord.objects.count():,} job records"
        )
        if wrong:
            sys.exit(f"MISMATCH for {len(wrong)} accounts, e.g. {sorted(wrong)[:5]}")

        alone = bench_job_records_table()
        print(
            f"(b) PostgreSQL's own part: the stored rows copied into an empty table like the job records' (its "
            f"indexes, no Python): {alone:.2f} s = {alone / floor:.2f}x the floor"
        )


if __name__ == "__main__":
    main()
