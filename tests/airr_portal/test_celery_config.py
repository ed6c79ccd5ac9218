"""The Celery app's configuration: queues split by work, JSON only, tasks acknowledged late."""

import pytest

from airr_portal.celery import QUEUES
from airr_portal.celery import app as celery_app


@pytest.mark.parametrize(
    ("task_name", "queue"),
    [
        ("allocations.tasks.ingest_payload_task", "ingest"),
        ("allocations.tasks.reconcile_system_task", "reconcile"),
        ("allocations.tasks.report_export_task", "reports"),
        ("airr_portal.tasks.ping_task", "default"),
    ],
)
def test_tasks_are_routed_to_the_queue_of_their_kind(task_name, queue):
    route = celery_app.amqp.router.route({}, task_name)
    assert route["queue"].name == queue
    assert route["queue"].routing_key == queue


def test_every_queue_has_its_own_routing_key():
    keys = {queue.name: queue.routing_key for queue in celery_app.conf.task_queues}
    assert keys == {name: name for name in QUEUES}


def test_tasks_use_json_are_acknowledged_late_and_have_time_limits():
    conf = celery_app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit
