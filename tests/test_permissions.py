"""Every URL the project defines, requested as anonymous and as each role, answers the expected status."""

import importlib
import pkgutil
import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

import tests
from tests.routes import ROLES, World

# URLs that third-party packages define and test themselves; the project's permission rules are not in them.
THIRD_PARTY_NAMESPACES = ("admin",)
THIRD_PARTY_MODULES = ("allauth", "django.contrib", "rest_framework", "drf_spectacular")


def _route_modules():
    for info in pkgutil.iter_modules(tests.__path__):
        if info.ispkg:
            try:
                yield importlib.import_module(f"tests.{info.name}.routes")
            except ModuleNotFoundError:
                continue


def _project_url_names(resolver=None, namespace=""):
    """The names of every URL pattern the project's own modules define."""
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            module = getattr(pattern.urlconf_module, "__name__", "")
            if module.startswith(THIRD_PARTY_MODULES) or (pattern.namespace in THIRD_PARTY_NAMESPACES):
                continue
            yield from _project_url_names(pattern, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            callback_module = getattr(pattern.callback, "__module__", "")
            if callback_module.startswith(THIRD_PARTY_MODULES) and not callback_module.startswith("drf_spectacular"):
                continue
            yield f"{namespace}{pattern.name}"


@pytest.fixture
def world(make_persona, system, programme):
    return World(users={role: make_persona(role) for role in ROLES}, system=system, programme=programme)


def _request(client, route):
    method = getattr(client, route.method)
    if route.api:
        return method(route.url, data=route.data, content_type="application/json", HTTP_ACCEPT="application/json")
    return method(route.url, data=route.data)


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_the_expected_status_from_every_url(client, world, role):
    mismatches = []
    user = world.users[role]
    for module in _route_modules():
        for route in module.routes(world):
            client.logout()
            if user is not None:
                client.force_login(user)
            response = _request(client, route)
            if response.status_code != route.expected[role]:
                mismatches.append(
                    f"{route.method.upper()} {route.url} ({route.name}): "
                    f"expected {route.expected[role]}, got {response.status_code}"
                )
            elif _has_markup_in_its_title(response):
                mismatches.append(f"{route.method.upper()} {route.url} ({route.name}): markup inside <title>")
    assert not mismatches, "\n".join(mismatches)


def _has_markup_in_its_title(response) -> bool:
    """A page whose title block swallowed some of its body: screen readers announce the title first."""
    if "text/html" not in response.get("Content-Type", "") or response.streaming:
        return False
    title = re.search(r"<title>(.*?)</title>", response.content.decode(errors="replace"), re.S)
    return title is not None and "<" in title.group(1)


@pytest.mark.django_db
def test_every_url_the_project_defines_is_in_the_permission_matrix(world):
    listed = {route.name for module in _route_modules() for route in module.routes(world)}
    defined = set(_project_url_names())
    unlisted = sorted(defined - listed)
    assert not unlisted, f"URLs with no expected statuses in any tests/*/routes.py: {unlisted}"
