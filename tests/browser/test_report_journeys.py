"""The report builder in Chromium, checked with axe: an admin asks for a report, watches its progress bar move
until the download link appears, and downloads the file; the builder with errors is accessible too."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from allocations import tasks
from allocations.models import ReportExport
from allocations.reports.services import build_report_export
from tests.allocations.report_helpers import build_ledger_world, read_csv
from tests.browser.conftest import check_accessibility, sign_in, visit
from tests.factories import UserFactory, give_mfa

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_admin_builds_a_report_watches_it_progress_and_downloads_it(
    page, live_server, system, programme, monkeypatch
):
    build_ledger_world(system, programme)
    admin = UserFactory(email="reports-admin@example.ac.uk", is_staff=True)
    give_mfa(admin)
    sign_in(page, live_server, admin)
    # The worker is held back, so that the page shows the export waiting and the test moves it along.
    monkeypatch.setattr(tasks.report_export_task, "delay", lambda *args, **kwargs: None)

    visit(page, "/reports/")
    page.get_by_role("button", name="Build the report").click()
    assert "There is a problem" in page.content() and "Enter the start date" in page.content()
    check_accessibility(page)

    page.locator("input[name=groupings][value=programme]").check()
    page.locator("input[name=groupings][value=month]").check()
    for field, value in (("start_day", "1"), ("start_month", "3"), ("start_year", "2026")):
        page.fill(f"input[name={field}]", value)
    for field, value in (("end_day", "31"), ("end_month", "3"), ("end_year", "2026")):
        page.fill(f"input[name={field}]", value)
    page.get_by_role("button", name="Build the report").click()

    page.wait_for_url("**/reports/exports/*/")
    assert page.get_by_role("heading", name="Your report is being built").is_visible()
    assert page.locator("progress").is_visible() and not page.get_by_role("link", name="Download").is_visible()
    check_accessibility(page)

    export = ReportExport.objects.get()
    ReportExport.objects.filter(pk=export.pk).update(state="running", progress=60)
    expect(page.locator("#report-progress-text")).to_contain_text("60% built")
    expect(page.locator("progress")).to_have_attribute("value", "60")
    ReportExport.objects.filter(pk=export.pk).update(state="pending")
    build_report_export(export_id=export.pk)

    download_link = page.get_by_role("link", name="Download the report (CSV)")
    download_link.wait_for(state="visible")
    assert not page.locator("progress").is_visible()
    assert page.get_by_role("heading", name="Your report is ready").is_visible()
    check_accessibility(page)
    with page.expect_download() as download:
        download_link.click()
    notes, table = read_csv(Path(download.value.path()).read_bytes())
    assert table.values.tolist()[-1] == ["Total", "", "70.00", "10.50", "0.00", "0.00"]
    assert any(line.startswith("# As of: ") for line in notes)

    visit(page, "/reports/")
    assert "Ready" in page.content()
