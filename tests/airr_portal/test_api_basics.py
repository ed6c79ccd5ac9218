"""The API's shared behaviour: token auth for scripts, one error format for every 4xx, a schema and docs."""

import hashlib
import os
import re
import subprocess
import sys

import pytest
from django.urls import reverse

from airr_portal.models import ApiToken
from airr_portal.services import replace_api_token

pytestmark = pytest.mark.django_db


def test_a_script_authenticates_with_a_token(client, alice):
    key = replace_api_token(user=alice)
    response = client.get(reverse("api-me"), HTTP_AUTHORIZATION=f"Token {key}")
    assert response.status_code == 200
    assert response.json()["email"] == alice.email


def test_a_wrong_token_gets_401_in_the_standard_format(client):
    response = client.get(reverse("api-me"), HTTP_AUTHORIZATION="Token not-a-real-token")
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"status", "code", "detail", "errors"}
    assert body["status"] == 401
    assert body["code"] == "authentication_failed"


def test_an_anonymous_call_gets_a_structured_refusal(client):
    body = client.get(reverse("api-me")).json()
    assert body["code"] == "not_authenticated"


def test_an_unknown_api_address_answers_json_404(client):
    response = client.get("/api/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_an_unknown_page_answers_the_govuk_404_page(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert "Page not found" in response.content.decode()


def test_an_unknown_object_id_answers_404_in_the_standard_format(client, alice):
    client.force_login(alice)
    response = client.get("/api/programmes/no-such-programme/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_validation_error_lists_its_fields():
    from rest_framework import exceptions

    from airr_portal.api import error_handler

    response = error_handler(exceptions.ValidationError({"amount": ["Enter a positive number."]}), {})
    assert response.status_code == 400
    assert response.data == {
        "status": 400,
        "code": "invalid",
        "detail": "The request has errors: see `errors`.",
        "errors": {"amount": ["Enter a positive number."]},
    }


def test_the_schema_describes_the_api_and_the_docs_load_without_a_cdn(client, alice):
    client.force_login(alice)
    schema = client.get(reverse("api-schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/me/" in schema.content.decode()
    docs = client.get(reverse("api-docs")).content.decode()
    assert "swagger-ui" in docs
    assert "cdn" not in docs.lower()
    assert "http://" not in docs and "https://" not in docs


def test_the_docs_page_needs_nothing_the_content_security_policy_refuses(client, alice):
    client.force_login(alice)
    response = client.get(reverse("api-docs"))
    docs = response.content.decode()
    assert "style-src 'self'" in response["Content-Security-Policy"]
    assert "<style" not in docs and "style=" not in docs
    assert "portal/api-docs.css" in docs
    assert "<script>" not in docs  # every script is a file: the split view serves its initialiser separately


def test_systems_are_public_and_programmes_are_only_for_those_who_manage_them(client, system, programme, alice):
    assert client.get("/api/systems/").json()["results"][0]["slug"] == "isambard-ai"
    client.force_login(alice)
    assert client.get("/api/programmes/").json()["results"] == []


def _shown_key(response) -> str:
    return re.search(r"airr_api_[A-Za-z0-9_-]+", response.content.decode()).group(0)


def test_the_token_page_makes_a_token_shows_it_once_and_replacing_it_revokes_the_old(client, alice):
    client.force_login(alice)
    assert "You have no token yet" in client.get(reverse("api-token")).content.decode()
    first_key = _shown_key(client.post(reverse("api-token")))
    assert first_key not in client.get(reverse("api-token")).content.decode()

    second_key = _shown_key(client.post(reverse("api-token")))
    assert second_key != first_key
    client.logout()
    assert client.get(reverse("api-me"), HTTP_AUTHORIZATION=f"Token {first_key}").status_code == 401
    assert client.get(reverse("api-me"), HTTP_AUTHORIZATION=f"Token {second_key}").json()["email"] == alice.email
    assert client.get(reverse("api-me"), HTTP_AUTHORIZATION=f"Bearer {second_key}").status_code == 200


def test_the_token_page_says_which_token_you_have_and_when_it_was_last_used(client, alice):
    key = replace_api_token(user=alice)
    token = ApiToken.objects.get(user=alice)
    client.force_login(alice)
    before = client.get(reverse("api-token")).content.decode()

    client.get(reverse("api-me"), HTTP_AUTHORIZATION=f"Token {key}")
    after = client.get(reverse("api-token")).content.decode()

    today = f"{token.created_at:%-d %B %Y}"
    assert f"beginning <code>{token.prefix}</code>, made on {today}." in before
    assert "last used" not in before
    assert f"last used on {today}" in after


def test_the_authorization_scheme_is_read_whatever_its_case(client, alice):
    key = replace_api_token(user=alice)
    assert client.get(reverse("api-me"), HTTP_AUTHORIZATION=f"token {key}").status_code == 200
    assert client.get(reverse("api-me"), HTTP_AUTHORIZATION=f"BEARER {key}").status_code == 200


def test_an_api_token_is_stored_only_as_a_fingerprint(alice):
    key = replace_api_token(user=alice)
    stored = ApiToken.objects.get(user=alice)
    assert key not in (stored.key_hash, stored.prefix)
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(stored.prefix)


def test_a_deactivated_users_token_no_longer_works(client, alice):
    key = replace_api_token(user=alice)
    alice.is_active = False
    alice.save()
    assert client.get(reverse("api-me"), HTTP_AUTHORIZATION=f"Token {key}").status_code == 401


def test_the_openapi_schema_generates_without_a_single_warning(tmp_path):
    from django.core.management import call_command

    schema = tmp_path / "schema.yml"
    call_command("spectacular", "--fail-on-warn", "--file", str(schema))
    text = schema.read_text()
    assert "/api/systems/{slug}/usage/" in text
    assert "ingestToken" in text


@pytest.mark.parametrize(
    "module", ["airr_portal.api", "airr_portal.api_defaults", "allocations.api", "programmes.proposal_api"]
)
def test_an_api_module_imports_first_in_a_fresh_process(module):
    """The framework reads its defaults from our modules while its views load; none may need those views itself.

    Which module a process imports first depends on what it runs (a management command, a worker, gunicorn), so
    each is imported first in a process of its own.
    """
    code = f"import django; django.setup(); import {module}"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "airr_portal.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
