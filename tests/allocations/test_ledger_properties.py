"""Property-based: any sequence of ledger operations keeps the books balanced and statements true."""

from collections import defaultdict
from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocations import ledger
from allocations.models import LedgerAccount, LedgerTransaction
from allocations.selectors import account_statement, pool_figures
from tests.factories import AllocationFactory, FundPoolFactory, SystemFactory, UserFactory

HOUR = 3600
POOLS = 3
ALLOCATIONS = 3

amounts = st.integers(min_value=1, max_value=50 * HOUR)
days_ago = st.integers(min_value=0, max_value=30)
operation = st.one_of(
    st.tuples(st.just("deposit"), st.integers(0, POOLS - 1), amounts, days_ago),
    st.tuples(st.just("withdraw"), st.integers(0, POOLS - 1), amounts, days_ago),
    st.tuples(st.just("transfer"), st.integers(0, POOLS - 1), st.integers(0, POOLS - 1), amounts, days_ago),
    st.tuples(st.just("commit"), st.integers(0, ALLOCATIONS - 1), amounts, days_ago),
    st.tuples(st.just("charge"), st.integers(0, ALLOCATIONS - 1), amounts, days_ago),
    st.tuples(st.just("refund"), st.integers(0, ALLOCATIONS - 1), amounts, days_ago),
    st.tuples(st.just("expire"), st.integers(0, ALLOCATIONS - 1), days_ago),
    st.tuples(st.just("revoke"), st.integers(0, ALLOCATIONS - 1), days_ago),
    st.tuples(st.just("retry"), st.integers(0, 100)),
)


def _apply(op, pools, allocations, actor, index, keys):
    """Run one operation; return the transaction, or None if the ledger refused it."""
    kind, *args = op
    if kind == "retry":
        if not keys:
            return None
        key, call = keys[args[0] % len(keys)]
        return call(key)
    moment = timezone.now() - timedelta(days=args[-1], minutes=index)
    common = {"reason": f"step {index}", "effective_at": moment}
    calls = {
        "deposit": lambda key: ledger.deposit_to_pool(
            pool=pools[args[0]], seconds=args[1], actor=actor, idempotency_key=key, **common
        ),
        "withdraw": lambda key: ledger.withdraw_from_pool(
            pool=pools[args[0]], seconds=args[1], actor=actor, idempotency_key=key, **common
        ),
        "transfer": lambda key: ledger.transfer_between_pools(
            source=pools[args[0]],
            destination=pools[args[1]],
            seconds=args[2],
            actor=actor,
            idempotency_key=key,
            **common,
        ),
        "commit": lambda key: ledger.commit_to_allocation(
            allocation=allocations[args[0]], seconds=args[1], actor=actor, idempotency_key=key, **common
        ),
        "charge": lambda key: ledger.charge_usage(
            allocation=allocations[args[0]], seconds=args[1], idempotency_key=key, **common
        ),
        "refund": lambda key: ledger.refund_usage(
            allocation=allocations[args[0]], seconds=args[1], actor=actor, idempotency_key=key, **common
        ),
        "expire": lambda key: ledger.expire_allocation(allocation=allocations[args[0]], idempotency_key=key, **common),
        "revoke": lambda key: ledger.revoke_allocation(
            allocation=allocations[args[0]], actor=actor, idempotency_key=key, **common
        ),
    }
    key = f"op-{index}"
    try:
        txn = calls[kind](key)
    except ledger.LedgerError:
        return None
    keys.append((key, calls[kind]))
    return txn


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(operation, min_size=1, max_size=14))
def test_any_sequence_of_operations_keeps_the_books_balanced_and_statements_true(operations):
    with transaction.atomic():
        system = SystemFactory()
        actor = UserFactory(is_staff=True)
        today = timezone.localdate()
        pools = [
            FundPoolFactory(
                system=system,
                valid_from=today - timedelta(days=60),
                valid_until=today + timedelta(days=60),
                unused_hours_policy=("return", "forfeit")[i % 2],
            )
            for i in range(POOLS)
        ]
        allocations = [AllocationFactory(pool=pools[i % POOLS]) for i in range(ALLOCATIONS)]
        keys = []
        recorded = []  # (transaction, balances of every account right after it)
        for index, op in enumerate(operations):
            txn = _apply(op, pools, allocations, actor, index, keys)
            if (
                txn is not None
                and (not recorded or txn.pk != recorded[-1][0].pk)
                and txn.pk not in {t.pk for t, _ in recorded}
            ):
                recorded.append((txn, dict(LedgerAccount.objects.values_list("pk", "balance"))))

        # Double entry, and each materialised balance is the sum of its entries; no pool is below zero.
        for txn in LedgerTransaction.objects.all():
            assert (txn.entries.aggregate(total=Sum("amount"))["total"] or 0) == 0
        accounts = list(LedgerAccount.objects.all())
        for account in accounts:
            assert account.balance == (account.entries.aggregate(total=Sum("amount"))["total"] or 0)
            if account.kind == "pool":
                assert account.balance >= 0
        assert sum(account.balance for account in accounts) == 0

        # A statement "as of" the moment each transaction was recorded reproduces the balances at that moment.
        for txn, balances in recorded:
            for account in accounts:
                statement = account_statement(account, as_of=txn.recorded_at)
                assert statement.closing_balance == balances.get(account.pk, 0)

        # A statement up to any day reproduces the sum of movements effective by then, and its running
        # balances step from the opening to the closing balance.
        for account in accounts:
            by_day = defaultdict(int)
            for amount, effective_at in account.entries.values_list("amount", "effective_at"):
                by_day[timezone.localdate(effective_at)] += amount
            for day in [today - timedelta(days=n) for n in (31, 20, 10, 3, 0)]:
                start = day - timedelta(days=7)
                statement = account_statement(account, start=start, end=day)
                assert statement.opening_balance == sum(v for d, v in by_day.items() if d < start)
                assert statement.closing_balance == sum(v for d, v in by_day.items() if d <= day)
                running = [entry.running_balance for entry in statement.movements]
                assert running[-1:] in ([], [statement.closing_balance])

        # Pool figures agree with the balances: available = capacity − committed + returned.
        for pool in pools:
            figures = pool_figures(pool)
            assert figures.available == ledger.pool_account(pool).balance
            assert figures.available == figures.capacity - figures.committed + figures.returned
        transaction.set_rollback(True)
