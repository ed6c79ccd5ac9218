"""Expected statuses for the allocations app's pages and API: fund pools, usage, dashboards, the register, reports.

A director reaches their programmes' pools only.
"""

from django.urls import reverse

from allocations import ledger
from tests.factories import FundPoolFactory, ProgrammeFactory
from tests.programmes.routes import CREATED, admin_only, director_or_admin
from tests.routes import FORBIDDEN, NOT_FOUND, OK, REDIRECT, UNAUTHORISED, Route, everyone, signed_in

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


def fund_pool_routes(world):
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


# Usage: the cluster's endpoints and the operators' pages (allocations/usage) --------------------------------


def usage_routes(world):
    from allocations.usage.ingest import receive_payload

    slug = world.system.slug
    batch = receive_payload(system=world.system, payload=b"JobID|State\n", source="api").batch
    limits_expected = {**_api(OK, FORBIDDEN, FORBIDDEN)}
    # The cluster's endpoints accept only an ingest token (tested in test_usage_api.py); a browser session is
    # no credential there, so every persona is unauthenticated to them.
    return [
        Route(
            "usage-ingest",
            reverse("usage-ingest", args=[slug]),
            everyone(UNAUTHORISED),
            method="post",
            api=True,
        ),
        Route(
            "usage-report",
            reverse("usage-report", args=[slug]),
            everyone(UNAUTHORISED),
            method="post",
            api=True,
        ),
        Route("system-limits", reverse("system-limits", args=[slug]), limits_expected, api=True),
        # What came of a posted batch: the system's token (test_usage_api.py) or an admin, like the limits.
        Route("usage-batch", reverse("usage-batch", args=[slug, batch.pk]), limits_expected, api=True),
    ]


def _operators(status: int = OK, assessor: int | None = None) -> dict[str, int]:
    return {
        **admin_only(status),
        "assessor": status if assessor is None else assessor,
        "anonymous": REDIRECT,
    }


