"""The service navigation: one list of destinations, each shown only to the roles that may use it.

Each app's destinations are listed here, so that the header and its tests read one list.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.urls import reverse

from . import roles


@dataclass(frozen=True)
class Destination:
    label: str
    url_name: str
    shown_to: Callable


def _everyone(user) -> bool:
    return True


def _signed_in(user) -> bool:
    return user.is_authenticated


# The service name in the header already links home, so "Home" is not repeated here.
DESTINATIONS = [
    Destination("Calls", "proposals:call-list", _everyone),
    Destination("Your proposals", "proposals:proposal-list", _signed_in),
    Destination("Proposal queue", "proposals:proposal-queue", roles.works_on_proposals),
    Destination("Allocations", "usage:allocation-list", _signed_in),
    Destination("Programmes", "programmes:programme-list", roles.manages_programmes),
    Destination("Fund pools", "allocations:pool-list", roles.manages_programmes),
    Destination("Usage", "usage:batch-list", roles.operates_usage),
    Destination("Reports", "reports:builder", roles.manages_programmes),
    Destination("Admin site", "admin:index", roles.is_admin),
]


def navigation_for(request) -> list[dict]:
    user = request.user
    items = []
    for destination in DESTINATIONS:
        if not destination.shown_to(user):
            continue
        url = reverse(destination.url_name)
        active = request.path == url if url == "/" else request.path.startswith(url)
        items.append({"label": destination.label, "url": url, "active": active})
    return items
