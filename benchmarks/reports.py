"""Report speed on PostgreSQL with 10,000,000 job records: grouped totals, the raw job export, the dashboard.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/airr .venv/bin/python benchmarks/reports.py [--reuse]

`BENCH_JOBS=100000` for a quick run (default 10,000,000). `--reuse` keeps the database a previous run generated
(with the same BENCH_JOBS), which saves the generation's minutes.

The data is not made through the ingest path (benchmarks/ingest.py times that): it is generated inside
PostgreSQL with `generate_series` and INSERT ... SELECT, the job records and job charges with their indexes
dropped and rebuilt after, which is the fastest way to load and gives the same rows the portal would hold:
2 systems, 6 programmes, 12 fund pools (a programme's pool per system), 5,000 allocations held by 500 PIs of 50
organisations, one commitment per allocation, BENCH_JOBS job records spread evenly over 13 months from
1 October 2025 (users u0..u1999), and, as if reconciliation ran once a day, one charge transaction per allocation
and day (with its two entries) and one JobCharge per job record, whose sums equal the transactions. Balances
are set from the entries. Every figure then read is the portal's own code path.

Prints: (1) the month × programme × system report built end to end as the export task builds it (query,
pandas, CSV); (2) the month × user report the same way; (3) the raw export of about 1,000,000 rows (a window
holding them): time, rows/s and peak memory, the peak being the maximum resident set size of the child process
that builds it (`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`: a fresh interpreter with Django, so the
figure includes Django's own ~60 MB); (4) the director dashboard's server time.
Works in its own throw-away database (`airr_bench_reports`, or `BENCH_REPORTS_DATABASE`).
"""

import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

JOBS = int(os.environ.get("BENCH_JOBS", "10000000"))
RAW_ROWS = min(1_000_000, max(JOBS // 10, 1))
ALLOCATIONS = 5_000
PROGRAMMES = 6
PIS = 500
ORGANISATIONS = 50
USERS = 2_000
ORIGIN = datetime(2025, 10, 1, tzinfo=UTC)
SPAN_DAYS = 395  # 13 months
BENCH_DATABASE = os.environ.get("BENCH_REPORTS_DATABASE") or "airr_bench_reports"
AGGREGATE_GOAL_SECONDS = 5.0
RAW_GOAL_ROWS_PER_SECOND = 200_000
RAW_GOAL_MEGABYTES = 300


def _bench_database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/airr")
    return urlunsplit(urlsplit(url)._replace(path=f"/{BENCH_DATABASE}"))


def _database_exists(bench_url: str) -> bool:
    import psycopg2

    admin = psycopg2.connect(urlunsplit(urlsplit(bench_url)._replace(path="/postgres")))
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DATABASE])
        exists = cursor.fetchone() is not None
    admin.close()
    return exists


def _recreate_database(bench_url: str) -> None:
    import psycopg2

    admin = psycopg2.connect(urlunsplit(urlsplit(bench_url)._replace(path="/postgres")))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        cursor.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    admin.close()


def _setup_django(bench_url: str, media: str, *, migrate: bool) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["DATABASE_URL"] = bench_url
    os.environ["MEDIA_ROOT"] = media
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airr_portal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def _step(label: str, started: float) -> None:
    print(f"  {label}: {time.perf_counter() - started:.1f} s", flush=True)


def _execute(sql: str, params=None) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _scalar(sql: str):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