def usage_page_routes(world):
    from allocations.models import RejectedRow
    from allocations.usage.ingest import receive_payload
    from allocations.usage.services import create_ingest_token
    from tests.factories import AllocationFactory, SystemFactory, UserFactory

    token, _ = create_ingest_token(system=world.system, name="Routes token", actor=None)
    header = b"JobID|JobIDRaw|Cluster|Account|User|State|Submit|Start|End|ElapsedRaw|AllocTRES\n"
    batch = receive_payload(system=world.system, payload=header + b"x\n", source="api").batch
    RejectedRow.objects.create(batch=batch, line_number=2, raw="x", reason="Routes")
    pool = FundPoolFactory(programme=world.programme, system=world.system, name="Usage routes pool")
    applicant = world.users["applicant"]
    allocation = AllocationFactory(pool=pool, holder=applicant, scheduler_account="airr-routes")
    revoke = reverse("usage:token-revoke", args=[token.pk])
    usage_page = reverse("usage:allocation-usage", args=[allocation.pk])
    members_page = reverse("usage:allocation-members", args=[allocation.pk])
    mine_or_managed = {
        "anonymous": REDIRECT,
        "applicant": OK,
        "reviewer": NOT_FOUND,
        "assessor": NOT_FOUND,
        "director": OK,
        "admin": OK,
    }
    # Another system's batch and token: its own staff's, not the world's assessor's. Another programme's allocation
    # held by someone else: not the world's applicant's, nor its director's.
    dawn = SystemFactory(slug="routes-dawn", name="Routes Dawn")
    dawn_token, _ = create_ingest_token(system=dawn, name="Dawn routes token", actor=None)
    dawn_batch = receive_payload(system=dawn, payload=header + b"y\n", source="api").batch
    RejectedRow.objects.create(batch=dawn_batch, line_number=2, raw="y", reason="Routes")
    dawns = _operators(assessor=NOT_FOUND)
    elsewhere = AllocationFactory(
        pool=FundPoolFactory(programme=ProgrammeFactory(), system=world.system, name="Usage routes elsewhere"),
        holder=UserFactory(),
        scheduler_account="airr-elsewhere",
    )
    not_theirs = {**mine_or_managed, "applicant": NOT_FOUND, "director": NOT_FOUND}
    return [
        Route("usage:token-list", reverse("usage:token-list"), _operators()),
        Route("usage:token-create", reverse("usage:token-create"), _operators()),
        Route(
            "usage:token-create",
            reverse("usage:token-create"),
            _operators(),
            method="post",
            data={"system": world.system.pk, "name": "Made in the matrix"},
        ),
        Route("usage:token-revoke", revoke, _operators()),  # asks to confirm
        Route("usage:token-revoke", revoke, _operators(REDIRECT), "post"),
        Route("usage:batch-list", reverse("usage:batch-list"), _operators()),
        Route("usage:batch-list", reverse("usage:batch-list") + "?attention=yes", _operators()),
        Route("usage:batch-detail", reverse("usage:batch-detail", args=[batch.pk]), _operators()),
        Route(
            "usage:batch-replay",
            reverse("usage:batch-replay", args=[batch.pk]),
            _operators(REDIRECT),
            "post",
        ),
        Route("usage:batch-read", reverse("usage:batch-read", args=[batch.pk]), _operators(REDIRECT), "post"),
        # Refused, with or without a note (the batch is still being read), with a message on its page.
        Route(
            "usage:batch-dealt-with",
            reverse("usage:batch-dealt-with", args=[batch.pk]),
            _operators(REDIRECT),
            "post",
            data={"note": "Window re-sent"},
        ),
        Route(
            "usage:batch-dealt-with",
            reverse("usage:batch-dealt-with", args=[batch.pk]),
            _operators(REDIRECT),
            "post",
            data={"note": " "},
        ),
        Route("usage:upload", reverse("usage:upload"), _operators()),
        Route("usage:unmatched", reverse("usage:unmatched"), _operators()),
        Route("usage:variance", reverse("usage:variance"), _operators()),
        Route(
            "usage:unmatched-assign",
            reverse("usage:unmatched-assign", args=[world.system.slug]),
            admin_only(REDIRECT),
            "post",
            data={"account": "nobody", "allocation": allocation.scheduler_account},
        ),
        Route("usage:allocation-list", reverse("usage:allocation-list"), signed_in(OK)),
        Route("usage:allocation-usage", usage_page, mine_or_managed),
        # Recording the team's scheduler usernames: the holder and admins; the programme's directors may see the
        # allocation, not change whose jobs are whose.
        Route("usage:allocation-members", members_page, {**mine_or_managed, "director": FORBIDDEN}),
        Route(
            "usage:allocation-members",
            members_page,
            {**mine_or_managed, "applicant": REDIRECT, "director": FORBIDDEN, "admin": REDIRECT},
            method="post",
            data={},
        ),
        Route(
            "usage:allocation-statement",
            reverse("usage:allocation-statement", args=[allocation.pk]),
            mine_or_managed,
        ),
        Route(
            "api-allocation-usage",
            reverse("api-allocation-usage", args=[allocation.pk]),
            {**mine_or_managed, "anonymous": UNAUTHORISED},
            api=True,
        ),
        Route("usage:token-revoke", reverse("usage:token-revoke", args=[dawn_token.pk]), dawns),
        Route("usage:batch-detail", reverse("usage:batch-detail", args=[dawn_batch.pk]), dawns),
        Route(
            "usage:batch-replay",
            reverse("usage:batch-replay", args=[dawn_batch.pk]),
            _operators(REDIRECT, assessor=NOT_FOUND),
            "post",
        ),
        Route(
            "usage:batch-read",
            reverse("usage:batch-read", args=[dawn_batch.pk]),
            _operators(REDIRECT, assessor=NOT_FOUND),
            "post",
        ),
        Route(
            "usage:batch-dealt-with",
            reverse("usage:batch-dealt-with", args=[dawn_batch.pk]),
            _operators(REDIRECT, assessor=NOT_FOUND),
            "post",
            data={"note": "Window re-sent"},
        ),
        Route("usage:allocation-usage", reverse("usage:allocation-usage", args=[elsewhere.pk]), not_theirs),
        Route("usage:allocation-statement", reverse("usage:allocation-statement", args=[elsewhere.pk]), not_theirs),
        Route(
            "api-allocation-usage",
            reverse("api-allocation-usage", args=[elsewhere.pk]),
            {**not_theirs, "anonymous": UNAUTHORISED},
            api=True,
        ),
    ]


