"""Fixtures shared by the whole suite: the personas of every role, each a fresh user per test."""

import pytest

from airr_portal.celery import QUEUES
from airr_portal.celery import app as celery_app
from tests.factories import ProgrammeFactory, SystemFactory, UserFactory, give_mfa

ROLES = ["anonymous", "applicant", "reviewer", "assessor", "director", "admin"]


@pytest.fixture(autouse=True)
def _celery_runs_tasks_in_process(request):
    """Run tasks in the test's own process unless a test asks for the real broker and worker (marker `broker`)."""
    if request.node.get_closest_marker("broker"):
        yield
        return
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    yield
    celery_app.conf.task_always_eager = False


@pytest.fixture
def system(db):
    return SystemFactory(name="Isambard-AI", slug="isambard-ai", cluster_name="isambard-ai")


@pytest.fixture
def dawn(db):
    """A second system, for what must stay apart between systems."""
    return SystemFactory(name="Dawn", slug="dawn", cluster_name="dawn")


@pytest.fixture
def programme(db):
    return ProgrammeFactory(name="Open-Source AI Builder Fund", slug="open-source-ai-builder-fund")


@pytest.fixture
def make_persona(db, system, programme):
    """Build a user holding one role; privileged roles come with MFA enrolled, as the policy requires."""

    def build(role: str):
        if role == "anonymous":
            return None
        user = UserFactory(email=f"{role}@example.ac.uk")
        if role == "admin":
            user.is_staff = True
            user.save()
        elif role == "director":
            programme.directors.add(user)
        elif role == "assessor":
            system.assessors.add(user)
        elif role == "reviewer":
            pass  # Reviewers are made by assignment to a proposal; the proposals work attaches them.
        if role in ("admin", "director", "assessor"):
            give_mfa(user)
        return user

    return build


@pytest.fixture
def alice(db):
    """Alice is an applicant; in tests of ownership she owns the thing under test."""
    return UserFactory(email="alice@example.ac.uk", full_name="Alice Owner")


@pytest.fixture
def bob(db):
    """Bob is on Alice's team."""
    return UserFactory(email="bob@example.ac.uk", full_name="Bob Teammate")


@pytest.fixture
def charlie(db):
    """Charlie has no access to Alice's things."""
    return UserFactory(email="charlie@example.ac.uk", full_name="Charlie Outsider")


@pytest.fixture
def celery_worker_process(settings):
    """A real Celery worker in its own process, consuming every queue from the real Redis broker.

    Tests that use it are marked `broker` and need REDIS_URL; the worker sees the test database through
    DATABASE_URL, so such tests must commit their data (`transaction=True`).
    """
    import os
    import subprocess
    import sys

    from django.db import connection

    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL: a real Redis broker")
    environment = dict(os.environ)
    database = connection.settings_dict
    if database["ENGINE"].endswith("postgresql"):
        environment["DATABASE_URL"] = (
            f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/"
            f"{database['NAME']}"
        )
    # Stored payloads and exports are files: the worker reads and writes them in this test's own folder.
    environment["MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
    celery_app.control.purge()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "airr_portal",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "WARNING",
            "--queues",
            ",".join(QUEUES),
            "--hostname",
            f"test-{os.getpid()}@%h",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        env=environment,
    )
    yield worker
    worker.terminate()
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
    # Leave the broker empty: a message a killed worker had taken is kept unacknowledged, and Redis would give it
    # back to the queue an hour later, to whichever worker then reads it (another run's, against another database).
    celery_app.control.purge()
    with celery_app.connection_for_write() as broker:
        channel = broker.default_channel
        channel.client.delete(channel.unacked_key, channel.unacked_index_key)


@pytest.fixture(autouse=True)
def _empty_cache():
    """Rate limits live in the cache: clear it so one test's sign-ins never throttle another's."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _uploads_go_to_a_temporary_folder(settings, tmp_path):
    """Uploaded files (a proposal's PDF) land in the test's own folder, never in var/uploads."""
    settings.MEDIA_ROOT = tmp_path / "uploads"
