"""The ingest and report benchmarks still run, end to end, at a small scale: their figures are only measured by
hand (the README states them), so a change that breaks one would otherwise go unseen until the next measurement."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
from django.db import connection

from tests.postgres import requires_postgres

ROOT = Path(__file__).resolve().parent.parent


def _run_benchmark(script: str, database_variable: str, **variables: str) -> subprocess.CompletedProcess:
    """Run a benchmark in its own throw-away database on the test server, dropped after."""
    database = f"airr_bench_smoke_{os.getpid()}"
    settings = connection.settings_dict
    url = f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/postgres"
    environment = {**os.environ, "DATABASE_URL": url, database_variable: database, **variables}
    try:
        return subprocess.run(
            [sys.executable, script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600
        )
    finally:
        admin = psycopg2.connect(url)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.close()


@requires_postgres
def test_the_ingest_benchmark_charges_every_account_what_its_own_check_works_out_from_the_trace():
    finished = _run_benchmark("benchmarks/ingest.py", "BENCH_INGEST_DATABASE", BENCH_INGEST_RECORDS="3000")

    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "Check: per-account GPU-seconds charged equal those worked out from the trace for 3,000 of 3,000" in (
        finished.stdout
    )
    assert "then reconciliation charged nothing" in finished.stdout


@requires_postgres
def test_the_report_benchmark_builds_every_report_and_opens_the_dashboard():
    # At 20,000 jobs a pool is used a few GPU-seconds a day: its forecast once overflowed the calendar (a 500).
    finished = _run_benchmark("benchmarks/reports.py", "BENCH_REPORTS_DATABASE", BENCH_JOBS="20000")

    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "(1) month × programme × system:" in finished.stdout and "(state done)" in finished.stdout
    assert "(3) raw export of" in finished.stdout
    assert "/dashboard/: 200," in finished.stdout