def dashboard_routes(world):
    """The programme dashboard: its directors and admins; a director of another programme finds nothing."""
    pool = FundPoolFactory(programme=world.programme, system=world.system, name="Dashboard pool")
    ledger.deposit_to_pool(
        pool=pool, seconds=10 * HOUR, actor=None, reason="Budget", idempotency_key=f"dashboard-{pool.pk}"
    )
    elsewhere = ProgrammeFactory()
    return [
        Route(
            "programme-dashboard",
            reverse("programme-dashboard", args=[world.programme.pk]),
            director_or_admin(),
        ),
        Route(
            "programme-dashboard",
            reverse("programme-dashboard", args=[elsewhere.pk]),
            {**director_or_admin(), "director": NOT_FOUND},
        ),
        Route(
            "api-programme-dashboard",
            reverse("api-programme-dashboard", args=[world.programme.pk]),
            _api(OK),
            api=True,
        ),
        Route(
            "api-programme-dashboard",
            reverse("api-programme-dashboard", args=[elsewhere.pk]),
            _api(OK, director=NOT_FOUND),
            api=True,
        ),
    ]


# Reports (allocations/reports): admins and directors build them; an export is its requester's (and admins').


def report_routes(world):
    from datetime import timedelta
    from pathlib import Path

    from django.conf import settings
    from django.utils import timezone

    from allocations.models import ReportExport

    def made_by(user):
        now = timezone.now()
        export = ReportExport.objects.create(
            requested_by=user,
            groupings=["programme"],
            start_date=now.date(),
            end_date=now.date(),
            as_of=now,
            created_at=now,
            expires_at=now + timedelta(days=1),
            state="done",
            progress=100,
            file_path="reports/routes.csv",
        )
        path = Path(settings.MEDIA_ROOT) / export.file_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("Programme,used_gpu_hours\nTotal,0.00\n")
        return export

    admins, directors = made_by(world.users["admin"]), made_by(world.users["director"])
    today = timezone.localdate()
    form = {
        "kind": "totals",
        "groupings": ["programme", "month"],
        "start_day": "1",
        "start_month": str(today.month),
        "start_year": str(today.year),
        "end_day": str(today.day),
        "end_month": str(today.month),
        "end_year": str(today.year),
        "format": "csv",
    }
    body = {"groupings": ["programme"], "start": str(today), "end": str(today)}
    not_theirs = {**director_or_admin(), "director": NOT_FOUND}
    api_not_theirs = _api(OK, FORBIDDEN, NOT_FOUND)

    def page(name, export):
        return reverse(name, args=[export.pk])

    return [
        Route("reports:builder", reverse("reports:builder"), director_or_admin()),
        Route("reports:builder", reverse("reports:builder"), director_or_admin(REDIRECT), "post", data=form),
        Route("reports:export-detail", page("reports:export-detail", directors), director_or_admin()),
        Route("reports:export-detail", page("reports:export-detail", admins), not_theirs),
        Route("reports:export-download", page("reports:export-download", directors), director_or_admin()),
        Route("reports:export-download", page("reports:export-download", admins), not_theirs),
        Route("report-export-list", reverse("report-export-list"), _api(OK, FORBIDDEN), api=True),
        Route(
            "report-export-list",
            reverse("report-export-list"),
            _api(CREATED, FORBIDDEN),
            method="post",
            data=body,
            api=True,
        ),
        Route("report-export-detail", page("report-export-detail", directors), _api(OK, FORBIDDEN), api=True),
        Route("report-export-detail", page("report-export-detail", admins), api_not_theirs, api=True),
        Route("report-export-download", page("report-export-download", directors), _api(OK, FORBIDDEN), api=True),
        Route("report-export-download", page("report-export-download", admins), api_not_theirs, api=True),
        Route(
            "report-totals",
            reverse("report-totals") + f"?groupings=programme&start={today}&end={today}",
            _api(OK, FORBIDDEN),
            api=True,
        ),
    ]


def register_routes(world):
    """The public register of awards and its open data: everyone, signed in or not, even with odd queries."""
    return [
        Route("register:award-list", reverse("register:award-list"), everyone(OK)),
        Route("register:award-list", reverse("register:award-list") + "?page=999999999&year=x", everyone(OK)),
        Route("register:awards-csv", reverse("register:awards-csv"), everyone(OK)),
        Route("register:awards-json", reverse("register:awards-json"), everyone(OK)),
    ]


def routes(world):
    return [
        *fund_pool_routes(world),
        *usage_routes(world),
        *usage_page_routes(world),
        *dashboard_routes(world),
        *register_routes(world),
        *report_routes(world),
    ]
