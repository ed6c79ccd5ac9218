"""Requests that once answered 500: far dates, huge numbers, deep JSON, NUL characters. Each now gets a clear
4xx, a form error or no match, and leaves what was stored alone."""

from datetime import date

import pytest
from django.urls import reverse
from django.utils import timezone

from allocations import ledger
from allocations.models import JobRecord, LedgerTransaction, UsageReport
from allocations.usage.ingest import ingest_sacct, window_instants
from programmes.models import FundPool, Proposal
from tests.allocations.usage_helpers import funded_allocation, payload, post_usage_report, sacct_line
from tests.factories import FundPoolFactory, ProgrammeFactory, UserFactory, make_proposal, web_client
from tests.programmes.conftest import call, director, pool  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db
FAR = {"day": "31", "month": "12", "year": "9999"}


def date_fields(name: str, day: dict) -> dict:
    return {f"{name}_{part}": value for part, value in day.items()}


@pytest.fixture
def admin(make_persona):
    return make_persona("admin")


@pytest.mark.parametrize("field", ["end", "as_of"])
def test_a_statement_to_the_year_9999_is_a_form_error(admin, system, programme, field):
    fund_pool = FundPoolFactory(programme=programme, system=system)
    allocation = funded_allocation(system)

    page = web_client(admin, raise_request_exception=False).get(
        reverse("allocations:pool-detail", args=[fund_pool.pk]), date_fields(field, FAR)
    )
    assert page.status_code == 200 and "Enter a date from 2000 to 2099" in page.content.decode()
    usage = web_client(admin, raise_request_exception=False).get(
        reverse("usage:allocation-usage", args=[allocation.pk]), date_fields(field, FAR)
    )
    assert usage.status_code == 200 and "Enter a date from 2000 to 2099" in usage.content.decode()


@pytest.mark.parametrize("query", ["to=9999-12-31", "as_of=9999-12-31", "from=1066-10-14"])
def test_the_pool_statement_api_refuses_a_date_outside_the_years_it_serves(admin, system, programme, query):
    fund_pool = FundPoolFactory(programme=programme, system=system)
    answer = web_client(admin, raise_request_exception=False).get(
        f"/api/pools/{fund_pool.pk}/statement/?{query}", HTTP_ACCEPT="application/json"
    )
    assert answer.status_code == 400
    assert "Enter a date from 2000 to 2099" in answer.content.decode()


def test_the_end_of_the_last_day_there_is_is_the_end_of_time():
    from allocations.selectors import end_of

    assert end_of(date.max).year == 9999
    assert window_instants(date(2026, 1, 1), date.max, timezone.get_current_timezone())[1].year == 9999


def test_usage_still_ingests_beside_an_allocation_that_ends_on_the_last_day_there_is(system):
    # Stored before dates were checked: every ingest of the system used to fail on its window.
    funded_allocation(system, account="forever")
    from allocations.models import Allocation

    Allocation.objects.filter(scheduler_account="forever").update(end_date=date.max)
    outcome = ingest_sacct(system=system, payload=payload(sacct_line(1, account="forever")), source="command")
    assert outcome.batch.new == 1 and not JobRecord.objects.get().is_outside_window


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
def test_a_deposit_dated_outside_the_years_served_is_refused_on_the_page_and_in_the_api(admin, system, programme, day):
    fund_pool = FundPoolFactory(programme=programme, system=system)
    year, month, day_of_month = day.split("-")
    page = web_client(admin, raise_request_exception=False).post(
        reverse("allocations:pool-deposit", args=[fund_pool.pk]),
        {
            "hours": "10",
            "reason": "Budget",
            **date_fields("effective_date", {"day": day_of_month, "month": month, "year": year}),
        },
    )
    assert page.status_code == 200 and "Enter a date from 2000 to 2099" in page.content.decode()
    api = web_client(admin, raise_request_exception=False).post(
        f"/api/pools/{fund_pool.pk}/deposit/",
        {"hours": "10", "reason": "Budget", "effective_date": day, "idempotency_key": "budget"},
        content_type="application/json",
    )
    assert api.status_code == 400 and "effective_date" in api.json()["errors"]
    assert not LedgerTransaction.objects.exists()


def test_a_pool_valid_until_9999_is_a_form_error(admin, system, programme):
    answer = web_client(admin, raise_request_exception=False).post(
        reverse("programmes:fund-pool-create", args=[programme.slug]),
        {
            "name": "Open ended",
            "system": system.pk,
            **date_fields("valid_from", {"day": "1", "month": "1", "year": "2026"}),
            **date_fields("valid_until", FAR),
            "unused_hours_policy": "return",
            "grace_percent": "5",
        },
    )
    assert answer.status_code == 200 and "Enter a date from 2000 to 2099" in answer.content.decode()
    assert not FundPool.objects.filter(name="Open ended").exists()


def test_a_start_in_the_year_9999_is_refused_on_the_page_and_in_the_api(system, call):  # noqa: F811
    pi = UserFactory()
    proposal = make_proposal(call=call, pi=pi, system=system)
    before = proposal.start_date

    page = web_client(pi, raise_request_exception=False).post(
        reverse("proposals:proposal-timeline", args=[proposal.pk]),
        {**date_fields("start_date", {"day": "1", "month": "12", "year": "9999"}), "duration_months": "2"},
    )
    assert page.status_code == 200 and "2099" in page.content.decode()
    api = web_client(pi, raise_request_exception=False).patch(
        f"/api/proposals/{proposal.pk}/", {"start_date": "9999-12-01"}, content_type="application/json"
    )
    assert api.status_code == 400 and "start_date" in api.json()["errors"]
    proposal.refresh_from_db()
    assert proposal.start_date == before


