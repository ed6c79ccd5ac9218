"""Races on PostgreSQL with real threads: the row locks keep pools whole and never deadlock."""

import threading

import pytest
from django.db import connection
from django.db.models import Sum

from allocations import ledger
from allocations.models import LedgerAccount, LedgerEntry, LedgerTransaction
from tests.factories import AllocationFactory, FundPoolFactory, UserFactory
from tests.postgres import requires_postgres

HOUR = 3600
pytestmark = [pytest.mark.postgres, requires_postgres, pytest.mark.django_db(transaction=True)]


def run_together(jobs):
    """Run each job in its own thread, released at once by a barrier; return (results, unexpected errors)."""
    barrier = threading.Barrier(len(jobs))
    results, errors = [None] * len(jobs), []

    def run(index, job):
        try:
            barrier.wait(timeout=30)
            results[index] = job()
        except ledger.LedgerError as refusal:
            results[index] = refusal
        except Exception as error:  # a deadlock or any other database error fails the test
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index, job)) for index, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck: lock wait or deadlock"
    return results, errors


def funded_pool(hours: int, **attributes):
    pool = FundPoolFactory(**attributes)
    ledger.deposit_to_pool(
        pool=pool,
        seconds=hours * HOUR,
        actor=UserFactory(is_staff=True),
        reason="Budget",
        idempotency_key=f"deposit-{pool.pk}",
    )
    return pool


def test_fifty_concurrent_commitments_against_room_for_ten_commit_exactly_ten():
    pool = funded_pool(10)
    allocations = [AllocationFactory(pool=pool) for _ in range(50)]

    def commit(allocation):
        return lambda: ledger.commit_to_allocation(
            allocation=allocation,
            seconds=HOUR,
            actor=None,
            reason="Award",
            idempotency_key=f"award-{allocation.pk}",
        )

    results, errors = run_together([commit(allocation) for allocation in allocations])

    assert errors == []
    committed = [r for r in results if isinstance(r, LedgerTransaction)]
    refused = [r for r in results if isinstance(r, ledger.InsufficientHours)]
    assert (len(committed), len(refused)) == (10, 40)
    assert ledger.pool_account(pool).balance == 0
    assert LedgerEntry.objects.filter(account__kind="allocation").aggregate(total=Sum("amount"))["total"] == 10 * HOUR


def test_concurrent_transfers_in_opposite_directions_finish_without_deadlock_and_conserve_hours():
    first = funded_pool(1000)
    second = funded_pool(1000, system=first.system)

    def transfer(source, destination, index):
        return lambda: ledger.transfer_between_pools(
            source=source,
            destination=destination,
            seconds=HOUR,
            actor=None,
            reason="Rebalance",
            idempotency_key=f"transfer-{index}",
        )

    jobs = [transfer(first, second, i) if i % 2 else transfer(second, first, i) for i in range(40)]
    results, errors = run_together(jobs)

    assert errors == []
    assert all(isinstance(result, LedgerTransaction) for result in results)
    balances = [ledger.pool_account(pool).balance for pool in (first, second)]
    assert balances == [1000 * HOUR, 1000 * HOUR]  # 20 each way
    assert LedgerTransaction.objects.filter(type="transfer").count() == 40


def test_concurrent_retries_with_one_idempotency_key_move_the_hours_once():
    pool = funded_pool(100)
    allocation = AllocationFactory(pool=pool)
    job = lambda: ledger.commit_to_allocation(  # noqa: E731
        allocation=allocation, seconds=5 * HOUR, actor=None, reason="Award", idempotency_key="the-award"
    )

    results, errors = run_together([job] * 12)

    assert errors == []
    assert len({result.pk for result in results}) == 1
    assert LedgerAccount.objects.get(allocation=allocation).balance == 5 * HOUR
    assert ledger.pool_account(pool).balance == 95 * HOUR


def test_concurrent_charges_and_an_expiry_leave_every_balance_equal_to_its_entries():
    pool = funded_pool(100)
    allocation = AllocationFactory(pool=pool)
    ledger.commit_to_allocation(allocation=allocation, seconds=50 * HOUR, actor=None, reason="A", idempotency_key="a")

    jobs = [
        (lambda i=i: ledger.charge_usage(allocation=allocation, seconds=HOUR, reason="Job", idempotency_key=f"j{i}"))
        for i in range(20)
    ]
    jobs.append(lambda: ledger.expire_allocation(allocation=allocation, idempotency_key="expire"))
    results, errors = run_together(jobs)

    assert errors == []
    for account in LedgerAccount.objects.all():
        assert account.balance == (account.entries.aggregate(total=Sum("amount"))["total"] or 0)
    # Whatever the interleaving, the pool got back exactly what the allocation had not used when it expired,
    # and charges after expiry still count (as an overrun on the allocation).
    assert ledger.sink_account(pool.system, "consumed").balance == 20 * HOUR
    assert ledger.pool_account(pool).balance + LedgerAccount.objects.get(allocation=allocation).balance == 80 * HOUR
