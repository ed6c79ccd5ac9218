"""Emails owed are kept until sent: one per address, written with their cause, sent once, never lost."""

from datetime import timedelta
from smtplib import SMTPRecipientsRefused
from unittest import mock

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone
from kombu.exceptions import OperationalError

from airr_portal.mail import CLAIM, MAX_ATTEMPTS, email_after_commit, send_email, unsent_emails
from airr_portal.models import OutgoingEmail
from airr_portal.tasks import send_unsent_emails_task
from programmes.services import invite_director
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

BROKER_DOWN = mock.patch("celery.app.task.Task.apply_async", side_effect=OperationalError("Connection refused"))


def later(minutes: int):
    return mock.patch("django.utils.timezone.now", return_value=timezone.now() + timedelta(minutes=minutes))


def test_each_address_gets_its_own_email_once_after_the_commit(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        email_after_commit("Hello", "Body", ["a@example.ac.uk", "B@example.ac.uk", "b@example.ac.uk", ""])
        assert mail.outbox == []  # not before the commit

    assert sorted((m.to, m.subject, m.body) for m in mail.outbox) == [
        (["B@example.ac.uk"], "[AIRR Portal] Hello", "Body"),
        (["a@example.ac.uk"], "[AIRR Portal] Hello", "Body"),
    ]
    assert OutgoingEmail.objects.filter(sent_at__isnull=False).count() == 2


def test_an_email_whose_cause_was_rolled_back_is_not_owed(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        email_after_commit("Hello", "Body", ["a@example.ac.uk"])
        raise RuntimeError("the cause failed")

    assert (OutgoingEmail.objects.count(), mail.outbox) == (0, [])


def test_an_email_is_sent_once_however_often_it_is_handed_over(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        [email] = email_after_commit("Hello", "Body", ["a@example.ac.uk"])

    assert send_email(email.pk) is False
    with later(11):
        assert send_unsent_emails_task() == 0
    assert len(mail.outbox) == 1


def test_a_mail_server_error_is_recorded_and_the_email_sent_once_its_wait_is_over(django_capture_on_commit_callbacks):
    with BROKER_DOWN, django_capture_on_commit_callbacks(execute=True):
        [email] = email_after_commit("Hello", "Body", ["a@example.ac.uk"])
    refused = SMTPRecipientsRefused({"a@example.ac.uk": (451, b"try again later")})

    with mock.patch("airr_portal.mail.send_mail", side_effect=refused):
        assert send_email(email.pk) is False

    email.refresh_from_db()
    assert (email.sent_at, email.attempts) == (None, 1)
    assert "try again later" in email.last_error
    assert send_email(email.pk) is False  # held back: not tried again at once
    with later(4):
        assert send_email(email.pk) is False
    with later(6):
        assert send_email(email.pk) is True
    email.refresh_from_db()
    assert (email.attempts, email.last_error, [m.to for m in mail.outbox]) == (2, "", [["a@example.ac.uk"]])
    assert email.sent_at is not None


def test_a_mail_server_down_for_hours_delays_an_email_and_its_tries_span_about_a_day(
    django_capture_on_commit_callbacks,
):
    with BROKER_DOWN, django_capture_on_commit_callbacks(execute=True):
        [email] = email_after_commit("Hello", "Body", ["a@example.ac.uk"])
    created = timezone.now()
    tried_at = []

    def down(*args):
        tried_at.append(timezone.now())
        raise ConnectionRefusedError("mail server down")

    # The beat every 5 minutes for two days, against a mail server that never answers.
    with mock.patch("airr_portal.mail.send_mail", side_effect=down):
        for minute in range(0, 2 * 24 * 60, 5):
            with (
                mock.patch("django.utils.timezone.now", return_value=created + timedelta(minutes=minute)),
                django_capture_on_commit_callbacks(execute=True),
            ):
                send_unsent_emails_task()

    assert len(tried_at) == MAX_ATTEMPTS
    assert timedelta(hours=20) < tried_at[-1] - created < timedelta(hours=30)
    gaps = [later_try - earlier for earlier, later_try in zip(tried_at, tried_at[1:], strict=False)]
    assert gaps == sorted(gaps)  # each wait at least as long as the one before
    email.refresh_from_db()
    assert (email.sent_at, email.attempts, email.last_error) == (None, MAX_ATTEMPTS, "mail server down")


def test_one_address_refused_is_retried_alone_and_nobody_else_is_told_twice(django_capture_on_commit_callbacks):
    with BROKER_DOWN, django_capture_on_commit_callbacks(execute=True):
        emails = email_after_commit("Hello", "Body", ["a@example.ac.uk", "b@example.ac.uk", "c@example.ac.uk"])

    def refuse_b(subject, body, sender, to):
        if to == ["b@example.ac.uk"]:
            raise SMTPRecipientsRefused({"b@example.ac.uk": (451, b"mailbox busy")})
        mail.send_mail(subject, body, sender, to)

    with mock.patch("airr_portal.mail.send_mail", side_effect=refuse_b):
        for email in emails:
            send_email(email.pk)
    with later(11), django_capture_on_commit_callbacks(execute=True):
        assert send_unsent_emails_task() == 1

    assert sorted(m.to[0] for m in mail.outbox) == ["a@example.ac.uk", "b@example.ac.uk", "c@example.ac.uk"]


def test_a_sender_holding_an_email_keeps_others_off_it_until_its_claim_lapses(django_capture_on_commit_callbacks):
    with BROKER_DOWN, django_capture_on_commit_callbacks(execute=True):
        [email] = email_after_commit("Hello", "Body", ["a@example.ac.uk"])
    # A sender took it at minute 15 and holds it until 15 + CLAIM.
    OutgoingEmail.objects.filter(pk=email.pk).update(claimed_until=timezone.now() + timedelta(minutes=15) + CLAIM)

    assert send_email(email.pk) is False
    with later(16):
        assert not unsent_emails().exists()
        assert send_email(email.pk) is False
    with later(16 + int(CLAIM.total_seconds() // 60)):  # that sender died
        assert list(unsent_emails()) == [email]
        assert send_email(email.pk) is True
    assert len(mail.outbox) == 1


def test_the_beat_sends_what_was_left_unsent_oldest_first_and_gives_up_after_many_failures(
    django_capture_on_commit_callbacks,
):
    with BROKER_DOWN, django_capture_on_commit_callbacks(execute=True):
        first, second, hopeless = email_after_commit("Hello", "Body", ["a@ex.ac.uk", "b@ex.ac.uk", "c@ex.ac.uk"])
    OutgoingEmail.objects.filter(pk=hopeless.pk).update(attempts=MAX_ATTEMPTS, last_error="550 no such user")

    with django_capture_on_commit_callbacks(execute=True):
        assert send_unsent_emails_task() == 0  # their own tasks may still be on their way
    with later(11):
        assert list(unsent_emails().order_by("created_at", "pk")) == [first, second]
        with django_capture_on_commit_callbacks(execute=True):
            assert send_unsent_emails_task() == 2

    assert sorted(m.to[0] for m in mail.outbox) == ["a@ex.ac.uk", "b@ex.ac.uk"]
    assert OutgoingEmail.objects.get(pk=hopeless.pk).sent_at is None


def test_an_invitation_written_while_the_broker_was_down_reaches_its_address(
    programme, django_capture_on_commit_callbacks
):
    admin = UserFactory(is_staff=True)
    with BROKER_DOWN, django_capture_on_commit_callbacks(execute=True):
        invite_director(programme=programme, email="dana@example.ac.uk", actor=admin)
    assert mail.outbox == []

    with later(11), django_capture_on_commit_callbacks(execute=True):
        send_unsent_emails_task()

    [message] = mail.outbox
    assert message.to == ["dana@example.ac.uk"]
    assert message.subject == f"[AIRR Portal] You are invited to direct {programme.name}"


def test_a_mail_server_that_hangs_is_given_up_on_before_another_sender_may_claim_the_email(settings):
    # Without a timeout smtplib waits for ever: the claim would lapse and the beat send the email a second time.
    from django.core.mail import get_connection

    connection = get_connection("django.core.mail.backends.smtp.EmailBackend")

    assert connection.timeout is not None and connection.timeout < CLAIM.total_seconds() / 2
