"""The fund pool pages and API: figures, statements, and bad input refused clearly with nothing moved."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from allocations import ledger
from allocations.models import LedgerEntry, LedgerTransaction
from tests.factories import AllocationFactory, FundPoolFactory, SystemFactory, UserFactory, give_mfa

HOUR = 3600
pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user():
    user = UserFactory(is_staff=True)
    give_mfa(user)
    return user


@pytest.fixture
def pool(programme, system):
    pool = FundPoolFactory(programme=programme, system=system, name="Open-Source AI Builder Fund")
    ledger.deposit_to_pool(pool=pool, seconds=160_000 * HOUR, actor=None, reason="Budget 2026", idempotency_key="d")
    return pool


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


def movement(**overrides):
    return {"hours": "100", "reason": "Top-up", "idempotency_key": "page-key", **overrides}


def test_the_pool_page_shows_its_figures_and_statement_in_gpu_hours(admin_client, pool):
    allocation = AllocationFactory(pool=pool)
    ledger.commit_to_allocation(
        allocation=allocation, seconds=1000 * HOUR + 1800, actor=None, reason="Award 42", idempotency_key="a"
    )
    response = admin_client.get(reverse("allocations:pool-detail", args=[pool.pk]))
    content = response.content.decode()
    assert response.status_code == 200
    assert "160,000" in content and "158,999.5" in content and "1,000.5" in content
    assert "Budget 2026" in content and "Award 42" in content


@pytest.mark.parametrize("viewer", ["director", "admin"])
def test_the_pool_page_lists_the_allocations_behind_its_consumed_and_forfeited_hours_each_linked_to_its_page(
    client, pool, director, admin_user, viewer
):
    """Awarded 10 and 5 GPU-hours; 6 and 1 used; the first ended with 4 forfeited by the pool's policy."""
    pool.unused_hours_policy = "forfeit"
    pool.save(update_fields=["unused_hours_policy"])
    ended, running = (
        AllocationFactory(pool=pool, scheduler_account="airr-00001"),
        AllocationFactory(pool=pool, scheduler_account="airr-00002"),
    )
    for allocation, awarded, used in ((ended, 10, 6), (running, 5, 1)):
        ledger.commit_to_allocation(
            allocation=allocation, seconds=awarded * HOUR, actor=None, reason="Award", idempotency_key=f"a{used}"
        )
        ledger.charge_usage(allocation=allocation, seconds=used * HOUR, reason="Usage", idempotency_key=f"u{used}")
    ledger.expire_allocation(allocation=ended, idempotency_key="end")
    client.force_login(director if viewer == "director" else admin_user)

    response = client.get(reverse("allocations:pool-detail", args=[pool.pk]))

    figures = response.context["figures"]
    rows = response.context["allocation_figures"]
    assert [(row.allocation, row.committed, row.consumed, row.forfeited, row.held) for row in rows] == [
        (ended, 10 * HOUR, 6 * HOUR, 4 * HOUR, 0),
        (running, 5 * HOUR, 1 * HOUR, 0, 4 * HOUR),
    ]
    assert sum(row.consumed for row in rows) == figures.consumed
    assert sum(row.forfeited for row in rows) == figures.forfeited
    for allocation in (ended, running):
        link = reverse("usage:allocation-usage", args=[allocation.pk])
        assert f'href="{link}"' in response.content.decode()
        assert client.get(link).status_code == 200


def test_a_deposit_through_the_page_moves_hours_once_even_if_submitted_twice(admin_client, pool):
    url = reverse("allocations:pool-deposit", args=[pool.pk])
    first = admin_client.post(url, movement())
    second = admin_client.post(url, movement())
    assert first.status_code == second.status_code == 302
    assert LedgerTransaction.objects.filter(idempotency_key="page-key").count() == 1
    assert ledger.pool_account(pool).balance == 160_100 * HOUR


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"hours": "0"}, "GPU-hours must be more than 0"),
        ({"hours": "-5"}, "GPU-hours must be more than 0"),
        ({"hours": "1.00001"}, "more precise than one GPU-second"),
        ({"hours": "lots"}, "Enter GPU-hours as a number"),
        ({"reason": ""}, "This field is required"),
    ],
)
def test_bad_deposits_get_an_error_summary_and_move_nothing(admin_client, pool, data, message):
    before = LedgerEntry.objects.count()
    response = admin_client.post(reverse("allocations:pool-deposit", args=[pool.pk]), movement(**data))
    content = response.content.decode()
    assert response.status_code == 200
    assert "govuk-error-summary" in content and message in content
    assert LedgerEntry.objects.count() == before


