"""The report builder's pages and the reports API: who may use them, what bad input gets, and the file served."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from airr_portal.celery import app as celery_app
from allocations.models import ReportExport
from allocations.reports.services import export_path
from tests.allocations.report_helpers import MARCH, build_ledger_world, read_csv, read_xlsx
from tests.factories import ProgrammeFactory, UserFactory, give_mfa

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(system, programme):
    return build_ledger_world(system, programme)


@pytest.fixture
def admin(client):
    user = UserFactory(email="reports-admin@example.ac.uk", is_staff=True)
    give_mfa(user)
    return user


@pytest.fixture
def director(world):
    user = UserFactory(email="science-director@example.ac.uk")
    world.science.directors.add(user)
    give_mfa(user)
    return user


def form(**changes) -> dict:
    data = {
        "kind": "totals",
        "groupings": ["programme", "system", "month"],
        "start_day": "1",
        "start_month": "3",
        "start_year": "2026",
        "end_day": "31",
        "end_month": "3",
        "end_year": "2026",
        "format": "csv",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def build(client, django_capture_on_commit_callbacks, data):
    with django_capture_on_commit_callbacks(execute=True):
        return client.post(reverse("reports:builder"), data)


def test_an_admin_builds_a_report_and_downloads_it_from_its_status_page(
    client, admin, world, django_capture_on_commit_callbacks
):
    client.force_login(admin)

    response = build(client, django_capture_on_commit_callbacks, form())

    export = ReportExport.objects.get()
    assert response.status_code == 302 and response.url == reverse("reports:export-detail", args=[export.pk])
    page = client.get(response.url).content.decode()
    assert "Your report is ready" in page and reverse("reports:export-download", args=[export.pk]) in page
    download = client.get(reverse("reports:export-download", args=[export.pk]))
    assert download.status_code == 200
    assert download["Content-Disposition"].startswith("attachment; filename=")
    assert ".csv" in download["Content-Disposition"]
    assert download["Content-Type"] == "text/csv; charset=utf-8"
    _, table = read_csv(b"".join(download.streaming_content))
    assert table.values.tolist()[-1] == ["Total", "", "", "70.00", "10.50", "0.00", "0.00"]


def test_an_export_asked_for_while_the_broker_is_down_fails_saying_so_rather_than_waiting_for_ever(
    client, admin, world, django_capture_on_commit_callbacks, caplog
):
    from unittest import mock

    from kombu.exceptions import OperationalError

    client.force_login(admin)
    with mock.patch("celery.app.task.Task.apply_async", side_effect=OperationalError("Connection refused")):
        response = build(client, django_capture_on_commit_callbacks, form())

    export = ReportExport.objects.get()
    assert response.status_code == 302 and response.url == reverse("reports:export-detail", args=[export.pk])
    assert export.state == ReportExport.State.FAILED
    assert "Ask for it again in a few minutes" in client.get(response.url).content.decode()
    assert "could not be queued" in caplog.text


def test_an_xlsx_export_downloads_as_a_workbook(client, admin, world, django_capture_on_commit_callbacks):
    client.force_login(admin)
    build(client, django_capture_on_commit_callbacks, form(format="xlsx", groupings=["programme"]))
    export = ReportExport.objects.get()

    download = client.get(reverse("reports:export-download", args=[export.pk]))

    assert download["Content-Type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    report, notes = read_xlsx(b"".join(download.streaming_content))
    assert list(report["Programme"]) == ["AI for Science", "Open-Source AI Builder Fund", "Total"]


def test_a_report_still_being_built_shows_its_progress_bar_and_a_refresh_link(client, admin, world):
    client.force_login(admin)
    response = client.post(reverse("reports:builder"), form())  # the task waits for a commit that never comes
    export = ReportExport.objects.get()
    ReportExport.objects.filter(pk=export.pk).update(state="running", progress=40)

    page = client.get(response.url).content.decode()

    assert 'max="100" value="40"' in page and "<progress" in page
    assert "Refresh this page" in page and "report-progress.js" in page
    assert reverse("report-export-detail", args=[export.pk]) in page
    assert client.get(reverse("reports:export-download", args=[export.pk])).status_code == 302


def test_the_builder_lists_the_users_recent_exports_only(client, admin, director, world):
    other = ReportExport.objects.create(
        requested_by=director,
        start_date=MARCH[0],
        end_date=MARCH[1],
        groupings=["programme"],
        as_of=timezone.now(),
        created_at=timezone.now(),
        expires_at=timezone.now() + timedelta(days=1),
    )
    client.force_login(admin)
    client.post(reverse("reports:builder"), form())

    page = client.get(reverse("reports:builder")).content.decode()

    mine = ReportExport.objects.get(requested_by=admin)
    assert reverse("reports:export-detail", args=[mine.pk]) in page
    assert reverse("reports:export-detail", args=[other.pk]) not in page


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"groupings": None}, "Choose at least one way to group the totals"),
        ({"groupings": ["month", "week"]}, "Group by month or by week, not both"),
        ({"end_day": "1", "start_day": "31"}, "The end date must be on or after the start date"),
        ({"start_year": "2999", "end_year": "2999"}, "The start date must be today or in the past"),
        ({"start_day": "", "start_month": "", "start_year": ""}, "Enter the start date"),
        ({"end_day": "31", "end_month": "2"}, "The end date must be a real date"),
        ({"as_of_day": "1", "as_of_month": "1", "as_of_year": "2999"}, "The as-of date must be today or in the past"),
        ({"kind": "jobs", "format": "xlsx"}, "The export of every job is CSV only"),
        ({"format": "pdf"}, "Select a valid choice"),
        ({"groupings": ["colour"]}, "Select a valid choice"),
    ],
)
def test_the_builder_refuses_parameters_that_make_no_report_with_the_error_summary(client, admin, changes, message):
    client.force_login(admin)

    response = client.post(reverse("reports:builder"), form(**changes))

    page = response.content.decode()
    assert response.status_code == 200
    assert "govuk-error-summary" in page and message in page
    assert page.count(message) >= 2  # in the summary and beside the field
    assert not ReportExport.objects.exists()


def test_a_directors_builder_offers_only_their_programmes(client, director, world):
    ProgrammeFactory(name="Someone else's programme")
    client.force_login(director)

    page = client.get(reverse("reports:builder")).content.decode()

    assert "AI for Science" in page
    assert "Open-Source AI Builder Fund" not in page and "Someone else&#x27;s programme" not in page


def test_a_director_cannot_post_another_programmes_id(client, director, world):
    client.force_login(director)

    response = client.post(reverse("reports:builder"), form(programmes=[world.builder.pk]))

    assert response.status_code == 200 and "Select a valid choice" in response.content.decode()
    assert not ReportExport.objects.exists()


@pytest.mark.parametrize("role", ["applicant", "reviewer", "assessor"])
def test_pis_reviewers_and_assessors_cannot_build_or_fetch_reports(client, make_persona, role, admin, world):
    export = ReportExport.objects.create(
        requested_by=admin,
        start_date=MARCH[0],
        end_date=MARCH[1],
        groupings=["programme"],
        as_of=timezone.now(),
        created_at=timezone.now(),
        expires_at=timezone.now() + timedelta(days=1),
    )
    client.force_login(make_persona(role))

    assert client.get(reverse("reports:builder")).status_code == 403
    assert client.post(reverse("reports:builder"), form()).status_code == 403
    assert client.get(reverse("reports:export-detail", args=[export.pk])).status_code == 403
    assert client.get(reverse("reports:export-download", args=[export.pk])).status_code == 403
    api = client.post(reverse("report-export-list"), {}, content_type="application/json")
    assert api.status_code == 403 and api.json()["code"] == "permission_denied"
    assert not ReportExport.objects.exclude(pk=export.pk).exists()


def test_another_users_export_does_not_exist_for_a_director(client, admin, director, world):
    export = ReportExport.objects.create(
        requested_by=admin,
        start_date=MARCH[0],
        end_date=MARCH[1],
        groupings=["programme"],
        as_of=timezone.now(),
        created_at=timezone.now(),
        expires_at=timezone.now() + timedelta(days=1),
    )
    client.force_login(director)

    assert client.get(reverse("reports:export-detail", args=[export.pk])).status_code == 404
    assert client.get(reverse("reports:export-download", args=[export.pk])).status_code == 404
    assert client.get(reverse("report-export-detail", args=[export.pk])).status_code == 404
    assert client.get(reverse("report-export-download", args=[export.pk])).status_code == 404


def test_an_expired_export_answers_gone_with_a_clear_page(client, admin, world, django_capture_on_commit_callbacks):
    client.force_login(admin)
    build(client, django_capture_on_commit_callbacks, form())
    export = ReportExport.objects.get()
    ReportExport.objects.filter(pk=export.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    page = client.get(reverse("reports:export-detail", args=[export.pk]))
    download = client.get(reverse("reports:export-download", args=[export.pk]))
    api = client.get(reverse("report-export-download", args=[export.pk]))

    expired = "This export is no longer available</h1>"
    assert page.status_code == 410 and expired in page.content.decode()
    assert "its file is deleted within the hour" in page.content.decode()
    assert download.status_code == 410 and expired in download.content.decode()
    assert api.status_code == 410 and api.json()["code"] == "expired"


def test_an_export_whose_file_was_lost_answers_gone_not_an_error(
    client, admin, world, django_capture_on_commit_callbacks
):
    client.force_login(admin)
    build(client, django_capture_on_commit_callbacks, form())
    export = ReportExport.objects.get()
    export_path(export).unlink()

    page = client.get(reverse("reports:export-detail", args=[export.pk]))
    download = client.get(reverse("reports:export-download", args=[export.pk]))
    api = client.get(reverse("report-export-download", args=[export.pk]))
    status = client.get(reverse("report-export-detail", args=[export.pk])).json()

    # Its page and its status say so, rather than offering a download that answers 410.
    assert page.status_code == 410 and "Its file is missing from the server" in page.content.decode()
    assert status["download_url"] is None
    assert download.status_code == 410 and "This export is no longer available" in download.content.decode()
    assert api.status_code == 410 and api.json()["code"] == "expired"


# The API ------------------------------------------------------------------------------------------------------


def test_the_api_makes_an_export_and_answers_its_url_then_serves_the_file(
    client, admin, world, django_capture_on_commit_callbacks
):
    client.force_login(admin)
    body = {"groupings": ["programme"], "start": "2026-03-01", "end": "2026-03-31", "format": "csv"}

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("report-export-list"), body, content_type="application/json")

    assert response.status_code == 201
    created = response.json()
    assert response["Location"] == created["url"] and created["url"].endswith(f"/api/reports/exports/{created['id']}/")
    status = client.get(created["url"]).json()
    assert status["state"] == "done" and status["progress"] == 100 and status["row_count"] == 2
    download = client.get(status["download_url"])
    _, table = read_csv(b"".join(download.streaming_content))
    assert table.values.tolist()[-1] == ["Total", "70.00", "10.50", "0.00", "0.00"]


def test_the_api_answers_409_for_a_file_not_built_yet(client, admin, world):
    client.force_login(admin)
    body = {"groupings": ["programme"], "start": "2026-03-01", "end": "2026-03-31"}
    created = client.post(reverse("report-export-list"), body, content_type="application/json").json()

    response = client.get(reverse("report-export-download", args=[created["id"]]))

    assert created["state"] == "pending" and created["download_url"] is None
    assert response.status_code == 409 and response.json()["code"] == "conflict"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"groupings": [], "start": "2026-03-01", "end": "2026-03-31"}, "groupings"),
        ({"groupings": ["programme"], "start": "2026-03-31", "end": "2026-03-01"}, "end"),
        ({"groupings": ["programme"], "start": "2026-03-01"}, "end"),
        ({"groupings": ["programme"], "start": "not a date", "end": "2026-03-01"}, "start"),
        ({"groupings": ["nope"], "start": "2026-03-01", "end": "2026-03-31"}, "groupings"),
        ({"groupings": ["programme"], "start": "2026-03-01", "end": "2026-03-31", "programmes": ["x"]}, "programmes"),
        ({"groupings": ["programme"], "start": "2026-03-01", "end": "2026-03-31", "as_of": "2999-01-01"}, "as_of"),
        ({"groupings": ["programme"], "start": "2026-03-01", "end": "9999-12-31"}, "end"),
    ],
)
def test_the_api_refuses_bad_parameters_in_the_one_error_format(client, admin, body, field):
    client.force_login(admin)

    response = client.post(reverse("report-export-list"), body, content_type="application/json")

    assert response.status_code == 400
    error = response.json()
    assert error["status"] == 400 and error["code"] == "invalid" and field in error["errors"]
    assert not ReportExport.objects.exists()


def test_a_director_cannot_ask_the_api_for_another_programme(client, director, world):
    client.force_login(director)
    body = {"groupings": ["programme"], "start": "2026-03-01", "end": "2026-03-31", "programmes": [world.builder.pk]}

    response = client.post(reverse("report-export-list"), body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["errors"] == {"programmes": ["You can only report on programmes you direct"]}


def test_the_api_lists_only_the_users_own_exports(client, admin, director, world):
    client.force_login(director)
    body = {"groupings": ["programme"], "start": "2026-03-01", "end": "2026-03-31"}
    client.post(reverse("report-export-list"), body, content_type="application/json")
    client.force_login(admin)
    client.post(reverse("report-export-list"), body, content_type="application/json")
    client.force_login(director)

    listed = client.get(reverse("report-export-list")).json()["results"]

    assert [export["requested_by"] for export in listed] == [director.email]


def test_the_totals_endpoint_answers_grouped_figures_at_once(client, director, world):
    client.force_login(director)

    response = client.get(
        reverse("report-totals"), {"groupings": "system,month", "start": "2026-03-01", "end": "2026-03-31"}
    )

    body = response.json()
    assert response.status_code == 200
    assert body["rows"] == [
        {
            "system": "Dawn",
            "month": "2026-03",
            "awarded_gpu_seconds": 30 * 3600,
            "used_gpu_seconds": 3 * 3600,
            "returned_gpu_seconds": 0,
            "forfeited_gpu_seconds": 0,
            "awarded_gpu_hours": "30.00",
            "used_gpu_hours": "3.00",
            "returned_gpu_hours": "0.00",
            "forfeited_gpu_hours": "0.00",
        }
    ]
    assert body["totals"]["used_gpu_seconds"] == 3 * 3600


def test_the_totals_endpoint_refuses_a_missing_window(client, admin):
    client.force_login(admin)

    response = client.get(reverse("report-totals"), {"groupings": "programme"})

    assert response.status_code == 400 and set(response.json()["errors"]) == {"start", "end"}


def test_report_tasks_go_to_the_reports_queue():
    for name in ("allocations.tasks.report_export_task", "allocations.tasks.report_delete_expired_exports_task"):
        assert celery_app.amqp.router.route({}, name)["queue"].name == "reports"


def test_the_beat_deletes_expired_export_files_every_hour(settings):
    from allocations.tasks import report_delete_expired_exports_task

    entry = settings.CELERY_BEAT_SCHEDULE["delete-expired-report-exports"]
    assert entry["task"] == report_delete_expired_exports_task.name and entry["schedule"] == 3600.0


def test_the_api_reads_the_ledger_at_an_exact_moment_so_an_earlier_export_can_be_repeated(client, admin, world):
    """An adjustment recorded at 09:00 on 5 April: a moment just before it and one just after give different totals."""
    client.force_login(admin)

    def used(as_of: str) -> int:
        query = {"groupings": "system", "start": "2026-03-01", "end": "2026-03-31", "as_of": as_of}
        response = client.get(reverse("report-totals"), query)
        assert response.status_code == 200, response.json()
        return sum(row["used_gpu_seconds"] for row in response.json()["rows"])

    before, after = used("2026-04-05T08:59:00+00:00"), used("2026-04-05T09:01:00+00:00")

    assert after - before == 1800
    assert used("2026-04-05") == after  # a date reads the end of that day
    response = client.get(reverse("report-totals"), {"groupings": "system", "start": "2026-03-01", "end": "2026-03-31",
                                                      "as_of": "1999-12-31T23:00:00+00:00"})  # fmt: skip
    assert response.status_code == 400 and "as_of" in response.json()["errors"]
