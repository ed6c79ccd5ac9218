"""Ledger speed on PostgreSQL: commitments per second under concurrent workers, and a statement over 1,000,000
entries.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/airr .venv/bin/python benchmarks/ledger.py

It works in its own throw-away database (`airr_bench` on the same server), which it drops and re-creates, so
it never touches the portal's data. The million entries are inserted in SQL (`generate_series`), which the
ledger's append-only trigger allows: it refuses only UPDATE and DELETE.
"""

import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

WORKERS = int(os.environ.get("BENCH_WORKERS", "8"))
COMMITMENTS_PER_WORKER = 250
STATEMENT_ENTRIES = int(os.environ.get("BENCH_STATEMENT_ENTRIES", "1000000"))
BENCH_DATABASE = "airr_bench"


def _bench_database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        sys.exit("Set DATABASE_URL to a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/airr")
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{BENCH_DATABASE}"))


def _recreate_database(bench_url: str) -> None:
    import psycopg2

    parts = urlsplit(bench_url)
    admin = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE}")
        cursor.execute(f"CREATE DATABASE {BENCH_DATABASE}")
    admin.close()


def _setup_django(bench_url: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airr_portal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _world():
    from datetime import date

    from programmes.models import FundPool, Programme, System

    system = System.objects.create(
        name="Isambard-AI",
        slug="isambard-ai",
        cluster_name="isambard-ai",
        gpu_model="NVIDIA GH200",
        gpus_per_node=4,
    )
    programme = Programme.objects.create(name="Open-Source AI Builder Fund", slug="oss-ai")
    today = date.today()
    pool = FundPool.objects.create(
        programme=programme,
        system=system,
        name="Bench pool",
        valid_from=today.replace(month=1, day=1),
        valid_until=today.replace(month=12, day=31),
    )
    return pool


def _commit_worker(allocation_ids, barrier) -> None:
    from django.db import connection

    from allocations import ledger
    from allocations.models import Allocation

    chunk = list(Allocation.objects.filter(pk__in=allocation_ids).select_related("pool"))
    connection.close()
    barrier.wait()
    for allocation in chunk:
        ledger.commit_to_allocation(
            allocation=allocation,
            seconds=3600,
            actor=None,
            reason="Award",
            idempotency_key=f"bench-award-{allocation.pk}",
        )
    connection.close()


def bench_commitments(pool) -> float:
    from django.db import connection

    from allocations import ledger
    from allocations.models import Allocation

    total = WORKERS * COMMITMENTS_PER_WORKER
    ledger.deposit_to_pool(pool=pool, seconds=total * 3600, actor=None, reason="Bench", idempotency_key="bench-d")
    allocations = Allocation.objects.bulk_create(
        Allocation(
            pool=pool,
            system_id=pool.system_id,
            scheduler_account=f"airr-{i:05d}",
            title=f"Bench {i}",
            start_date=pool.valid_from,
            end_date=pool.valid_until,
            state="active",
        )
        for i in range(total)
    )
    for allocation in allocations:  # open the accounts first: the benchmark measures commitments, not set-up
        ledger.allocation_account(allocation)
    # Workers are processes, as gunicorn's are: threads would also queue on Python's GIL while holding the lock.
    connection.close()
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(WORKERS + 1)
    chunks = [[allocation.pk for allocation in allocations[i::WORKERS]] for i in range(WORKERS)]
    workers = [context.Process(target=_commit_worker, args=(chunk, barrier)) for chunk in chunks]
    for process in workers:
        process.start()
    barrier.wait()
    started = time.perf_counter()
    for process in workers:
        process.join()
    elapsed = time.perf_counter() - started
    if any(process.exitcode != 0 for process in workers):
        raise SystemExit("a commitment worker failed")
    assert ledger.pool_account(pool).balance == 0
    return total / elapsed


def bench_statement(pool) -> dict[str, float]:
    from datetime import timedelta

    from django.db import connection, transaction
    from django.utils import timezone

    from allocations import ledger
    from allocations.models import Allocation
    from allocations.selectors import account_statement

    allocation = Allocation.objects.create(
        pool=pool,
        scheduler_account="airr-heavy",
        title="Heavy user",
        start_date=pool.valid_from,
        end_date=pool.valid_until,
        state="active",
    )
    account = ledger.allocation_account(allocation)
    consumed = ledger.sink_account(pool.system, "consumed")
    start = timezone.now() - timedelta(days=365)
    loading = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        # One charge of 1 to 100 GPU-seconds every 30 seconds for a year: a busy account, as clusters report.
        cursor.execute(
            """
            INSERT INTO allocations_ledgertransaction
                (type, reason, effective_at, recorded_at, idempotency_key, cause_type, cause_id)
            SELECT 'charge', 'Job ' || i, %s + i * interval '30 seconds', %s + i * interval '30 seconds',
                   'bench-charge-' || i, 'job', i::text
            FROM generate_series(1, %s) AS i
            """,
            [start, start, STATEMENT_ENTRIES],
        )
        cursor.execute(
            """
            INSERT INTO allocations_ledgerentry
                (transaction_id, account_id, amount, effective_at, recorded_at)
            SELECT t.id, side.account, side.sign * (1 + t.id %% 100), t.effective_at, t.recorded_at
            FROM allocations_ledgertransaction t
            CROSS JOIN (VALUES (%s, -1), (%s, 1)) AS side(account, sign)
            WHERE t.idempotency_key LIKE 'bench-charge-%%'
            """,
            [account.pk, consumed.pk],
        )
        for target in (account, consumed):
            cursor.execute(
                "UPDATE allocations_ledgeraccount SET balance = "
                "(SELECT COALESCE(SUM(amount), 0) FROM allocations_ledgerentry WHERE account_id = %s) "
                "WHERE id = %s",
                [target.pk, target.pk],
            )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE allocations_ledgerentry")
    load_seconds = time.perf_counter() - loading
    assert account.entries.count() == STATEMENT_ENTRIES

    def timed(**window):
        runs = []
        for _ in range(5):
            began = time.perf_counter()
            statement = account_statement(account, **window)
            page = list(statement.movements[:100])
            count = statement.movements.count()
            runs.append(time.perf_counter() - began)
        assert page and count
        return statistics.median(runs)

    today = timezone.localdate()
    return {
        "load": load_seconds,
        "whole history, first page of 100": timed(),
        "one month in the middle, first page of 100": timed(
            start=today - timedelta(days=180), end=today - timedelta(days=150)
        ),
        "as of 90 days ago, whole history": timed(as_of=today - timedelta(days=90)),
    }


def main() -> None:
    bench_url = _bench_database_url()
    _recreate_database(bench_url)
    _setup_django(bench_url)
    pool = _world()
    rate = bench_commitments(pool)
    print(
        f"Commitments: {rate:,.0f} per second with {WORKERS} concurrent workers "
        f"({WORKERS * COMMITMENTS_PER_WORKER} commitments against one pool, each its own transaction)"
    )
    timings = bench_statement(pool)
    print(
        f"Statement over an account with {STATEMENT_ENTRIES:,} entries "
        f"(loaded in {timings.pop('load'):.1f} s), "
        "median of 5, opening + closing balance + first page + count:"
    )
    for label, seconds in timings.items():
        print(f"  {label}: {seconds * 1000:,.0f} ms")


if __name__ == "__main__":
    main()