def _without_indexes(table: str):
    """Drop a table's secondary indexes and unique constraints; return the statements that rebuild them."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = %s::regclass AND contype = 'u'",
            [table],
        )
        constraints = cursor.fetchall()
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT LIKE '%%_pkey' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
            [table, table],
        )
        indexes = cursor.fetchall()
        for name, _ in constraints:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    return [f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}' for name, definition in constraints] + [
        definition for _, definition in indexes
    ]


def generate() -> None:
    """The world described in the module's docstring, loaded in SQL; a few minutes for 10,000,000 jobs."""
    from django.db import transaction

    from airr_portal.models import User
    from allocations.models import Allocation, LedgerAccount
    from programmes.models import FundPool, Programme, System

    started = time.perf_counter()
    systems = [
        System.objects.create(name="Isambard-AI", slug="isambard-ai", cluster_name="isambard-ai", gpus_per_node=4),
        System.objects.create(name="Dawn", slug="dawn", cluster_name="dawn", gpus_per_node=4),
    ]
    programmes = [Programme.objects.create(name=f"Programme {n}", slug=f"programme-{n}") for n in range(PROGRAMMES)]
    pools = [
        FundPool.objects.create(
            programme=programme,
            system=system,
            name=f"{programme.name} on {system.name}",
            valid_from=date(2025, 1, 1),
            valid_until=date(2027, 12, 31),
        )
        for programme in programmes
        for system in systems
    ]
    pis = User.objects.bulk_create(
        User(email=f"pi{n}@example.ac.uk", organisation=f"University {n % ORGANISATIONS}") for n in range(PIS)
    )
    allocations = Allocation.objects.bulk_create(
        Allocation(
            pool=pools[n % len(pools)],
            system=pools[n % len(pools)].system,
            scheduler_account=f"airr-{n:05d}",
            title=f"Project {n}",
            holder=pis[n % PIS],
            start_date=date(2025, 10, 1),
            end_date=date(2027, 12, 31),
            state=Allocation.State.ACTIVE,
        )
        for n in range(ALLOCATIONS)
    )
    LedgerAccount.objects.bulk_create(
        [LedgerAccount(kind=kind, system=system) for system in systems for kind in LedgerAccount.SINK_KINDS]
        + [LedgerAccount(kind="pool", system=pool.system, pool=pool) for pool in pools]
        + [LedgerAccount(kind="allocation", system=a.pool.system, allocation=a) for a in allocations]
    )
    _step("systems, programmes, pools, 5,000 allocations and their accounts", started)

    with transaction.atomic():
        # No foreign-key triggers while loading (the rows are consistent by construction; the sums are checked
        # below): per-row checks would triple the load's time, and queued ones forbid rebuilding indexes here.
        _execute("SET LOCAL session_replication_role = replica")
        started = time.perf_counter()
        # Awards: every allocation gets 2,000,000 GPU-hours from its pool, each pool funded with what it awards.
        award = 2_000_000 * 3600
        _execute(
            """
            CREATE TEMP TABLE bench_alloc AS
            SELECT (row_number() OVER (ORDER BY a.id) - 1)::int AS n, a.id, p.system_id, a.pool_id,
                   a.scheduler_account, acc.id AS account_id, pacc.id AS pool_account_id,
                   fund.id AS funding_id, consumed.id AS consumed_id
            FROM allocations_allocation a
            JOIN programmes_fundpool p ON p.id = a.pool_id
            JOIN allocations_ledgeraccount acc ON acc.allocation_id = a.id
            JOIN allocations_ledgeraccount pacc ON pacc.pool_id = a.pool_id
            JOIN allocations_ledgeraccount fund ON fund.system_id = p.system_id AND fund.kind = 'funding'
            JOIN allocations_ledgeraccount consumed ON consumed.system_id = p.system_id AND consumed.kind = 'consumed'
            """
        )
        for kind, key_part in (("deposit", "pool_id"), ("commit", "id")):
            _execute(
                f"""
                INSERT INTO allocations_ledgertransaction
                    (type, reason, effective_at, recorded_at, idempotency_key, cause_type, cause_id)
                SELECT DISTINCT '{kind}', 'Benchmark {kind}', %s::timestamptz, %s::timestamptz,
                       'bench-{kind}:' || {key_part}, '', ''
                FROM bench_alloc
                """,
                [ORIGIN, ORIGIN],
            )
        _execute(
            """
            INSERT INTO allocations_ledgerentry (transaction_id, account_id, amount, effective_at, recorded_at)
            SELECT t.id, x.account_id, x.amount, t.effective_at, t.recorded_at
            FROM (
                SELECT 'bench-deposit:' || pool_id AS key, pool_account_id AS account_id, count(*) * %s AS amount
                FROM bench_alloc GROUP BY pool_id, pool_account_id
                UNION ALL
                SELECT 'bench-deposit:' || pool_id, min(funding_id), -count(*) * %s FROM bench_alloc GROUP BY pool_id
                UNION ALL
                SELECT 'bench-commit:' || id, account_id, %s FROM bench_alloc
                UNION ALL
                SELECT 'bench-commit:' || id, pool_account_id, -%s FROM bench_alloc
            ) x JOIN allocations_ledgertransaction t ON t.idempotency_key = x.key
            """,
            [award, award, award, award],
        )
        _step("deposits and commitments", started)

        started = time.perf_counter()
        rebuild = _without_indexes("allocations_jobrecord")
        span = SPAN_DAYS * 86400
        _execute(
            """
            INSERT INTO allocations_jobrecord
                (system_id, job_id_raw, start, job_id, account, "user", state, submit, "end", elapsed_seconds,
                 gpus, job_name, gpu_seconds, allocation_id, is_outside_window, changed_seq)
            SELECT a.system_id, g::text, t.start, g::text, a.scheduler_account, 'u' || ((g::bigint * 7919) %% %s),
                   'COMPLETED', t.start, t.start + make_interval(secs => t.elapsed), t.elapsed, t.gpus, '',
                   t.gpus * t.elapsed, a.id, false, g
            FROM generate_series(1, %s) AS g
            CROSS JOIN LATERAL (
                SELECT %s::timestamptz + make_interval(secs => (g::bigint * %s / %s)::double precision) AS start,
                       60 + (g::bigint * 2654435761 %% 36000) AS elapsed,
                       1 + (g %% 8) AS gpus
            ) AS t
            JOIN bench_alloc a ON a.n = (g::bigint * 31) %% %s
            """,
            [USERS, JOBS, ORIGIN, span, JOBS, ALLOCATIONS],
        )
        _step(f"{JOBS:,} job records", started)
        started = time.perf_counter()
        for statement in rebuild:
            _execute(statement)
        _step("their indexes", started)

        started = time.perf_counter()
        # A reconciliation run per system and day, at midnight, charging the jobs that ended the day before: one
        # charge transaction per allocation and run, recorded and effective at the run's time. Ids are given
        # here (after the highest so far, then the sequences moved past them), so that the rows can point at
        # each other without looking each one up by a key.
        _execute(
            """
            CREATE TEMP TABLE bench_run AS
            SELECT system_id, run_at, to_seq, records,
                   (SELECT coalesce(max(id), 0) FROM allocations_reconciliationrun) + row_number() OVER () AS run_id
            FROM (
                SELECT system_id, date_trunc('day', "end") + interval '1 day' AS run_at, max(changed_seq) AS to_seq,
                       count(*) AS records
                FROM allocations_jobrecord GROUP BY 1, 2
            ) AS runs
            """
        )
        _execute(
            """
            INSERT INTO allocations_reconciliationrun
                (id, system_id, from_seq, to_seq, records, allocations, charged_seconds, started_at, finished_at)
            SELECT run_id, system_id, 0, to_seq, records, 0, 0, run_at, run_at FROM bench_run
            """
        )
        _execute(
            """
            CREATE TEMP TABLE bench_day AS
            SELECT days.allocation_id, days.run_at, days.seconds, r.run_id,
                   (SELECT coalesce(max(id), 0) FROM allocations_ledgertransaction) + row_number() OVER () AS txn_id
            FROM (
                SELECT allocation_id, date_trunc('day', "end") + interval '1 day' AS run_at, sum(gpu_seconds) AS seconds
                FROM allocations_jobrecord GROUP BY 1, 2
            ) AS days
            JOIN bench_alloc a ON a.id = days.allocation_id
            JOIN bench_run r ON r.system_id = a.system_id AND r.run_at = days.run_at
            """
        )
        _execute(
            """
            INSERT INTO allocations_ledgertransaction
                (id, type, reason, effective_at, recorded_at, idempotency_key, cause_type, cause_id)
            SELECT txn_id, 'charge', 'Usage (benchmark)', run_at, run_at, 'bench-charge:' || txn_id,
                   'reconciliation_run', run_id::text
            FROM bench_day
            """
        )
        for table in ("allocations_ledgertransaction", "allocations_reconciliationrun"):
            _execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        _execute("CREATE INDEX ON bench_day (allocation_id, run_at)")
        _execute(
            """
            INSERT INTO allocations_ledgerentry (transaction_id, account_id, amount, effective_at, recorded_at)
            SELECT d.txn_id, a.account_id, -d.seconds, d.run_at, d.run_at
            FROM bench_day d JOIN bench_alloc a ON a.id = d.allocation_id
            UNION ALL
            SELECT d.txn_id, a.consumed_id, d.seconds, d.run_at, d.run_at
            FROM bench_day d JOIN bench_alloc a ON a.id = d.allocation_id
            """
        )
        days = _scalar("SELECT count(*) FROM bench_day")
        runs = _scalar("SELECT count(*) FROM bench_run")
        _step(f"{runs:,} daily reconciliation runs, {days:,} charge transactions and their entries", started)

        started = time.perf_counter()
        rebuild = _without_indexes("allocations_jobcharge")
        _execute(
            """
            INSERT INTO allocations_jobcharge (run_id, transaction_id, job_record_id, seconds)
            SELECT d.run_id, d.txn_id, j.id, j.gpu_seconds
            FROM allocations_jobrecord j
            JOIN bench_day d ON d.allocation_id = j.allocation_id
                AND d.run_at = date_trunc('day', j."end") + interval '1 day'
            """
        )
        for statement in rebuild:
            _execute(statement)
        _step(f"{JOBS:,} job charges and their indexes", started)

        started = time.perf_counter()
        _execute(
            """
            UPDATE allocations_ledgeraccount a SET balance = s.total
            FROM (SELECT account_id, sum(amount) AS total FROM allocations_ledgerentry GROUP BY account_id) s
            WHERE a.id = s.account_id
            """
        )
        unbalanced = _scalar(
            "SELECT count(*) FROM (SELECT transaction_id FROM allocations_ledgerentry GROUP BY transaction_id "
            "HAVING sum(amount) <> 0) AS u"
        )
        if unbalanced:
            sys.exit(f"{unbalanced} generated transactions do not sum to zero")
    started = time.perf_counter()
    _execute("VACUUM ANALYZE")
    _step("balances, check, VACUUM ANALYZE", started)


