"""A report export through a real Redis broker and a real worker process, as production runs it."""

import time

import pytest
from django.urls import reverse

from allocations.models import ReportExport
from tests.allocations.report_helpers import build_ledger_world, export_file, read_csv
from tests.factories import UserFactory, give_mfa
from tests.postgres import requires_postgres

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]


@requires_postgres
def test_an_export_asked_for_through_the_api_is_built_by_a_worker_from_the_reports_queue(
    client, system, programme, celery_worker_process
):
    build_ledger_world(system, programme)
    admin = UserFactory(email="reports-admin@example.ac.uk", is_staff=True)
    give_mfa(admin)
    client.force_login(admin)

    response = client.post(
        reverse("report-export-list"),
        {"groupings": ["programme"], "start": "2026-03-01", "end": "2026-03-31"},
        content_type="application/json",
    )

    assert response.status_code == 201
    deadline = time.monotonic() + 60
    while ReportExport.objects.get().state != "done" and time.monotonic() < deadline:
        time.sleep(0.2)
    export = ReportExport.objects.get()
    assert export.state == "done"
    assert read_csv(export_file(export))[1].values.tolist()[-1] == ["Total", "70.00", "10.50", "0.00", "0.00"]
