"""The health check and the security headers every response carries."""

import json
import logging

import pytest
from django.urls import reverse

from airr_portal import views
from airr_portal.logging import JsonFormatter

pytestmark = pytest.mark.django_db


def test_health_reports_database_broker_and_worker(client):
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["status"] for name, check in body["checks"].items()} == {
        "database": "ok",
        "broker": "ok",
        "worker": "ok",
    }


def test_health_answers_503_and_names_the_failing_part(client, monkeypatch):
    def broken():
        raise ConnectionError("broker down")

    monkeypatch.setattr(views, "_check_broker", broken)
    response = client.get(reverse("healthz"))
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["status"] == "failing: ConnectionError"
    assert response.json()["checks"]["database"]["status"] == "ok"


def test_every_page_sends_a_strict_content_security_policy(client):
    policy = client.get(reverse("home")).headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert client.get(reverse("home")).headers["X-Frame-Options"] == "DENY"


def test_logs_are_one_json_object_per_line_with_extra_fields():
    record = logging.LogRecord("airr", logging.INFO, __file__, 1, "charged %s", ("job",), None)
    record.allocation = "airr-00042"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "charged job"
    assert line["allocation"] == "airr-00042"
    assert line["level"] == "INFO"