def _admin():
    from airr_portal.models import User
    from tests.factories import give_mfa

    admin, created = User.objects.get_or_create(email="bench-admin@example.ac.uk", defaults={"is_staff": True})
    if created:
        give_mfa(admin)
    return admin


def _export(admin, *, kind: str, groupings: list[str], start: date, end: date):
    from allocations.models import ReportExport

    now = datetime.now(UTC)
    return ReportExport.objects.create(
        requested_by=admin,
        kind=kind,
        groupings=groupings,
        start_date=start,
        end_date=end,
        format="csv",
        as_of=now,
        created_at=now,
        expires_at=now + timedelta(days=1),
    )


def time_totals(admin, label: str, groupings: list[str]) -> float:
    """Build a totals export as the task does (query, pandas, CSV) and print its time and rows."""
    from allocations.reports.services import build_report_export

    export = _export(admin, kind="totals", groupings=groupings, start=date(2025, 10, 1), end=date(2026, 10, 31))
    started = time.perf_counter()
    export = build_report_export(export_id=export.pk)
    elapsed = time.perf_counter() - started
    print(f"({label}: {elapsed:.2f} s for {export.row_count:,} rows (state {export.state})", flush=True)
    return elapsed


def time_raw_export(admin, bench_url: str, media: str) -> None:
    """Build the raw export of about RAW_ROWS rows in a child process; print time, rows/s and its peak RSS."""
    days = max(1, round(SPAN_DAYS * RAW_ROWS / JOBS))
    start = date(2026, 1, 1)
    export = _export(admin, kind="jobs", groupings=[], start=start, end=start + timedelta(days=days - 1))
    started = time.perf_counter()
    child = subprocess.run(
        [sys.executable, __file__, "--build-export", str(export.pk)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": bench_url, "MEDIA_ROOT": media},
    )
    elapsed = time.perf_counter() - started
    build = float(child.stdout.strip().splitlines()[-1])
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    export.refresh_from_db()
    size_mb = (Path(media) / export.file_path).stat().st_size / 1e6
    rows = export.row_count or 0
    print(
        f"(3) raw export of {rows:,} job rows ({days} days): built in {build:.2f} s, {rows / build:,.0f} rows/s "
        f"({elapsed:.2f} s with the child's start); peak RSS of the child {peak_mb:.0f} MB; file {size_mb:.0f} MB "
        f"(goal: {RAW_GOAL_ROWS_PER_SECOND:,} rows/s, under {RAW_GOAL_MEGABYTES} MB)",
        flush=True,
    )


def time_director_dashboard() -> None:
    """(4) The director dashboard's server time: a programme with two pools and 13 months of daily charges."""
    from django.test import Client
    from django.urls import reverse

    from airr_portal.models import User
    from programmes.models import Programme
    from tests.factories import give_mfa

    programme = Programme.objects.order_by("pk").first()
    url = reverse("programme-dashboard", args=[programme.pk])
    director, created = User.objects.get_or_create(email="bench-director@example.ac.uk")
    if created:
        give_mfa(director)
        programme.directors.add(director)
    client = Client()
    client.force_login(director)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        response = client.get(url)
        timings.append(time.perf_counter() - started)
    print(f"(4) director dashboard {url}: {response.status_code}, best of 3 {min(timings):.2f} s", flush=True)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--build-export":
        _setup_django(os.environ["DATABASE_URL"], os.environ["MEDIA_ROOT"], migrate=False)
        from allocations.reports.services import build_report_export

        started = time.perf_counter()
        build_report_export(export_id=int(sys.argv[2]))
        print(f"{time.perf_counter() - started:.3f}")
        return
    bench_url = _bench_database_url()
    reuse = "--reuse" in sys.argv and _database_exists(bench_url)
    if not reuse:
        _recreate_database(bench_url)
    media = tempfile.mkdtemp(prefix="airr-bench-reports-")
    _setup_django(bench_url, media, migrate=not reuse)
    print(f"Reports on PostgreSQL, {JOBS:,} job records, {ALLOCATIONS:,} allocations", flush=True)
    if reuse:
        print("  (reusing the generated database)", flush=True)
    else:
        generate()
    admin = _admin()
    seconds = time_totals(admin, "1) month × programme × system", ["programme", "system", "month"])
    goal = "met" if seconds < AGGREGATE_GOAL_SECONDS else "MISSED"
    print(f"    goal under {AGGREGATE_GOAL_SECONDS:.0f} s: {goal}", flush=True)
    time_totals(admin, "2) month × user", ["user", "month"])
    time_raw_export(admin, bench_url, media)
    time_director_dashboard()


if __name__ == "__main__":
    main()
