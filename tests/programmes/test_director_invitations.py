"""Naming directors by email: at once for existing accounts, on email confirmation for everyone else."""

import pytest
from allauth.account.models import EmailAddress
from allauth.account.signals import email_confirmed
from django.core import mail
from django.urls import reverse

from programmes.models import DirectorInvitation
from programmes.services import invite_director
from tests.factories import UserFactory, give_mfa

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_user():
    user = UserFactory(is_staff=True)
    give_mfa(user)
    return user


def test_an_existing_user_becomes_a_director_at_once_and_is_told(
    programme, alice, admin_user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        invitation = invite_director(programme=programme, email="ALICE@example.ac.uk", actor=admin_user)
    assert programme.is_directed_by(alice)
    assert invitation.accepted_by == alice and not invitation.is_pending
    assert mail.outbox[-1].to == ["alice@example.ac.uk"] and "You now direct" in mail.outbox[-1].subject


def test_a_newcomer_is_invited_by_email_and_becomes_director_when_they_confirm_the_address(
    programme, admin_user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        invitation = invite_director(programme=programme, email="dana@example.ac.uk", actor=admin_user)
    assert invitation.is_pending
    assert "invited to direct" in mail.outbox[-1].subject and reverse("account_signup") in mail.outbox[-1].body

    dana = UserFactory(email="dana@example.ac.uk", verified=False)
    assert not programme.is_directed_by(dana)
    address = EmailAddress.objects.create(user=dana, email="dana@example.ac.uk", verified=True, primary=True)
    email_confirmed.send(sender=EmailAddress, request=None, email_address=address)

    assert programme.is_directed_by(dana)
    invitation.refresh_from_db()
    assert invitation.accepted_by == dana


def test_someone_else_confirming_a_different_address_gets_no_invitation(programme, admin_user, charlie):
    invite_director(programme=programme, email="dana@example.ac.uk", actor=admin_user)
    address = EmailAddress.objects.get(user=charlie)
    email_confirmed.send(sender=EmailAddress, request=None, email_address=address)
    assert not programme.is_directed_by(charlie)
    assert DirectorInvitation.objects.pending().count() == 1


def test_inviting_the_same_newcomer_twice_keeps_one_pending_invitation(programme, admin_user):
    first = invite_director(programme=programme, email="dana@example.ac.uk", actor=admin_user)
    second = invite_director(programme=programme, email="Dana@Example.ac.uk", actor=admin_user)
    assert first.pk == second.pk


def test_the_invite_page_refuses_a_bad_address_and_someone_already_a_director(client, programme, admin_user, alice):
    client.force_login(admin_user)
    url = reverse("programmes:director-invite", args=[programme.slug])
    response = client.post(url, {"email": "not an email"})
    assert "govuk-error-summary" in response.content.decode()
    programme.directors.add(alice)
    response = client.post(url, {"email": alice.email})
    assert "already a director" in response.content.decode()


def test_the_fund_pool_form_refuses_a_window_that_ends_before_it_starts(client, programme, system, admin_user):
    client.force_login(admin_user)
    data = {
        "name": "Backwards",
        "system": system.pk,
        "unused_hours_policy": "return",
        "grace_percent": "0",
        "valid_from_day": "1",
        "valid_from_month": "4",
        "valid_from_year": "2027",
        "valid_until_day": "31",
        "valid_until_month": "3",
        "valid_until_year": "2027",
    }
    response = client.post(reverse("programmes:fund-pool-create", args=[programme.slug]), data)
    assert "govuk-error-summary" in response.content.decode()
    assert "on or after the first day" in response.content.decode()
    assert not programme.pools.exists()
