"""A task goes through the real Redis broker to a real worker process and its result comes back."""

import uuid

import pytest
from django.urls import reverse

from airr_portal.celery import app as celery_app
from airr_portal.tasks import ping_task

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]


def test_a_task_round_trips_through_redis_and_a_worker_process(celery_worker_process):
    assert celery_app.conf.broker_url.startswith("redis://")
    assert not celery_app.conf.task_always_eager
    token = uuid.uuid4().hex
    result = ping_task.delay(token)
    assert result.get(timeout=60) == f"pong:{token}"


def test_health_sees_the_worker_through_redis(client, celery_worker_process, settings):
    ping_task.delay("warm-up").get(timeout=60)
    settings.HEALTH_WORKER_TIMEOUT = 20
    response = client.get(reverse("healthz"))
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["worker"]["status"] == "ok"


def test_health_reports_a_missing_worker_as_failing(client, settings):
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL: a real Redis broker")
    celery_app.control.purge()
    settings.HEALTH_WORKER_TIMEOUT = 0.5
    response = client.get(reverse("healthz"))
    assert response.status_code == 503
    assert response.json()["checks"]["worker"]["status"].startswith("failing")
    celery_app.control.purge()