def test_a_withdrawal_below_what_is_committed_is_refused_in_the_page(admin_client, pool):
    allocation = AllocationFactory(pool=pool)
    ledger.commit_to_allocation(
        allocation=allocation, seconds=159_000 * HOUR, actor=None, reason="A", idempotency_key="a"
    )
    response = admin_client.post(reverse("allocations:pool-withdraw", args=[pool.pk]), movement(hours="1001"))
    assert "govuk-error-summary" in response.content.decode()
    assert "1,000 GPU-hours available" in response.content.decode()
    assert ledger.pool_account(pool).balance == 1000 * HOUR


def test_a_deposit_dated_after_the_pool_window_is_refused_in_the_page(admin_client, pool):
    late = pool.valid_until + timedelta(days=1)
    data = movement(effective_date_day=late.day, effective_date_month=late.month, effective_date_year=late.year)
    response = admin_client.post(reverse("allocations:pool-deposit", args=[pool.pk]), data)
    assert "govuk-error-summary" in response.content.decode()
    assert "accepts no more hours" in response.content.decode()


def test_the_transfer_page_offers_only_pools_of_the_same_system(admin_client, pool):
    same = FundPoolFactory(system=pool.system, name="Same system")
    FundPoolFactory(system=SystemFactory(slug="dawn"), name="Other system")
    content = admin_client.get(reverse("allocations:pool-transfer", args=[pool.pk])).content.decode()
    assert "Same system" in content and "Other system" not in content
    admin_client.post(reverse("allocations:pool-transfer", args=[pool.pk]), movement(destination=same.pk))
    assert ledger.pool_account(same).balance == 100 * HOUR


def test_the_statement_filter_shows_the_ledger_as_it_was_recorded_on_a_past_day(admin_client, pool):
    yesterday = timezone.localdate() - timedelta(days=1)
    url = reverse("allocations:pool-detail", args=[pool.pk])
    query = {"as_of_day": yesterday.day, "as_of_month": yesterday.month, "as_of_year": yesterday.year}
    response = admin_client.get(url, query)
    assert response.context["statement"].closing_balance == 0
    assert "Budget 2026" not in response.content.decode()


def test_a_statement_window_ending_before_it_starts_is_an_error(admin_client, pool):
    query = {
        "start_day": 2,
        "start_month": 5,
        "start_year": 2026,
        "end_day": 1,
        "end_month": 5,
        "end_year": 2026,
    }
    response = admin_client.get(reverse("allocations:pool-detail", args=[pool.pk]), query)
    assert "govuk-error-summary" in response.content.decode()


def test_each_impossible_statement_date_is_named_in_its_error(admin_client, pool):
    impossible = {
        f"{name}_{part}": value
        for name in ("start", "end", "as_of")
        for part, value in (("day", 31), ("month", 2), ("year", 2026))
    }
    page = admin_client.get(reverse("allocations:pool-detail", args=[pool.pk]), impossible).content.decode()

    for label in ("From", "To", "As recorded by"):
        assert f"The {label} date must be a real date" in page


# The API ---------------------------------------------------------------------------------------------------


def test_the_api_gives_figures_in_gpu_seconds_and_gpu_hours(admin_client, pool):
    body = admin_client.get(reverse("fund-pool-detail", args=[pool.pk])).json()
    assert body["figures"]["gpu_seconds"]["available"] == 160_000 * HOUR
    assert body["figures"]["gpu_hours"]["capacity"] == "160000.00"


