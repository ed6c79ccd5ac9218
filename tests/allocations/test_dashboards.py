"""The programme dashboard: each pool's figures, burn-down and run-out forecast, awards and proposals per call,
on hand-made ledger data whose totals are known; the same numbers in the page's tables and in the API."""

import re
from datetime import date, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from allocations import ledger
from allocations.awards import AwardPart, award_proposal
from allocations.dashboards import (
    FORECAST_WINDOW_DAYS,
    buckets_between,
    call_reports,
    forecast_run_out,
    pool_reports,
    programme_dashboard,
)
from allocations.selectors import start_of_day
from programmes.models import Proposal
from tests.factories import (
    AllocationFactory,
    CallFactory,
    FundPoolFactory,
    ProgrammeFactory,
    UserFactory,
    give_mfa,
    make_proposal,
)

pytestmark = pytest.mark.django_db

HOUR = 3600


def at(day: date, hour: int = 12):
    return start_of_day(day) + timedelta(hours=hour)


@pytest.fixture
def today():
    return timezone.localdate()


@pytest.fixture
def director(programme):
    user = UserFactory(email="dara.director@example.ac.uk")
    programme.directors.add(user)
    give_mfa(user)
    return user


def funded_pool(programme, system, *, opened_days_ago=20, closes_in_days=100, hours=1000, name="Builder pool"):
    today = timezone.localdate()
    pool = FundPoolFactory(
        programme=programme,
        system=system,
        name=name,
        valid_from=today - timedelta(days=opened_days_ago),
        valid_until=today + timedelta(days=closes_in_days),
    )
    ledger.deposit_to_pool(
        pool=pool,
        seconds=hours * HOUR,
        actor=None,
        reason="Budget",
        idempotency_key=f"deposit-{pool.pk}",
        effective_at=at(pool.valid_from, 9),
    )
    return pool


def allocation_of(pool, *, hours, account):
    allocation = AllocationFactory(pool=pool, scheduler_account=account)
    ledger.commit_to_allocation(
        allocation=allocation,
        seconds=hours * HOUR,
        actor=None,
        reason="Award",
        idempotency_key=f"c-{account}",
    )
    return allocation


def charge(allocation, hours, day, key):
    return ledger.charge_usage(
        allocation=allocation,
        seconds=int(hours * HOUR),
        reason="Usage",
        idempotency_key=key,
        effective_at=at(day),
    )


@pytest.fixture
def pool_with_usage(programme, system, today):
    """1,000 GPU-hours deposited on the pool's first day; 300 committed; 10 used 10 days ago, 20 used and 5
    refunded 5 days ago: consumed 25, remaining 975, available 700, held by the allocation 275."""
    pool = funded_pool(programme, system)
    allocation = allocation_of(pool, hours=300, account="airr-00001")
    charge(allocation, 10, today - timedelta(days=10), "u1")
    charge(allocation, 20, today - timedelta(days=5), "u2")
    ledger.refund_usage(
        allocation=allocation,
        seconds=5 * HOUR,
        actor=None,
        reason="A node failed",
        idempotency_key="r1",
        effective_at=at(today - timedelta(days=5), 15),
    )
    return pool


def test_a_pools_figures_and_burn_down_come_from_its_ledger_entries(pool_with_usage, today):
    (report,) = pool_reports([pool_with_usage], today=today)

    figures = report.figures
    assert (figures.capacity, figures.committed, figures.consumed, figures.available) == (
        1000 * HOUR,
        300 * HOUR,
        25 * HOUR,
        700 * HOUR,
    )
    assert figures.held_by_allocations == 275 * HOUR
    # One point a day from the pool's first day to today.
    assert [point.bucket.last for point in report.burn_down] == [
        pool_with_usage.valid_from + timedelta(days=n) for n in range(21)
    ]
    remaining = {point.bucket.last: point.remaining for point in report.burn_down}
    assert remaining[today - timedelta(days=11)] == 1000 * HOUR
    assert remaining[today - timedelta(days=10)] == 990 * HOUR
    assert remaining[today - timedelta(days=5)] == 975 * HOUR
    assert remaining[today] == 975 * HOUR
    assert all(point.capacity == 1000 * HOUR for point in report.burn_down)


def test_a_long_window_is_shown_week_by_week_ending_today():
    buckets = buckets_between(date(2026, 1, 1), date(2026, 6, 30))

    assert all((bucket.last - bucket.first).days == 6 for bucket in buckets[:-1])
    assert buckets[0].first == date(2026, 1, 1) and buckets[-1].last == date(2026, 6, 30)
    assert len(buckets) == 26


def test_the_forecast_projects_the_last_28_days_rate_to_the_day_the_pool_runs_out(today):
    # 50 GPU-hours a day over the last 28 days; 1,000 remaining: empty in 20 days.
    forecast = forecast_run_out(
        remaining=1000 * HOUR,
        consumed_ever=2000 * HOUR,
        consumed_in_window=FORECAST_WINDOW_DAYS * 50 * HOUR,
        today=today,
        opens_on=today - timedelta(days=60),
        closes_on=today + timedelta(days=100),
    )

    assert forecast.outcome == "runs out"
    assert forecast.runs_out_on == today + timedelta(days=20)
    assert forecast.seconds_per_day == 50 * HOUR


def test_a_big_pool_used_a_second_a_month_lasts_rather_than_emptying_past_the_last_date_there_is(today):
    # At this rate it would empty in some 2.4 billion years, past date.max: the forecast raised OverflowError, and
    # the director's dashboard answered 500.
    forecast = forecast_run_out(
        remaining=1_000_000 * HOUR,
        consumed_ever=1,
        consumed_in_window=1,
        today=today,
        opens_on=today - timedelta(days=60),
        closes_on=today + timedelta(days=100),
    )

    assert forecast.outcome == "lasts"
    assert forecast.left_at_close == 1_000_000 * HOUR - 100 // FORECAST_WINDOW_DAYS  # a second per 28 days, for 100


def test_a_part_day_left_counts_as_the_day_the_pool_runs_out(today):
    forecast = forecast_run_out(
        remaining=1001 * HOUR,
        consumed_ever=1400 * HOUR,
        consumed_in_window=FORECAST_WINDOW_DAYS * 50 * HOUR,
        today=today,
        opens_on=today - timedelta(days=60),
        closes_on=today + timedelta(days=100),
    )

    assert forecast.runs_out_on == today + timedelta(days=21)


def test_a_pool_that_outlasts_its_window_says_how_much_would_be_left(today):
    # 1 GPU-hour a day for the 100 days until it closes: about 900 of 1,000 left.
    forecast = forecast_run_out(
        remaining=1000 * HOUR,
        consumed_ever=28 * HOUR,
        consumed_in_window=FORECAST_WINDOW_DAYS * HOUR,
        today=today,
        opens_on=today - timedelta(days=60),
        closes_on=today + timedelta(days=100),
    )

    assert forecast.outcome == "lasts"
    assert forecast.runs_out_on is None
    assert forecast.left_at_close == 900 * HOUR


def test_a_pool_with_no_usage_has_no_forecast(programme, system, today):
    pool = funded_pool(programme, system)

    (report,) = pool_reports([pool], today=today)

    assert report.forecast.outcome == "no usage"
    assert report.burn_down[-1].remaining == 1000 * HOUR


def test_the_forecast_reads_only_the_last_28_days_of_consumption(programme, system, today):
    pool = funded_pool(programme, system, opened_days_ago=60, closes_in_days=300)
    allocation = allocation_of(pool, hours=900, account="airr-00002")
    charge(allocation, 500, today - timedelta(days=FORECAST_WINDOW_DAYS), "old")  # a day before the window
    charge(allocation, 28, today - timedelta(days=FORECAST_WINDOW_DAYS - 1), "first-day")
    charge(allocation, 28, today, "today")

    (report,) = pool_reports([pool], today=today)

    # 56 GPU-hours in the window: 2 a day; 1,000 − 556 = 444 remaining, so 222 days.
    assert report.forecast.rate_window_consumed == 56 * HOUR
    assert report.forecast.outcome == "runs out"
    assert report.forecast.runs_out_on == today + timedelta(days=222)


