"""Fixtures shared by the whole suite: the personas of every role, each a fresh user per test."""

import pytest

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
