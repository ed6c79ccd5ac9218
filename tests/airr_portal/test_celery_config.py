"""The Celery app's configuration: queues split by work, JSON only, tasks acknowledged late."""

from pathlib import Path

import pytest
import yaml

from airr_portal.celery import QUEUES
from airr_portal.celery import app as celery_app


@pytest.mark.parametrize(
    ("task_name", "queue"),
    [
        ("allocations.tasks.ingest_batch_task", "ingest"),
        ("allocations.tasks.reconcile_system_task", "reconcile"),
        ("allocations.tasks.report_export_task", "reports"),
        ("airr_portal.tasks.ping_task", "default"),
    ],
)
def test_tasks_are_routed_to_the_queue_of_their_kind(task_name, queue):
    route = celery_app.amqp.router.route({}, task_name)
    assert route["queue"].name == queue
    assert route["queue"].routing_key == queue


def test_every_task_goes_to_a_queue_the_deployed_worker_consumes():
    """A task sent to a queue no worker listens on would wait for ever: docker-compose.yml's worker (as the README
    says) consumes every queue a task of the project is routed to, and `make run`'s worker consumes QUEUES."""
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    command = compose["services"]["worker"]["command"]
    consumed = set(command[command.index("--queues") + 1].split(","))
    celery_app.loader.import_default_modules()  # as a worker does on starting: every task of the project
    routes = {
        name: celery_app.amqp.router.route({}, name)["queue"].name
        for name in celery_app.tasks
        if not name.startswith("celery.")
    }

    assert {"allocations.tasks.reconcile_system_task", "allocations.tasks.report_export_task"} <= set(routes)
    assert {name: queue for name, queue in routes.items() if queue not in consumed} == {}
    assert set(routes.values()) <= set(QUEUES) <= consumed


def test_every_queue_has_its_own_routing_key():
    keys = {queue.name: queue.routing_key for queue in celery_app.conf.task_queues}
    assert keys == {name: name for name in QUEUES}


def test_tasks_use_json_are_acknowledged_late_and_have_time_limits():
    conf = celery_app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert 0 < conf.task_soft_time_limit < conf.task_time_limit


def test_redis_hands_a_task_to_another_worker_only_after_the_longest_a_task_may_run(settings):
    """A task is acknowledged when it ends: Redis gives an unacknowledged one to another worker after the
    visibility timeout, so a task still running then would run twice (two workers writing one export's file)."""
    import allocations.tasks  # noqa: F401  (registers the project's tasks)

    longest = max(
        [celery_app.conf.task_time_limit]
        + [task.time_limit or 0 for name, task in celery_app.tasks.items() if not name.startswith("celery.")]
    )
    assert longest >= 3700  # the report export's
    assert longest < settings.REDIS_VISIBILITY_TIMEOUT
    if settings.REDIS_URL:
        assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] == settings.REDIS_VISIBILITY_TIMEOUT
