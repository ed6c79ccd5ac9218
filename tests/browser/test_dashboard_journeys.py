"""The dashboards in Chromium, checked with axe: a director reads their programme's dashboard and a PI their
allocation's page; each chart is an image with a name, and its table beside it holds the same numbers."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from allocations import ledger
from allocations.dashboards import allocation_report, programme_dashboard
from allocations.selectors import start_of_day
from tests.browser.conftest import check_accessibility, sign_in, visit
from tests.factories import AllocationFactory, FundPoolFactory, UserFactory, give_mfa

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = 3600


@pytest.fixture
def allocation_with_usage(system, programme):
    """A pool opened 20 days ago with 1,000 GPU-hours, an allocation of 300 and a charge on each of 6 days."""
    today = timezone.localdate()
    pool = FundPoolFactory(
        programme=programme,
        system=system,
        name="Builder pool",
        valid_from=today - timedelta(days=20),
        valid_until=today + timedelta(days=100),
    )
    ledger.deposit_to_pool(
        pool=pool,
        seconds=1000 * HOUR,
        actor=None,
        reason="Budget",
        idempotency_key="browser-deposit",
        effective_at=start_of_day(pool.valid_from),
    )
    pi = UserFactory(email="pi@example.ac.uk")
    allocation = AllocationFactory(
        pool=pool,
        holder=pi,
        scheduler_account="airr-00042",
        start_date=pool.valid_from,
        end_date=pool.valid_until,
    )
    ledger.commit_to_allocation(
        allocation=allocation,
        seconds=300 * HOUR,
        actor=None,
        reason="Award",
        idempotency_key="browser-award",
        effective_at=start_of_day(pool.valid_from),
    )
    for days_ago in (18, 15, 11, 7, 4, 1):
        ledger.charge_usage(
            allocation=allocation,
            seconds=(days_ago + 2) * HOUR,
            reason="Usage",
            idempotency_key=f"browser-usage-{days_ago}",
            effective_at=start_of_day(today - timedelta(days=days_ago)) + timedelta(hours=12),
        )
    return allocation


def _table_rows(page, table_id):
    return [
        [cell.strip() for cell in row.locator("th, td").all_inner_texts()]
        for row in page.locator(f"#{table_id} tbody tr").all()
    ]


def test_a_director_reads_the_programme_dashboard_whose_chart_and_table_agree(
    page, live_server, programme, allocation_with_usage
):
    director = UserFactory(email="director@example.ac.uk")
    programme.directors.add(director)
    give_mfa(director)
    sign_in(page, live_server, director)

    visit(page, f"/programmes/{programme.slug}/")
    page.get_by_role("link", name="Programme dashboard").click()
    check_accessibility(page)

    pool = allocation_with_usage.pool
    chart = page.get_by_role("img", name=f"Burn-down of {pool.name}")
    assert chart.count() == 1
    page.get_by_text(f"The burn-down of {pool.name} as a table").click()
    check_accessibility(page)  # with the table open
    (report,) = programme_dashboard(programme).pools
    rows = _table_rows(page, f"burn-down-{pool.pk}-table")
    assert [row[1:] for row in rows] == [
        [ledger.format_gpu_hours(value) for value in (point.capacity, point.consumed, point.remaining)]
        for point in report.burn_down
    ]
    # The chart draws one point per row of its table.
    points = chart.locator("polyline.airr-chart__line").get_attribute("points").split()
    assert len(points) == len(rows) == 21
    assert "will not run out before it closes on" in page.content()


def test_a_pi_reads_their_allocation_whose_chart_and_table_agree_and_downloads_the_statement(
    page, live_server, allocation_with_usage
):
    sign_in(page, live_server, allocation_with_usage.holder)

    visit(page, "/usage/allocations/")
    page.get_by_role("link", name=allocation_with_usage.scheduler_account, exact=False).click()
    check_accessibility(page)

    chart = page.get_by_role("img", name=f"Usage of {allocation_with_usage.scheduler_account}")
    assert chart.count() == 1
    page.get_by_text("Usage over time as a table").click()
    check_accessibility(page)
    report = allocation_report(allocation_with_usage)
    rows = _table_rows(page, f"usage-{allocation_with_usage.pk}-table")
    assert [row[1:] for row in rows] == [
        [ledger.format_gpu_hours(point.used), ledger.format_gpu_hours(point.cumulative)] for point in report.usage
    ]
    assert chart.locator("rect.airr-chart__bar").count() == len(rows)
    assert rows[-1][2] == "68"  # 20 + 17 + 13 + 9 + 6 + 3 GPU-hours

    with page.expect_download() as download:
        page.get_by_role("link", name="Download this statement as CSV").click()
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert "Closing balance" in text and "232.00" in text  # 300 awarded, 68 used
