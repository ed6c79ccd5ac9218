"""The service navigation: one list of destinations, each shown only to the roles that may use it.

Later apps add their destinations here, so that the header and the permission tests read one list.
"""

from collections.abc import Callable
from dataclasses import dataclass

from django.urls import NoReverseMatch, reverse

from . import roles


@dataclass(frozen=True)
class Destination:
    label: str
    url_name: str
    shown_to: Callable


def _everyone(user) -> bool:
    return True


def _director_or_admin(user) -> bool:
    return roles.is_admin(user) or roles.is_programme_director(user)


DESTINATIONS = [
    Destination("Home", "home", _everyone),
    Destination("Programmes", "programmes:programme-list", _director_or_admin),
    Destination("Fund pools", "allocations:pool-list", _director_or_admin),
    Destination("Admin site", "admin:index", roles.is_admin),
]


# Calls and proposals.
def _directs_or_assesses(user) -> bool:
    return _director_or_admin(user) or roles.is_technical_assessor(user)


DESTINATIONS[1:1] = [
    Destination("Calls", "proposals:call-list", _everyone),
    Destination("Your proposals", "proposals:proposal-list", _signed_in),
    Destination("Proposal queue", "proposals:proposal-queue", _directs_or_assesses),
]


def navigation_for(request) -> list[dict]:
    user = request.user
    items = []
    for destination in DESTINATIONS:
        if not destination.shown_to(user):
            continue
        try:
            url = reverse(destination.url_name)
        except NoReverseMatch:
            continue
        active = request.path == url if url == "/" else request.path.startswith(url)
        items.append({"label": destination.label, "url": url, "active": active})
    return items
