"""Accounts: email is the login, addresses are verified, sign-in is rate limited, OIDC is set from settings."""

import re

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.test import override_settings
from django.urls import reverse

from airr_portal.models import User
from tests.factories import DEMO_PASSWORD, UserFactory, give_mfa

pytestmark = pytest.mark.django_db


def test_it_stores_email_addresses_in_lower_case_and_logs_in_by_any_case(client):
    user = UserFactory(email="Alice.Owner@Example.AC.UK")
    assert user.email == "alice.owner@example.ac.uk"
    response = client.post(reverse("account_login"), {"login": "ALICE.OWNER@example.ac.uk", "password": DEMO_PASSWORD})
    assert response.status_code == 302
    assert response.wsgi_request.user == user


def test_create_superuser_makes_an_admin():
    admin = User.objects.create_superuser("root@example.org", "a-long-password-123")
    assert admin.is_staff and admin.is_superuser
    with pytest.raises(ValueError):
        User.objects.create_user("", "x")


def test_sign_up_sends_a_verification_email_and_blocks_login_until_verified(client):
    response = client.post(
        reverse("account_signup"),
        {
            "email": "newcomer@example.ac.uk",
            "password1": "a-very-long-pass-phrase",
            "password2": "a-very-long-pass-phrase",
        },
    )
    assert response.status_code == 302
    assert response.url == reverse("account_email_verification_sent")
    assert len(mail.outbox) == 1
    assert "newcomer@example.ac.uk" in mail.outbox[0].to
    assert not EmailAddress.objects.get(email="newcomer@example.ac.uk").verified

    client.logout()
    login = client.post(
        reverse("account_login"), {"login": "newcomer@example.ac.uk", "password": "a-very-long-pass-phrase"}
    )
    assert login.wsgi_request.user.is_anonymous
    assert login.url == reverse("account_email_verification_sent")


def test_sign_up_rejects_a_short_password_with_a_clear_error(client):
    response = client.post(
        reverse("account_signup"),
        {"email": "short@example.ac.uk", "password1": "short", "password2": "short"},
    )
    assert response.status_code == 200
    assert "too short" in response.content.decode()
    assert not User.objects.filter(email="short@example.ac.uk").exists()


@override_settings(ACCOUNT_RATE_LIMITS={"login_failed": "3/5m/key"})
def test_failed_sign_ins_are_rate_limited_even_with_the_right_password_afterwards(client):
    user = UserFactory()
    for _ in range(3):
        response = client.post(reverse("account_login"), {"login": user.email, "password": "wrong password"})
        assert response.status_code == 200
    blocked = client.post(reverse("account_login"), {"login": user.email, "password": DEMO_PASSWORD})
    assert blocked.wsgi_request.user.is_anonymous
    assert "Too many failed login attempts" in blocked.content.decode()


@override_settings(
    SOCIALACCOUNT_PROVIDERS={
        "openid_connect": {
            "APPS": [
                {
                    "provider_id": "myaccessid",
                    "name": "MyAccessID",
                    "client_id": "portal",
                    "secret": "secret",
                    "settings": {"server_url": "https://proxy.myaccessid.example/.well-known/openid-configuration"},
                }
            ]
        }
    }
)
def test_an_openid_connect_provider_from_settings_is_offered_on_the_sign_in_page(client):
    response = client.get(reverse("account_login"))
    page = response.content.decode()
    assert "MyAccessID" in page
    assert "/accounts/oidc/myaccessid/login/" in page


def test_the_sign_in_page_offers_no_institutional_login_when_none_is_configured(client):
    assert "/accounts/oidc/" not in client.get(reverse("account_login")).content.decode()


def test_account_pages_use_sentence_case_as_govuk_writes(client):
    page = client.get(reverse("account_login")).content.decode()
    assert "Sign in</h1>" in page or ">Sign in<" in page
    assert "Sign In" not in page
    assert "Remember me" in page


def test_a_forgotten_password_is_reset_through_the_emailed_link(client):
    user = UserFactory()
    client.post(reverse("account_reset_password"), {"email": user.email})
    assert len(mail.outbox) == 1
    link = re.search(r"http://testserver(/accounts/password/reset/key/\S+/)", mail.outbox[0].body).group(1)
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200
    client.post(
        form_page.redirect_chain[-1][0] if form_page.redirect_chain else link,
        {"password1": "a-brand-new-pass-phrase", "password2": "a-brand-new-pass-phrase"},
    )
    user.refresh_from_db()
    assert user.check_password("a-brand-new-pass-phrase")


def test_changing_email_sends_a_verification_to_the_new_address(client):
    user = UserFactory()
    client.post(reverse("account_login"), {"login": user.email, "password": DEMO_PASSWORD})
    response = client.post(reverse("account_email"), {"action_add": "", "email": "new.address@example.ac.uk"})
    assert response.status_code in (200, 302)
    assert EmailAddress.objects.filter(user=user, email="new.address@example.ac.uk", verified=False).exists()
    assert any("new.address@example.ac.uk" in message.to for message in mail.outbox)


def test_the_two_factor_step_of_sign_in_reads_as_govuk_writes(client):
    user = UserFactory()
    give_mfa(user)
    response = client.post(reverse("account_login"), {"login": user.email, "password": DEMO_PASSWORD}, follow=True)
    page = response.content.decode()
    assert response.request["PATH_INFO"] == reverse("mfa_authenticate")
    assert "Two-factor authentication" in page and "Two-Factor" not in page
    assert "Enter the 6-digit code from your authenticator app." in page and "Please" not in page
