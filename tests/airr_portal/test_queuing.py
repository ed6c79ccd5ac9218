"""Tasks queued after a commit: a broker that is down is logged, and what was committed stands."""

from unittest import mock

import pytest
from kombu.exceptions import OperationalError

from programmes.models import DirectorInvitation
from programmes.services import invite_director
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

BROKER_DOWN = mock.patch(
    "celery.app.task.Task.apply_async", side_effect=OperationalError("Error 111 connecting to 127.0.0.1:6379.")
)


def test_an_action_whose_email_cannot_be_queued_still_succeeds_and_the_failure_is_logged(
    programme, django_capture_on_commit_callbacks, caplog
):
    admin = UserFactory(is_staff=True)
    with BROKER_DOWN, django_capture_on_commit_callbacks(execute=True):
        invitation = invite_director(programme=programme, email="dana@example.ac.uk", actor=admin)

    assert DirectorInvitation.objects.get() == invitation
    [record] = [r for r in caplog.records if r.name == "airr_portal.queuing"]
    assert record.levelname == "ERROR"
    assert "send_email_task" in record.getMessage() and "could not be queued" in record.getMessage()


def test_anything_else_a_task_raises_is_not_swallowed(programme, django_capture_on_commit_callbacks):
    admin = UserFactory(is_staff=True)
    with (
        mock.patch("celery.app.task.Task.apply_async", side_effect=RuntimeError("a bug")),
        pytest.raises(RuntimeError),
        django_capture_on_commit_callbacks(execute=True),
    ):
        invite_director(programme=programme, email="dana@example.ac.uk", actor=admin)
