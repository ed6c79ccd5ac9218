"""Directors, assessors and admins must set up two-factor authentication before they can use anything else."""

import pytest
from django.urls import reverse

from airr_portal import roles
from airr_portal.services import replace_api_token
from tests.factories import DEMO_PASSWORD, UserFactory, give_mfa

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("role", ["director", "assessor", "admin"])
def test_a_privileged_role_without_mfa_is_sent_to_set_it_up(client, make_persona, role):
    user = make_persona(role)
    user.authenticator_set.all().delete()
    signed_in = client.post(reverse("account_login"), {"login": user.email, "password": DEMO_PASSWORD})
    assert signed_in.status_code == 302
    response = client.get(reverse("home"))
    assert response.status_code == 302
    assert response.url == reverse("mfa_activate_totp")
    # The set-up page stays reachable, or nobody could comply; allauth asks for the password once more first.
    reauthenticate = client.get(reverse("mfa_activate_totp"), follow=True)
    assert reauthenticate.status_code == 200
    assert reauthenticate.redirect_chain[-1][0].startswith(reverse("account_reauthenticate"))
    activate = client.post(reauthenticate.redirect_chain[-1][0], {"password": DEMO_PASSWORD}, follow=True)
    assert activate.status_code == 200
    assert activate.request["PATH_INFO"] == reverse("mfa_activate_totp")


@pytest.mark.parametrize("role", ["director", "assessor", "admin"])
def test_a_privileged_role_with_mfa_uses_the_portal(client, make_persona, role):
    client.force_login(make_persona(role))
    assert client.get(reverse("home")).status_code == 200


def test_an_applicant_is_not_forced_to_use_mfa(client, alice):
    client.force_login(alice)
    assert client.get(reverse("home")).status_code == 200
    assert not roles.must_use_mfa(alice)


def test_the_api_refuses_a_privileged_token_without_mfa_in_the_standard_error_format(client, programme):
    director = UserFactory()
    programme.directors.add(director)
    key = replace_api_token(user=director)
    response = client.get(reverse("api-me"), HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 403
    assert response.json()["code"] == "mfa_required"

    give_mfa(director)
    response = client.get(reverse("api-me"), HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 200
    assert "programme director" in response.json()["roles"]


def test_a_session_api_call_by_a_privileged_user_without_mfa_gets_json_not_a_redirect(client, programme):
    director = UserFactory()
    programme.directors.add(director)
    client.force_login(director)
    response = client.get(reverse("api-me"))
    assert response.status_code == 403
    assert response.json() == {
        "status": 403,
        "code": "mfa_required",
        "detail": "Your role requires two-factor authentication: set it up in the portal first.",
        "errors": {},
    }
