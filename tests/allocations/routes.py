"""Expected statuses for the fund pool pages and API. A director reaches their programmes' pools only."""

from django.urls import reverse

from allocations import ledger
from tests.factories import FundPoolFactory, ProgrammeFactory
from tests.programmes.routes import CREATED, admin_only, director_or_admin
from tests.routes import FORBIDDEN, NOT_FOUND, OK, REDIRECT, UNAUTHORISED, Route, signed_in

HOUR = 3600


def _api(ok: int, hidden: int = NOT_FOUND, director: int | None = None) -> dict[str, int]:
    return {
        "anonymous": UNAUTHORISED,
        "applicant": hidden,
        "reviewer": hidden,
        "assessor": hidden,
        "director": ok if director is None else director,
        "admin": ok,
    }


def routes(world):
    pool = FundPoolFactory(programme=world.programme, system=world.system, name="Routes pool")
    sibling = FundPoolFactory(programme=world.programme, system=world.system, name="Routes sibling")
    ledger.deposit_to_pool(
        pool=pool, seconds=10 * HOUR, actor=None, reason="Budget", idempotency_key=f"routes-deposit-{pool.pk}"
    )
    elsewhere = FundPoolFactory(programme=ProgrammeFactory(), system=world.system, name="Someone else's")
    movement = {"hours": "1", "reason": "Routes", "idempotency_key": f"routes-{pool.pk}"}
    page_movement = {**movement, "idempotency_key": f"routes-page-{pool.pk}"}

    def url(name, target=pool):
        return reverse(name, args=[target.pk])

    return [
        Route("allocations:pool-list", reverse("allocations:pool-list"), director_or_admin()),
        Route("allocations:pool-detail", url("allocations:pool-detail"), director_or_admin()),
        Route(
            "allocations:pool-detail",
            url("allocations:pool-detail", elsewhere),
            {**director_or_admin(), "director": NOT_FOUND},
        ),
        Route("allocations:pool-deposit", url("allocations:pool-deposit"), admin_only()),
        Route(
            "allocations:pool-deposit",
            url("allocations:pool-deposit"),
            admin_only(REDIRECT),
            method="post",
            data=page_movement,
        ),
        Route("allocations:pool-withdraw", url("allocations:pool-withdraw"), admin_only()),
        Route(
            "allocations:pool-withdraw",
            url("allocations:pool-withdraw"),
            admin_only(REDIRECT),
            method="post",
            data={**page_movement, "idempotency_key": "routes-page-withdraw"},
        ),
        Route("allocations:pool-transfer", url("allocations:pool-transfer"), admin_only()),
        Route(
            "allocations:pool-transfer",
            url("allocations:pool-transfer"),
            admin_only(REDIRECT),
            method="post",
            data={**page_movement, "idempotency_key": "routes-page-transfer", "destination": sibling.pk},
        ),
        # The API: pools a user may not see do not exist for them.
        Route("fund-pool-list", reverse("fund-pool-list"), signed_in(OK, anonymous=UNAUTHORISED), api=True),
        Route("fund-pool-detail", url("fund-pool-detail"), _api(OK), api=True),
        Route("fund-pool-detail", url("fund-pool-detail", elsewhere), _api(OK, director=NOT_FOUND), api=True),
        Route("fund-pool-statement", url("fund-pool-statement"), _api(OK), api=True),
        Route(
            "fund-pool-statement",
            url("fund-pool-statement", elsewhere),
            _api(OK, director=NOT_FOUND),
            api=True,
        ),
        Route(
            "fund-pool-deposit",
            url("fund-pool-deposit"),
            _api(CREATED, FORBIDDEN, FORBIDDEN),
            method="post",
            data=movement,
            api=True,
        ),
        Route(
            "fund-pool-withdraw",
            url("fund-pool-withdraw"),
            _api(CREATED, FORBIDDEN, FORBIDDEN),
            method="post",
            data={**movement, "idempotency_key": "routes-withdraw"},
            api=True,
        ),
        Route(
            "fund-pool-transfer",
            url("fund-pool-transfer"),
            _api(CREATED, FORBIDDEN, FORBIDDEN),
            method="post",
            data={**movement, "idempotency_key": "routes-transfer", "destination": sibling.pk},
            api=True,
        ),
    ]
