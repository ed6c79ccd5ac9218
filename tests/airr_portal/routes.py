"""Expected statuses for the project's own URLs."""

from django.urls import reverse

from tests.routes import OK, REDIRECT, ROLES, UNAUTHORISED, Route, everyone, signed_in


def routes(world):
    return [
        Route("home", reverse("home"), everyone(OK)),
        Route("accessibility", reverse("accessibility"), everyone(OK)),
        Route("privacy", reverse("privacy"), everyone(OK)),
        Route("healthz", reverse("healthz"), everyone(OK)),
        Route("api-token", reverse("api-token"), signed_in(OK)),
        # The API's description is public: it holds no data, and scripts need it before they have a token.
        Route("api-schema", reverse("api-schema"), everyone(OK), api=True),
        Route("api-docs", reverse("api-docs"), everyone(OK)),
        Route("api-me", reverse("api-me"), signed_in(OK, anonymous=UNAUTHORISED), api=True),
        Route(
            "admin:index",
            reverse("admin:index"),
            {**dict.fromkeys(ROLES, REDIRECT), "admin": OK},
        ),
    ]