def test_the_statement_endpoint_takes_from_to_and_as_of(admin_client, pool):
    url = reverse("fund-pool-statement", args=[pool.pk])
    body = admin_client.get(url).json()
    assert (body["opening_balance"], body["closing_balance"], body["count"]) == (0, 160_000 * HOUR, 1)
    assert body["movements"][0]["running_balance"] == 160_000 * HOUR
    yesterday = (timezone.localdate() - timedelta(days=1)).isoformat()
    assert admin_client.get(url, {"as_of": yesterday}).json()["closing_balance"] == 0
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    body = admin_client.get(url, {"from": tomorrow}).json()
    assert (body["opening_balance"], body["count"]) == (160_000 * HOUR, 0)


def test_a_statement_as_recorded_by_a_day_or_moment_to_come_is_refused(admin_client, pool):
    tomorrow = timezone.localdate() + timedelta(days=1)
    url = reverse("fund-pool-statement", args=[pool.pk])
    for as_of in (tomorrow.isoformat(), (timezone.now() + timedelta(hours=1)).isoformat()):
        response = admin_client.get(url, {"as_of": as_of})
        assert response.status_code == 400
        assert "what is recorded later is not known yet" in response.json()["errors"]["as_of"][0]
    query = {"as_of_day": tomorrow.day, "as_of_month": tomorrow.month, "as_of_year": tomorrow.year}
    page = admin_client.get(reverse("allocations:pool-detail", args=[pool.pk]), query).content.decode()
    assert "Enter today or an earlier date: what is recorded later is not known yet" in page


@pytest.mark.parametrize(
    "query", [{"from": "not-a-date"}, {"as_of": "soon"}, {"from": "2026-05-02", "to": "2026-05-01"}]
)
def test_the_statement_endpoint_refuses_bad_dates_with_a_400(admin_client, pool, query):
    response = admin_client.get(reverse("fund-pool-statement", args=[pool.pk]), query)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"


@pytest.mark.parametrize(
    ("data", "status", "field"),
    [
        ({"hours": "0"}, 400, "hours"),
        ({"hours": "0.00001"}, 400, "hours"),
        ({"hours": "999999"}, 409, None),
    ],
)
def test_bad_withdrawals_through_the_api_get_400_or_409_and_move_nothing(admin_client, pool, data, status, field):
    before = LedgerEntry.objects.count()
    response = admin_client.post(
        reverse("fund-pool-withdraw", args=[pool.pk]), {**movement(), **data}, content_type="application/json"
    )
    assert response.status_code == status
    if field:
        assert field in response.json()["errors"]
    assert LedgerEntry.objects.count() == before


def test_a_transfer_between_systems_through_the_api_is_a_400(admin_client, pool):
    elsewhere = FundPoolFactory(system=SystemFactory(slug="dawn"))
    response = admin_client.post(
        reverse("fund-pool-transfer", args=[pool.pk]),
        movement(destination=elsewhere.pk),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "same system" in response.json()["errors"]["destination"][0]


def test_repeating_an_api_deposit_returns_the_first_transaction_with_200(admin_client, pool):
    url = reverse("fund-pool-deposit", args=[pool.pk])
    first = admin_client.post(url, movement(), content_type="application/json")
    again = admin_client.post(url, movement(), content_type="application/json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assert ledger.pool_account(pool).balance == 160_100 * HOUR


def test_a_statement_read_page_by_page_adds_up_on_every_page(admin_client, pool):
    for n in range(1, 56):  # the budget's deposit and 55 more: two pages of 50
        ledger.deposit_to_pool(pool=pool, seconds=HOUR, actor=None, reason=f"Top-up {n}", idempotency_key=f"top-{n}")
    url = reverse("allocations:pool-detail", args=[pool.pk])

    first = admin_client.get(url).content.decode()
    second = admin_client.get(url, {"page": 2}).content.decode()

    # 160,000 GPU-hours, then 49 top-ups of one on the first page; the last 6 on the second.
    assert re.search(r"Opening balance</td>\s*<td[^>]*>0</td>", first)
    assert re.search(r"Carried forward to the next page</th>\s*<td[^>]*><strong>160,049</strong>", first)
    assert "Closing balance</th>" not in first and "Brought forward" not in first
    assert "Opening balance</td>" not in second and "Carried forward" not in second
    assert re.search(r"Brought forward from the previous page</td>\s*<td[^>]*>160,049</td>", second)
    assert re.search(r"Closing balance</th>\s*<td[^>]*><strong>160,055</strong>", second)