def test_the_decision_page_opens_for_a_proposal_starting_in_the_last_year_allowed(system, call, director):  # noqa: F811
    proposal = make_proposal(call=call, pi=UserFactory(), system=system)
    Proposal.objects.filter(pk=proposal.pk).update(
        state="in_review", submitted_at=timezone.now(), start_date=date(2099, 12, 1), duration_months=12
    )
    assert (
        web_client(director, raise_request_exception=False)
        .get(reverse("proposals:proposal-decide", args=[proposal.pk]))
        .status_code
        == 200
    )


@pytest.mark.parametrize("url", ["/api/systems/", "/api/pools/"])
def test_a_huge_page_size_is_read_as_the_largest_page(admin, system, programme, url):
    FundPoolFactory(programme=programme, system=system)
    answer = web_client(admin, raise_request_exception=False).get(
        f"{url}?limit={10**30}", HTTP_ACCEPT="application/json"
    )
    assert answer.status_code == 200 and len(answer.json()["results"]) == answer.json()["count"] >= 1


def test_a_huge_page_size_on_a_pool_statement_is_read_as_the_largest_page(admin, system, programme):
    fund_pool = FundPoolFactory(programme=programme, system=system)
    ledger.deposit_to_pool(pool=fund_pool, seconds=3600, actor=None, reason="Budget", idempotency_key="budget")
    answer = web_client(admin, raise_request_exception=False).get(
        f"/api/pools/{fund_pool.pk}/statement/?limit={2**63}", HTTP_ACCEPT="application/json"
    )
    assert answer.status_code == 200 and len(answer.json()["movements"]) == 1


def test_json_nested_too_deep_is_a_400(alice):
    answer = web_client(alice, raise_request_exception=False).post(
        "/api/proposals/", b"[" * 5000 + b"]" * 5000, content_type="application/json"
    )
    assert answer.status_code == 400
    assert "nested too deeply" in answer.json()["detail"]


@pytest.mark.parametrize(
    "body, message",
    [
        (b"Account|User|GrpTRESRaw\nairr-00001||gres/gpu=" + str(10**30).encode() + b"\n", "not a real figure"),
        (
            b"Cluster|Account|Login|Proper Name|Used\nisambard-ai|airr-00001|||" + str(10**30).encode() + b"\n",
            "not a real",
        ),
        # Past Python's 4,300 digits int() refuses to read a number at all: still a 400, not a 500.
        (b"Account|User|GrpTRESRaw\nairr-00001||gres/gpu=" + b"9" * 5000 + b"\n", "not a real figure"),
        (b"Cluster|Account|Login|Proper Name|Used\nisambard-ai|airr-00001|||" + b"9" * 5000 + b"\n", "not a real"),
        (b"Account|User|GrpTRESRaw\n" + b"a" * 500 + b"||gres/gpu=5\n", "longer than 64 characters"),
        (b"Account|User|GrpTRESRaw\nab\x00c||gres/gpu=5\n", "NUL character"),
    ],
)
def test_a_usage_report_with_values_no_cluster_has_is_a_400(system, body, message):
    answer = post_usage_report(system, body)
    assert answer.status_code == 400 and message in answer.content.decode()
    assert not UsageReport.objects.exists()


@pytest.mark.parametrize("param", ["call", "system"])
def test_a_nul_character_in_a_queue_filter_is_no_filter(director, call, param):  # noqa: F811
    proposal = make_proposal(call=call, pi=UserFactory(), system=call.pools.first().system, state="submitted")
    answer = web_client(director, raise_request_exception=False).get(
        reverse("proposals:proposal-queue"), {param: "a\x00b"}
    )
    assert answer.status_code == 200 and proposal.title in answer.content.decode()


@pytest.mark.parametrize("url", ["/team/join/a%00b/", "/reviews/invitation/a%00b/"])
def test_an_invitation_link_with_a_nul_character_is_not_found(alice, url):
    assert web_client(alice, raise_request_exception=False).get(url).status_code == 404


@pytest.mark.parametrize("programme_id", [str(10**30), f"-{10**30}", f"+{10**30}", f" {10**30} "])
def test_a_programme_id_no_database_integer_holds_is_a_form_error(admin, programme_id):
    ProgrammeFactory()
    answer = web_client(admin, raise_request_exception=False).post(
        reverse("reports:builder"),
        {
            "kind": "totals",
            "groupings": "programme",
            "programmes": programme_id,
            "format": "csv",
            **date_fields("start", {"day": "1", "month": "1", "year": "2026"}),
            **date_fields("end", {"day": "2", "month": "1", "year": "2026"}),
        },
    )
    assert answer.status_code == 200 and "not one of the available choices" in answer.content.decode()


def test_nothing_stored_is_lost_when_a_request_is_refused(system):
    funded_allocation(system)
    ingest_sacct(system=system, payload=payload(sacct_line(1)), source="command")
    post_usage_report(system, b"Account|User|GrpTRESRaw\nab\x00c||gres/gpu=5\n")
    assert JobRecord.objects.count() == 1
