"""The ingest benchmark still runs, end to end, at a small scale: its figures are only measured by hand (the README
states them), so a change that breaks it would otherwise go unseen until the next measurement."""

import os
import subprocess
import sys
from pathlib import Path

import psycopg2
from django.db import connection

from tests.postgres import requires_postgres

ROOT = Path(__file__).resolve().parent.parent


@requires_postgres
def test_the_ingest_benchmark_charges_every_account_what_its_own_check_works_out_from_the_trace():
    database = f"airr_bench_smoke_{os.getpid()}"
    settings = connection.settings_dict
    url = f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}/postgres"
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "BENCH_INGEST_RECORDS": "3000",
        "BENCH_INGEST_DATABASE": database,
    }
    try:
        finished = subprocess.run(
            [sys.executable, "benchmarks/ingest.py"],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        admin = psycopg2.connect(url)
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.close()

    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "Check: per-account GPU-seconds charged equal those worked out from the trace for 3,000 of 3,000" in (
        finished.stdout
    )
    assert "then reconciliation charged nothing" in finished.stdout
