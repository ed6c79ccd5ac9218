"""The Celery app: Redis as broker in production, a folder on disk in the embedded mode.

Work is split into queues by kind (DESIGN.md): `ingest`, `reconcile`, `reports` and `default`, so that a slow report
never delays the charging of usage. Tasks are acknowledged late and re-run if a worker dies, so every task must be
safe to run twice.
"""

import os
from pathlib import Path

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "airr_portal.settings")

app = Celery("airr_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")

QUEUES = ("default", "ingest", "reconcile", "reports")

app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_soft_time_limit=300,
    task_time_limit=360,
    result_expires=24 * 3600,
    task_default_queue="default",
    # One direct exchange per queue, so a task routed to `ingest` lands in that queue alone.
    task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
    task_default_exchange="default",
    task_default_routing_key="default",
    task_routes={
        "*.ingest_*": {"queue": "ingest"},
        "*.reconcile_*": {"queue": "reconcile"},
        "*.report_*": {"queue": "reports"},
    },
    broker_connection_retry_on_startup=True,
    timezone="UTC",
)
app.autodiscover_tasks()


def _make_embedded_broker_folders():
    # The filesystem transport does not create its folders, and the file result backend needs its own too.
    options = app.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)
    backend = str(app.conf.result_backend or "")
    if backend.startswith("file://"):
        Path(backend.removeprefix("file://")).mkdir(parents=True, exist_ok=True)


_make_embedded_broker_folders()