def test_proposals_are_counted_per_call_once_submitted_and_awards_too(programme, system, director, today):
    pool = funded_pool(programme, system, opened_days_ago=10, closes_in_days=700)
    call = CallFactory(programme=programme, pools=[pool], title="Round 1")
    other = CallFactory(programme=programme, pools=[pool], title="Round 2")
    applicant = UserFactory()
    awarded = make_proposal(call=call, pi=applicant, system=system, state="in_review")
    make_proposal(call=call, pi=applicant, system=system, state="in_review")
    make_proposal(call=call, pi=applicant, system=system, state="submitted")
    make_proposal(call=call, pi=applicant, system=system, state="draft")
    never_submitted = make_proposal(call=call, pi=applicant, system=system, state="withdrawn")
    Proposal.objects.filter(pk=never_submitted.pk).update(submitted_at=None)  # withdrawn while still a draft
    make_proposal(call=other, pi=applicant, system=system, state="rejected")
    award_proposal(
        proposal=awarded,
        parts=[AwardPart(pool=pool, seconds=600 * HOUR, start=today, end=today + timedelta(days=180))],
        rationale="Strong case",
        actor=director,
    )

    reports = {report.call.title: report for report in call_reports(programme)}

    first = reports["Round 1"]
    assert first.by_state == {"in_review": 1, "submitted": 1, "awarded": 1}
    assert first.submitted == 3
    # Each complete proposal asks for 10 runs of 100 GPU-hours.
    assert first.requested == 3000 * HOUR
    assert (first.awards, first.requested_by_awarded, first.awarded) == (1, 1000 * HOUR, 600 * HOUR)
    second = reports["Round 2"]
    assert second.by_state == {"rejected": 1} and second.awards == 0 and second.awarded == 0


