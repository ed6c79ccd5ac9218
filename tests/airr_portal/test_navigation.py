"""The service navigation shows each role the destinations it may use, and no others."""

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def _navigation_labels(client):
    return [item["label"] for item in client.get(reverse("home")).context["service_navigation"]]


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        ("anonymous", ["Calls"]),
        ("applicant", ["Calls", "Your proposals", "Allocations"]),
        ("assessor", ["Calls", "Your proposals", "Proposal queue", "Allocations", "Usage"]),
        (
            "director",
            ["Calls", "Your proposals", "Proposal queue", "Allocations", "Programmes", "Fund pools", "Reports"],
        ),
        (
            "admin",
            [
                "Calls",
                "Your proposals",
                "Proposal queue",
                "Allocations",
                "Programmes",
                "Fund pools",
                "Usage",
                "Reports",
                "Admin site",
            ],
        ),
    ],
)
def test_each_role_sees_only_its_destinations(client, make_persona, role, expected):
    user = make_persona(role)
    if user:
        client.force_login(user)
    assert _navigation_labels(client) == expected


def test_the_header_offers_sign_in_to_visitors_and_the_account_and_sign_out_to_users(client, alice):
    page = client.get(reverse("home")).content.decode()
    assert reverse("account_login") in page and "Sign out" not in page
    client.force_login(alice)
    page = client.get(reverse("home")).content.decode()
    assert alice.email in page and "Sign out" in page
