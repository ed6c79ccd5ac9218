"""Sign up, verify the address from the mail outbox, sign in, and enrol a director in two-factor authentication."""

import re
import time

import pytest
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from django.core import mail

from airr_portal import roles
from airr_portal.models import User
from tests.browser.conftest import check_accessibility, visit
from tests.factories import DEMO_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _current_totp(secret: str) -> str:
    """The code of the current 30-second period, taken with at least 5 seconds of it left, so that a slow page
    does not send it after the period has turned (the server would refuse it)."""
    if time.time() % 30 > 25:
        time.sleep(30 - time.time() % 30)
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def test_a_newcomer_signs_up_verifies_their_email_and_signs_in(page, live_server):
    visit(page, "/")
    page.get_by_role("button", name="Create an account").click()
    check_accessibility(page)

    # A mistake first: the error summary lists it and the page stays accessible.
    page.get_by_label("Email").fill("newcomer@example.ac.uk")
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_label(re.compile("Password \\(again\\)|Confirm password")).fill("short")
    page.get_by_role("button", name="Sign up").click()
    summary = page.locator(".govuk-error-summary")
    assert summary.is_visible()
    assert "too short" in summary.inner_text()
    check_accessibility(page)

    page.get_by_label("Password", exact=True).fill("a-long-enough-pass-phrase")
    page.get_by_label(re.compile("Password \\(again\\)|Confirm password")).fill("a-long-enough-pass-phrase")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url("**/accounts/confirm-email/")
    check_accessibility(page)

    assert len(mail.outbox) == 1
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+/", mail.outbox[0].body).group(0)
    page.goto(link.replace("http://testserver", live_server.url))
    check_accessibility(page)
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url(f"{live_server.url}/")
    check_accessibility(page)
    assert "newcomer@example.ac.uk" in page.content()

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{live_server.url}/")
    assert page.get_by_role("link", name="Sign in").first.is_visible()
    visit(page, "/accounts/login/")
    page.get_by_label("Email").fill("newcomer@example.ac.uk")
    page.get_by_label("Password").fill("a-long-enough-pass-phrase")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    assert "You are signed in as newcomer@example.ac.uk" in page.content()


def test_a_director_must_enrol_in_two_factor_authentication_before_anything_else(page, live_server, programme):
    director = UserFactory(email="director@example.ac.uk")
    programme.directors.add(director)

    visit(page, "/accounts/login/")
    page.get_by_label("Email").fill(director.email)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    # Sent to set up MFA; allauth first asks for the password again.
    page.wait_for_url("**/accounts/reauthenticate/**")
    check_accessibility(page)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_url("**/accounts/2fa/totp/activate/")
    check_accessibility(page)

    secret = page.locator("#authenticator_secret").input_value().strip()
    page.get_by_label(re.compile("Authenticator code|Code")).fill(_current_totp(secret))
    page.get_by_role("button", name=re.compile("Activate")).click()
    page.wait_for_url(lambda url: "/2fa/totp/activate/" not in url)
    check_accessibility(page)
    assert roles.has_mfa(User.objects.get(pk=director.pk))

    # Now the director reaches the pages of their role.
    visit(page, "/programmes/")
    assert programme.name in page.content()
