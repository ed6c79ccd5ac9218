"""Expected statuses for the project's own URLs."""

from django.urls import reverse

from tests.routes import FORBIDDEN, OK, REDIRECT, ROLES, Route, everyone, signed_in


def routes(world):
    return [
        Route("home", reverse("home"), everyone(OK)),
        Route("accessibility", reverse("accessibility"), everyone(OK)),
        Route("privacy", reverse("privacy"), everyone(OK)),
        Route("healthz", reverse("healthz"), everyone(OK)),
        Route("api-schema", reverse("api-schema"), signed_in(OK, anonymous=FORBIDDEN), api=True),
        Route("api-docs", reverse("api-docs"), signed_in(OK, anonymous=FORBIDDEN)),
        Route("api-me", reverse("api-me"), signed_in(OK, anonymous=FORBIDDEN), api=True),
        Route(
            "admin:index",
            reverse("admin:index"),
            {**dict.fromkeys(ROLES, REDIRECT), "admin": OK},
        ),
    ]
