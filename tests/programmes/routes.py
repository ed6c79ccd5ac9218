"""Expected statuses for the programmes app's pages and API."""

from django.urls import reverse

from tests.programmes.proposal_routes import proposal_routes
from tests.routes import FORBIDDEN, NOT_FOUND, OK, REDIRECT, UNAUTHORISED, Route, everyone, signed_in

CREATED = 201


def director_or_admin(status: int = OK) -> dict[str, int]:
    return {
        "anonymous": REDIRECT,
        "applicant": FORBIDDEN,
        "reviewer": FORBIDDEN,
        "assessor": FORBIDDEN,
        "director": status,
        "admin": status,
    }


def admin_only(status: int = OK) -> dict[str, int]:
    return {**director_or_admin(FORBIDDEN), "admin": status}


def routes(world):
    programme = world.programme
    return _programme_routes(world, programme) + proposal_routes(world)


def _programme_routes(world, programme):
    return [
        Route("programmes:programme-list", reverse("programmes:programme-list"), director_or_admin()),
        Route(
            "programmes:programme-detail",
            reverse("programmes:programme-detail", args=[programme.slug]),
            director_or_admin(),
        ),
        Route(
            "programmes:fund-pool-create",
            reverse("programmes:fund-pool-create", args=[programme.slug]),
            admin_only(),
        ),
        Route(
            "programmes:fund-pool-create",
            reverse("programmes:fund-pool-create", args=[programme.slug]),
            admin_only(REDIRECT),
            method="post",
            data={
                "name": "Open-Source AI Builder Fund 2026",
                "system": world.system.pk,
                "valid_from_day": "1",
                "valid_from_month": "4",
                "valid_from_year": "2026",
                "valid_until_day": "31",
                "valid_until_month": "3",
                "valid_until_year": "2027",
                "unused_hours_policy": "return",
                "grace_percent": "5",
            },
        ),
        Route(
            "programmes:director-invite",
            reverse("programmes:director-invite", args=[programme.slug]),
            admin_only(),
        ),
        Route(
            "programmes:director-invite",
            reverse("programmes:director-invite", args=[programme.slug]),
            admin_only(REDIRECT),
            method="post",
            data={"email": "new.director@example.ac.uk"},
        ),
        # The API.
        Route("system-list", reverse("system-list"), everyone(OK), api=True),
        Route("system-detail", reverse("system-detail", args=[world.system.slug]), everyone(OK), api=True),
        Route("programme-list", reverse("programme-list"), signed_in(OK, anonymous=UNAUTHORISED), api=True),
        Route(
            "programme-detail",
            reverse("programme-detail", args=[programme.slug]),
            {
                "anonymous": UNAUTHORISED,
                "applicant": NOT_FOUND,
                "reviewer": NOT_FOUND,
                "assessor": NOT_FOUND,
                "director": OK,
                "admin": OK,
            },
            api=True,
        ),
    ]
