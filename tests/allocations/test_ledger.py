"""The ledger's services: double entry, balances, idempotency, windows, and refusals that change nothing."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.utils import timezone

from allocations import ledger
from allocations.models import Allocation, LedgerAccount, LedgerEntry, LedgerTransaction
from tests.factories import AllocationFactory, FundPoolFactory, SystemFactory, UserFactory
from tests.postgres import requires_postgres

HOUR = 3600
pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user():
    return UserFactory(is_staff=True)


@pytest.fixture
def pool(admin_user):
    pool = FundPoolFactory()
    ledger.deposit_to_pool(
        pool=pool, seconds=1000 * HOUR, actor=admin_user, reason="Initial budget", idempotency_key="deposit-1"
    )
    return pool


@pytest.fixture
def allocation(pool):
    return AllocationFactory(pool=pool)


def balance(account) -> int:
    return LedgerAccount.objects.get(pk=account.pk).balance


def ledger_snapshot():
    # Accounts are opened lazily at zero; opening one moves nothing, so only non-zero balances count.
    return (
        LedgerTransaction.objects.count(),
        LedgerEntry.objects.count(),
        sorted(LedgerAccount.objects.exclude(balance=0).values_list("pk", "balance")),
    )


def assert_books_balance():
    for txn in LedgerTransaction.objects.all():
        assert (txn.entries.aggregate(total=Sum("amount"))["total"] or 0) == 0, txn
    for account in LedgerAccount.objects.all():
        assert account.balance == (account.entries.aggregate(total=Sum("amount"))["total"] or 0), account


@pytest.mark.parametrize(
    ("hours", "seconds"),
    [
        ("1", 3600),
        ("160,000", 576_000_000),
        ("12.5", 45_000),
        ("0.25", 900),
        ("0.0025", 9),
        (Decimal("2"), 7200),
    ],
)
def test_gpu_hours_typed_by_people_become_whole_gpu_seconds(hours, seconds):
    assert ledger.hours_to_seconds(hours) == seconds


@pytest.mark.parametrize("hours", ["0", "-5", "abc", "", "NaN", "Infinity", "0.0001", "1.00001", "1e30"])
def test_amounts_that_are_not_a_positive_whole_number_of_gpu_seconds_are_refused(hours):
    with pytest.raises(ledger.InvalidAmount):
        ledger.hours_to_seconds(hours)


def test_floats_are_refused_because_they_cannot_hold_gpu_hours_exactly():
    with pytest.raises(TypeError):
        ledger.hours_to_seconds(0.1)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(576_000_000, "160,000"), (5400, "1.5"), (36, "0.01"), (17, "0"), (-5400, "\u22121.5")],
)
def test_gpu_seconds_are_shown_as_gpu_hours_with_at_most_two_decimals(seconds, shown):
    assert ledger.format_gpu_hours(seconds) == shown


def test_a_deposit_moves_hours_from_outside_funding_into_the_pool(pool, admin_user):
    txn = LedgerTransaction.objects.get(idempotency_key="deposit-1")
    assert txn.type == "deposit" and txn.actor == admin_user and txn.reason == "Initial budget"
    assert balance(ledger.pool_account(pool)) == 1000 * HOUR
    assert balance(ledger.sink_account(pool.system, "funding")) == -1000 * HOUR
    assert sorted(txn.entries.values_list("amount", flat=True)) == [-1000 * HOUR, 1000 * HOUR]


def test_repeating_an_idempotency_key_returns_the_first_transaction_and_moves_nothing(pool, admin_user):
    before = ledger_snapshot()
    again = ledger.deposit_to_pool(
        pool=pool, seconds=1000 * HOUR, actor=admin_user, reason="Initial budget", idempotency_key="deposit-1"
    )
    assert again == LedgerTransaction.objects.get(idempotency_key="deposit-1")
    assert ledger_snapshot() == before


def test_a_key_already_used_for_another_kind_of_movement_is_refused(pool, admin_user):
    with pytest.raises(ledger.IdempotencyKeyReused):
        ledger.withdraw_from_pool(pool=pool, seconds=HOUR, actor=admin_user, reason="Oops", idempotency_key="deposit-1")


def test_every_operation_needs_a_reason(pool, admin_user):
    with pytest.raises(ledger.LedgerError, match="reason"):
        ledger.deposit_to_pool(pool=pool, seconds=HOUR, actor=admin_user, reason=" ", idempotency_key="k")


@pytest.mark.parametrize("seconds", [0, -3600, True, Decimal("3600")])
def test_zero_negative_and_non_integer_amounts_are_refused_and_the_ledger_is_unchanged(pool, admin_user, seconds):
    before = ledger_snapshot()
    with pytest.raises(ledger.InvalidAmount):
        ledger.deposit_to_pool(pool=pool, seconds=seconds, actor=admin_user, reason="r", idempotency_key="bad")
    assert ledger_snapshot() == before


def test_a_commitment_moves_hours_from_the_pool_to_the_allocation(pool, allocation, admin_user):
    ledger.commit_to_allocation(
        allocation=allocation,
        seconds=400 * HOUR,
        actor=admin_user,
        reason="Award",
        idempotency_key="award-1",
        cause=("award", "17"),
    )
    assert balance(ledger.pool_account(pool)) == 600 * HOUR
    assert balance(ledger.allocation_account(allocation)) == 400 * HOUR
    txn = LedgerTransaction.objects.get(idempotency_key="award-1")
    assert (txn.cause_type, txn.cause_id) == ("award", "17")
    assert_books_balance()


def test_a_commitment_beyond_the_available_hours_is_refused_and_the_ledger_is_unchanged(pool, allocation):
    before = ledger_snapshot()
    with pytest.raises(ledger.InsufficientHours, match="1,000 GPU-hours available"):
        ledger.commit_to_allocation(
            allocation=allocation,
            seconds=1000 * HOUR + 1,
            actor=None,
            reason="Award",
            idempotency_key="too-much",
        )
    assert ledger_snapshot() == before


def test_a_commitment_outside_the_pool_window_is_refused(pool):
    late = AllocationFactory(pool=pool, start_date=pool.valid_from, end_date=pool.valid_until + timedelta(days=1))
    with pytest.raises(ledger.OutsideWindow, match="outside"):
        ledger.commit_to_allocation(allocation=late, seconds=HOUR, actor=None, reason="Award", idempotency_key="k")


def test_an_expired_pool_accepts_no_commitments_and_no_deposits(admin_user):
    today = timezone.localdate()
    pool = FundPoolFactory(valid_from=today - timedelta(days=400), valid_until=today - timedelta(days=35))
    ledger.deposit_to_pool(
        pool=pool,
        seconds=HOUR,
        actor=admin_user,
        reason="Budget",
        idempotency_key="d",
        effective_at=timezone.now() - timedelta(days=100),
    )
    allocation = AllocationFactory(pool=pool)
    with pytest.raises(ledger.OutsideWindow, match="closed"):
        ledger.commit_to_allocation(allocation=allocation, seconds=HOUR, actor=None, reason="r", idempotency_key="c")
    with pytest.raises(ledger.OutsideWindow, match="closed"):
        ledger.deposit_to_pool(pool=pool, seconds=HOUR, actor=admin_user, reason="More", idempotency_key="d2")


def test_unused_hours_can_still_be_withdrawn_from_an_expired_pool(admin_user):
    today = timezone.localdate()
    pool = FundPoolFactory(valid_from=today - timedelta(days=400), valid_until=today - timedelta(days=35))
    ledger.deposit_to_pool(
        pool=pool,
        seconds=HOUR,
        actor=admin_user,
        reason="Budget",
        idempotency_key="d",
        effective_at=timezone.now() - timedelta(days=100),
    )
    ledger.withdraw_from_pool(pool=pool, seconds=HOUR, actor=admin_user, reason="Close", idempotency_key="w")
    assert balance(ledger.pool_account(pool)) == 0


def test_hours_committed_to_awards_cannot_be_withdrawn(pool, allocation, admin_user):
    ledger.commit_to_allocation(allocation=allocation, seconds=900 * HOUR, actor=None, reason="A", idempotency_key="a")
    before = ledger_snapshot()
    with pytest.raises(ledger.InsufficientHours, match="100 GPU-hours available"):
        ledger.withdraw_from_pool(pool=pool, seconds=101 * HOUR, actor=admin_user, reason="r", idempotency_key="w")
    assert ledger_snapshot() == before
    ledger.withdraw_from_pool(pool=pool, seconds=100 * HOUR, actor=admin_user, reason="r", idempotency_key="w")
    assert balance(ledger.pool_account(pool)) == 0


def test_a_transfer_moves_hours_between_pools_of_one_system_and_conserves_them(pool, admin_user):
    other = FundPoolFactory(system=pool.system)
    ledger.transfer_between_pools(
        source=pool,
        destination=other,
        seconds=250 * HOUR,
        actor=admin_user,
        reason="Rebalance",
        idempotency_key="t",
    )
    assert balance(ledger.pool_account(pool)) == 750 * HOUR
    assert balance(ledger.pool_account(other)) == 250 * HOUR
    assert_books_balance()


def test_a_transfer_between_systems_is_refused(pool, admin_user):
    elsewhere = FundPoolFactory(system=SystemFactory(slug="dawn", name="Dawn", cluster_name="dawn"))
    before = ledger_snapshot()
    with pytest.raises(ledger.SystemMismatch, match="same system"):
        ledger.transfer_between_pools(
            source=pool,
            destination=elsewhere,
            seconds=HOUR,
            actor=admin_user,
            reason="r",
            idempotency_key="t",
        )
    assert ledger_snapshot() == before


def test_a_transfer_to_the_same_pool_is_refused(pool, admin_user):
    with pytest.raises(ledger.SystemMismatch):
        ledger.transfer_between_pools(
            source=pool, destination=pool, seconds=HOUR, actor=admin_user, reason="r", idempotency_key="t"
        )


def test_usage_beyond_the_award_is_still_charged_and_shows_as_a_negative_allocation(pool, allocation):
    ledger.commit_to_allocation(allocation=allocation, seconds=10 * HOUR, actor=None, reason="A", idempotency_key="a")
    ledger.charge_usage(allocation=allocation, seconds=12 * HOUR, reason="Job 1", idempotency_key="job-1")
    assert balance(ledger.allocation_account(allocation)) == -2 * HOUR
    assert balance(ledger.sink_account(pool.system, "consumed")) == 12 * HOUR
    assert balance(ledger.pool_account(pool)) == 990 * HOUR


def test_a_refund_gives_back_charged_hours_but_never_more_than_were_charged(pool, allocation, admin_user):
    ledger.commit_to_allocation(allocation=allocation, seconds=10 * HOUR, actor=None, reason="A", idempotency_key="a")
    charge = ledger.charge_usage(allocation=allocation, seconds=3 * HOUR, reason="Job", idempotency_key="job")
    with pytest.raises(ledger.InvalidAmount, match="Only 3 GPU-hours"):
        ledger.refund_usage(
            allocation=allocation,
            seconds=3 * HOUR + 1,
            actor=admin_user,
            reason="Node failure",
            idempotency_key="r",
        )
    ledger.refund_usage(
        allocation=allocation,
        seconds=3 * HOUR,
        actor=admin_user,
        reason="Node failure",
        idempotency_key="r",
        corrects=charge,
    )
    assert balance(ledger.allocation_account(allocation)) == 10 * HOUR


def test_an_adjustment_is_a_new_transaction_pointing_at_what_it_corrects(pool, allocation, admin_user):
    charge = ledger.charge_usage(allocation=allocation, seconds=5 * HOUR, reason="Job", idempotency_key="job")
    more = ledger.adjust_usage(
        corrects=charge,
        seconds=HOUR,
        actor=admin_user,
        reason="Charge factor was wrong",
        idempotency_key="adj-1",
    )
    less = ledger.adjust_usage(
        corrects=more, seconds=-2 * HOUR, actor=admin_user, reason="Over-corrected", idempotency_key="adj-2"
    )
    assert less.corrects == more and more.corrects == charge
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 4 * HOUR
    assert LedgerEntry.objects.filter(transaction=charge).count() == 2  # the original is untouched
    with pytest.raises(ledger.WrongState):
        ledger.adjust_usage(
            corrects=LedgerTransaction.objects.get(idempotency_key="deposit-1"),
            seconds=HOUR,
            actor=admin_user,
            reason="r",
            idempotency_key="adj-3",
        )


def test_expiry_returns_unused_hours_to_the_pool_when_its_policy_is_return(pool, allocation):
    ledger.commit_to_allocation(allocation=allocation, seconds=10 * HOUR, actor=None, reason="A", idempotency_key="a")
    ledger.charge_usage(allocation=allocation, seconds=4 * HOUR, reason="Job", idempotency_key="job")
    txn = ledger.expire_allocation(allocation=allocation, idempotency_key="expire")
    assert txn.type == "expire"
    assert balance(ledger.pool_account(pool)) == 996 * HOUR
    assert balance(ledger.allocation_account(allocation)) == 0
    assert Allocation.objects.get(pk=allocation.pk).state == "expired"


def test_expiry_forfeits_unused_hours_when_the_pool_says_so(admin_user):
    pool = FundPoolFactory(unused_hours_policy="forfeit")
    ledger.deposit_to_pool(pool=pool, seconds=10 * HOUR, actor=admin_user, reason="B", idempotency_key="d")
    allocation = AllocationFactory(pool=pool)
    ledger.commit_to_allocation(allocation=allocation, seconds=10 * HOUR, actor=None, reason="A", idempotency_key="a")
    txn = ledger.expire_allocation(allocation=allocation, idempotency_key="expire")
    assert txn.type == "forfeit"
    assert balance(ledger.pool_account(pool)) == 0
    assert balance(ledger.sink_account(pool.system, "forfeited")) == 10 * HOUR


def test_revocation_returns_unused_hours_to_the_pool_whatever_its_policy(admin_user):
    pool = FundPoolFactory(unused_hours_policy="forfeit")
    ledger.deposit_to_pool(pool=pool, seconds=10 * HOUR, actor=admin_user, reason="B", idempotency_key="d")
    allocation = AllocationFactory(pool=pool)
    ledger.commit_to_allocation(allocation=allocation, seconds=10 * HOUR, actor=None, reason="A", idempotency_key="a")
    ledger.revoke_allocation(allocation=allocation, actor=admin_user, reason="Misuse", idempotency_key="revoke")
    assert balance(ledger.pool_account(pool)) == 10 * HOUR
    assert Allocation.objects.get(pk=allocation.pk).state == "revoked"


def test_an_ended_allocation_cannot_end_again_nor_receive_hours_but_a_retry_returns_the_first_result(pool, allocation):
    first = ledger.expire_allocation(allocation=allocation, idempotency_key="expire")
    assert first.entries.count() == 0  # nothing was unused, but the end is in the journal
    assert ledger.expire_allocation(allocation=allocation, idempotency_key="expire") == first
    with pytest.raises(ledger.WrongState):
        ledger.revoke_allocation(allocation=allocation, actor=None, reason="r", idempotency_key="revoke")
    with pytest.raises(ledger.WrongState):
        ledger.commit_to_allocation(allocation=allocation, seconds=HOUR, actor=None, reason="A", idempotency_key="c")


def test_an_overrun_stays_on_the_allocation_at_expiry(pool, allocation):
    ledger.commit_to_allocation(allocation=allocation, seconds=HOUR, actor=None, reason="A", idempotency_key="a")
    ledger.charge_usage(allocation=allocation, seconds=2 * HOUR, reason="Job", idempotency_key="job")
    ledger.expire_allocation(allocation=allocation, idempotency_key="expire")
    assert balance(ledger.allocation_account(allocation)) == -HOUR
    assert balance(ledger.pool_account(pool)) == 999 * HOUR


def test_entries_that_do_not_sum_to_zero_are_never_written(pool):
    account = ledger.pool_account(pool)
    before = ledger_snapshot()
    with pytest.raises(ledger.UnbalancedTransaction):
        ledger._record(
            types=("deposit",),
            idempotency_key="broken",
            actor=None,
            reason="r",
            effective_at=None,
            accounts=[account],
            build=lambda locked: ("deposit", [(account, HOUR)]),
        )
    assert ledger_snapshot() == before


def test_the_database_refuses_a_negative_pool_balance_even_without_the_services(pool):
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerAccount.objects.filter(pk=ledger.pool_account(pool).pk).update(balance=-1)


def test_a_negative_pool_reached_without_a_lock_is_reported_as_insufficient_hours(pool, allocation, monkeypatch):
    # A code path that skipped its check: only the database CHECK stands between it and over-commitment.
    monkeypatch.setattr(ledger, "_check_available", lambda *args: None)
    before = ledger_snapshot()
    with pytest.raises(ledger.InsufficientHours):
        ledger.commit_to_allocation(
            allocation=allocation, seconds=1001 * HOUR, actor=None, reason="A", idempotency_key="a"
        )
    assert ledger_snapshot() == before


@pytest.mark.postgres
@requires_postgres
def test_postgresql_refuses_to_update_or_delete_ledger_entries_and_transactions(pool):
    entry = LedgerEntry.objects.first()
    for statement in (
        ("UPDATE allocations_ledgerentry SET amount = amount + 1 WHERE id = %s", [entry.pk]),
        ("DELETE FROM allocations_ledgerentry WHERE id = %s", [entry.pk]),
        ("UPDATE allocations_ledgertransaction SET reason = 'x' WHERE id = %s", [entry.transaction_id]),
        ("DELETE FROM allocations_ledgertransaction WHERE id = %s", [entry.transaction_id]),
    ):
        with (
            pytest.raises(Exception, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(*statement)
    assert LedgerEntry.objects.get(pk=entry.pk).amount == entry.amount
