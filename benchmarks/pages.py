"""Server time of the director's queue and a call's decision page with 10,000 reviewed proposals.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/airr .venv/bin/python benchmarks/pages.py

On PostgreSQL it works in its own throw-away database (`airr_bench_pages`), dropped and re-created;
without DATABASE_URL it uses a throw-away SQLite file. Each page is requested through Django's test client
(so the time is the server's: middleware, queries and template, no network), five times after one warm-up;
it prints the median and the worst, and the number of queries each page made.
"""

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PROPOSALS = 10_000
REVIEWERS = 3
RUNS = 5
BENCH_DATABASE = "airr_bench_pages"


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.sqlite3'}"
    import psycopg2

    parts = urlsplit(url)
    admin = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        cursor.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    admin.close()
    return urlunsplit(parts._replace(path=f"/{BENCH_DATABASE}"))


def _setup_django(url: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airr_portal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _world():
    from datetime import date

    from allocations import ledger
    from tests.factories import (
        HOUR,
        CallFactory,
        FundPoolFactory,
        ProgrammeFactory,
        SystemFactory,
        UserFactory,
        bulk_proposals,
        give_mfa,
    )

    today = date.today()
    system = SystemFactory(slug="isambard-ai", name="Isambard-AI")
    director = UserFactory(email="bench.director@example.ac.uk")
    give_mfa(director)
    programme = ProgrammeFactory(directors=[director])
    pool = FundPoolFactory(
        programme=programme,
        system=system,
        valid_from=today.replace(month=1, day=1),
        valid_until=today.replace(year=today.year + 2),
    )
    ledger.deposit_to_pool(pool=pool, seconds=1_000_000 * HOUR, actor=None, reason="Bench", idempotency_key="bench")
    call = CallFactory(programme=programme, pools=[pool])
    reviewers = [UserFactory() for _ in range(REVIEWERS)]
    started = time.perf_counter()
    for _ in range(PROPOSALS // 1000):
        bulk_proposals(call=call, system=system, count=1000, reviewers=reviewers)
    print(f"Built {PROPOSALS:,} proposals, {REVIEWERS} reviews each, in {time.perf_counter() - started:.1f} s")
    return director, call


def _time_page(client, label: str, path: str) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(path)  # warm-up: caches, template loading
    timings = []
    for _ in range(RUNS):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get(path)
            timings.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
    median, worst = statistics.median(timings) * 1000, max(timings) * 1000
    print(
        f"{label:<30} median {median:8.1f} ms   worst {worst:8.1f} ms   {len(queries)} queries"
        f"   {len(response.content) / 1024:,.0f} KiB"
    )


def main() -> None:
    url = _database_url()
    _setup_django(url)
    from django.test import Client
    from django.urls import reverse

    director, call = _world()
    client = Client()
    client.force_login(director)
    print(f"Database: {urlsplit(url).scheme}")
    _time_page(client, "Queue (first page of 50)", reverse("proposals:proposal-queue"))
    _time_page(client, "Queue sorted by score", reverse("proposals:proposal-queue") + "?sort=score")
    decisions = reverse("proposals:call-decisions", args=[call.slug])
    _time_page(client, "Decision page (ranks 1-100)", decisions)
    _time_page(client, "Decision page (last page)", decisions + f"?page={PROPOSALS // 100}")


if __name__ == "__main__":
    main()