def _table(page: str, table_id: str) -> list[list[str]]:
    body = re.search(rf'<table class="govuk-table" id="{table_id}">.*?<tbody[^>]*>(.*?)</tbody>', page, re.S)
    assert body, f"no table {table_id}"
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body.group(1), re.S)
    return [[re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in rows]  # fmt: skip


def test_the_dashboard_shows_a_chart_and_a_table_with_the_selectors_numbers(
    client, director, programme, pool_with_usage, today
):
    client.force_login(director)

    response = client.get(reverse("programme-dashboard", args=[programme.pk]))

    assert response.status_code == 200
    page = response.content.decode()
    (report,) = programme_dashboard(programme, today=today).pools
    chart_id = f"burn-down-{pool_with_usage.pk}"
    assert (
        f'aria-labelledby="{chart_id}-title" aria-describedby="{chart_id}-description"' in page and 'role="img"' in page
    )
    rows = _table(page, f"{chart_id}-table")
    assert len(rows) == len(report.burn_down)
    for row, point in zip(rows, report.burn_down, strict=True):
        assert row[0] == f"{point.bucket.last.day} {point.bucket.last:%b %Y}"
        assert row[1:] == [ledger.format_gpu_hours(v) for v in (point.capacity, point.consumed, point.remaining)]
    assert rows[-1][1:] == ["1,000", "25", "975"]
    # 25 GPU-hours in the last 28 days is under one a day: 975 would outlast the 100 days left.
    assert "will not run out before it closes on" in page
    left = report.forecast.left_at_close
    assert left == 975 * HOUR - 25 * HOUR * 100 // 28
    assert f"about <strong>{ledger.format_gpu_hours(left)}</strong> GPU-hours would be left" in page
    assert "in the last 28 days" in page


def test_the_dashboard_says_when_a_pool_runs_out(client, director, programme, system, today):
    pool = funded_pool(programme, system, hours=1000)
    allocation = allocation_of(pool, hours=900, account="airr-00003")
    for n in range(28):
        charge(allocation, 10, today - timedelta(days=n), f"daily-{n}")
    client.force_login(director)

    page = client.get(reverse("programme-dashboard", args=[programme.pk])).content.decode()

    # 720 remaining at 10 a day: 72 days, before the pool closes in 100.
    assert f"run out on <strong>{(today + timedelta(days=72)):%-d %B %Y}</strong>" in page


def test_the_dashboard_says_when_there_is_no_usage_yet(client, director, programme, system):
    funded_pool(programme, system)
    client.force_login(director)

    page = client.get(reverse("programme-dashboard", args=[programme.pk])).content.decode()

    assert "No usage yet" in page


def test_the_dashboard_is_linked_from_the_programme_and_pool_pages(client, director, programme, system):
    pool = funded_pool(programme, system)
    client.force_login(director)
    url = reverse("programme-dashboard", args=[programme.pk])

    assert url in client.get(reverse("programmes:programme-detail", args=[programme.slug])).content.decode()
    assert url in client.get(reverse("allocations:pool-detail", args=[pool.pk])).content.decode()


def test_a_director_of_another_programme_cannot_see_the_dashboard(client, director, system):
    elsewhere = ProgrammeFactory()
    funded_pool(elsewhere, system)
    client.force_login(director)

    assert client.get(reverse("programme-dashboard", args=[elsewhere.pk])).status_code == 404
    assert client.get(reverse("api-programme-dashboard", args=[elsewhere.pk])).status_code == 404


def test_the_api_gives_the_dashboards_numbers_in_gpu_seconds_and_gpu_hours(
    client, director, programme, pool_with_usage, today
):
    client.force_login(director)

    data = client.get(reverse("api-programme-dashboard", args=[programme.pk])).json()

    (pool,) = data["pools"]
    assert pool["figures"]["gpu_seconds"] == {
        "capacity": 1000 * HOUR,
        "committed": 300 * HOUR,
        "consumed": 25 * HOUR,
        "returned": 0,
        "forfeited": 0,
        "available": 700 * HOUR,
        "held_by_allocations": 275 * HOUR,
    }
    assert pool["figures"]["gpu_hours"]["consumed"] == "25.00"
    assert len(pool["burn_down"]) == 21
    assert pool["burn_down"][-1]["last_day"] == today.isoformat()
    assert pool["burn_down"][-1]["gpu_seconds"]["remaining"] == 975 * HOUR
    assert pool["forecast"]["outcome"] == "lasts"


@pytest.mark.parametrize("scale", [1, 8])
def test_the_dashboard_issues_a_bounded_number_of_queries(
    client, director, programme, system, today, scale, django_assert_max_num_queries
):
    # More pools, calls, proposals and days of usage cost no more queries.
    for n in range(scale):
        pool = funded_pool(programme, system, opened_days_ago=150, closes_in_days=200, name=f"Pool {n}")
        allocation = allocation_of(pool, hours=900, account=f"airr-1{n:04d}")
        for day in range(0, 150, 150 // (5 * scale)):
            charge(allocation, 1, today - timedelta(days=day), f"q-{n}-{day}")
        call = CallFactory(programme=programme, pools=[pool], title=f"Call {n}")
        for state in ("submitted", "in_review", "rejected")[: 1 + n % 3]:
            make_proposal(call=call, pi=UserFactory(), system=system, state=state)
    client.force_login(director)

    with django_assert_max_num_queries(21):
        response = client.get(reverse("programme-dashboard", args=[programme.pk]))

    assert response.status_code == 200
    assert response.content.decode().count('role="img"') == scale


def test_the_dashboard_shows_hours_returned_so_that_its_figures_add_up(
    client, director, programme, pool_with_usage, today
):
    from allocations.models import Allocation

    ledger.revoke_allocation(allocation=Allocation.objects.get(), actor=None, reason="Stopped", idempotency_key="rv")
    client.force_login(director)

    figures = client.get(reverse("api-programme-dashboard", args=[programme.pk])).json()["pools"][0]["figures"]
    page = client.get(reverse("programme-dashboard", args=[programme.pk])).content.decode()

    seconds = figures["gpu_seconds"]
    assert seconds["returned"] == 275 * HOUR  # what the allocation held came back
    assert (
        seconds["capacity"] - seconds["committed"] + seconds["returned"] - seconds["forfeited"] == seconds["available"]
    )
    assert "Returned to the pool</dt>" in page and ">275</dd>" in page
