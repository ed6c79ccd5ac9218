"""The public register of awards: accepted awards only, public fields only, searchable, and the same rows as
open data (CSV and JSON) under the Open Government Licence, every GPU-hour figure equal to the ledger's."""

import csv
import io
import json

import pytest
from django.db.models import Sum
from django.urls import reverse

from allocations import awards, ledger
from allocations.models import LedgerEntry, LedgerTransaction
from allocations.register import LICENCE
from programmes import proposals as services
from programmes.models import Proposal, ResourceRequest
from programmes.proposals import add_months
from tests.factories import HOUR, AllocationFactory, ProgrammeFactory, UserFactory, make_proposal

pytestmark = pytest.mark.django_db
State = Proposal.State
PAGE = reverse("register:award-list")
CSV = reverse("register:awards-csv")
JSON = reverse("register:awards-json")
SECRET = "SECRET-CASE-FOR-SUPPORT-do-not-publish"


def _proposal(call, system, *, title, summary="An open model.", organisation="University of Example", dawn=None):
    pi = UserFactory(organisation=organisation)
    proposal = make_proposal(call=call, pi=pi, system=system, state=State.IN_REVIEW, title=title)
    proposal.summary = summary
    proposal.case_for_support = SECRET
    proposal.data_statement = SECRET
    proposal.save()
    if dawn is not None:
        ResourceRequest.objects.create(
            proposal=proposal, system=dawn, method="M", runs=5, seconds_per_run=100 * HOUR, gpus_per_job=8
        )
    return proposal


def _award(proposal, director, *pools, hours=None):
    end = add_months(proposal.start_date, proposal.duration_months)
    parts = [
        awards.AwardPart(
            pool=pool,
            seconds=hours * HOUR if hours else proposal.resource_requests.get(system=pool.system).seconds,
            start=proposal.start_date,
            end=end,
        )
        for pool in pools
    ]
    return awards.award_proposal(proposal=proposal, parts=parts, rationale="SECRET-RATIONALE", actor=director)


def _accepted(call, system, director, *pools, hours=None, before_award=None, **options):
    proposal = _proposal(call, system, **options)
    if before_award:
        before_award(proposal)
    allocations = _award(proposal, director, *pools, hours=hours)
    awards.accept_award(proposal=proposal, actor=proposal.pi)
    return proposal, allocations


def _csv_rows(response):
    text = b"".join(response.streaming_content).decode()
    lines = text.splitlines()
    comments = [line for line in lines if line.startswith("#")]
    return comments, list(csv.DictReader(io.StringIO("\n".join(line for line in lines if not line.startswith("#")))))


def _json(response):
    return json.loads(b"".join(response.streaming_content))


def _ledger_seconds(allocation) -> int:
    types = (LedgerTransaction.Type.COMMIT, LedgerTransaction.Type.REVOKE)
    return LedgerEntry.objects.filter(account__allocation=allocation, transaction__type__in=types).aggregate(
        total=Sum("amount")
    )["total"]


def test_only_accepted_awards_appear_one_row_per_system(client, call, pool, dawn_pool, system, dawn, director):
    public, _ = _accepted(call, system, director, pool, dawn_pool, title="Public Welsh model", dawn=dawn)
    unanswered = _proposal(call, system, title="Awarded but unanswered")
    _award(unanswered, director, pool)
    declined = _proposal(call, system, title="Declined award")
    _award(declined, director, pool)
    awards.decline_award(proposal=declined, actor=declined.pi)
    rejected = _proposal(call, system, title="Rejected proposal")
    services.reject_proposal(proposal=rejected, actor=director, rationale="No")
    _proposal(call, system, title="Still in review")
    make_proposal(call=call, pi=UserFactory(), system=system, title="A draft")
    AllocationFactory(pool=pool, title="Made by hand")

    page = client.get(PAGE).content.decode()
    _, rows = _csv_rows(client.get(CSV))
    data = _json(client.get(JSON))

    assert "2 awards" in page and "Public Welsh model" in page
    assert [(row["reference"], row["system"]) for row in rows] == [
        (public.reference, "Dawn"),
        (public.reference, "Isambard-AI"),
    ]
    assert [(award["reference"], award["system"]) for award in data["awards"]] == [
        (public.reference, "Dawn"),
        (public.reference, "Isambard-AI"),
    ]
    for hidden in (
        "Awarded but unanswered",
        "Declined award",
        "Rejected proposal",
        "Still in review",
        "A draft",
    ):
        assert hidden not in page
        assert hidden not in json.dumps(data)
    assert "Made by hand" not in page


def test_no_private_field_reaches_the_page_or_the_downloads(client, call, pool, system, director):
    def review(proposal):
        services.assign_reviewer(proposal=proposal, email="secret.reviewer@example.ac.uk", actor=director)

    proposal, _ = _accepted(call, system, director, pool, title="Open weather model", before_award=review)
    for response in (client.get(PAGE), client.get(CSV), client.get(JSON)):
        body = response.content if hasattr(response, "content") else b""
        body = body or b"".join(response.streaming_content)
        text = body.decode()
        assert "Open weather model" in text
        for private in (SECRET, "SECRET-RATIONALE", proposal.pi.email, "secret.reviewer@example.ac.uk"):
            assert private not in text
    assert set(_json(client.get(JSON))["awards"][0]) == {
        "reference",
        "title",
        "summary",
        "lead_organisation",
        "programme",
        "call",
        "system",
        "gpu_hours",
        "gpu_seconds",
        "start_date",
        "end_date",
        "status",
    }


def test_every_figure_in_the_downloads_is_the_ledgers(client, call, pool, dawn_pool, system, dawn, director):
    _, allocations = _accepted(call, system, director, pool, dawn_pool, title="Two systems", dawn=dawn)
    partial = _proposal(call, system, title="Partial")
    [part] = _award(partial, director, pool, hours=250)
    awards.accept_award(proposal=partial, actor=partial.pi)
    expected = {(a.proposal.reference, a.system.name): _ledger_seconds(a) for a in [*allocations, part]}

    _, rows = _csv_rows(client.get(CSV))
    data = _json(client.get(JSON))

    assert {(r["reference"], r["system"]): int(r["gpu_seconds"]) for r in rows} == expected
    assert {(a["reference"], a["system"]): a["gpu_seconds"] for a in data["awards"]} == expected
    assert expected[(partial.reference, "Isambard-AI")] == 250 * HOUR
    assert {a["gpu_hours"] for a in data["awards"] if a["reference"] == partial.reference} == {"250.00"}


def test_a_revoked_award_stays_on_the_register_with_the_hours_it_kept(client, call, pool, system, director):
    proposal, [allocation] = _accepted(call, system, director, pool, title="Revoked later")
    ledger.charge_usage(allocation=allocation, seconds=300 * HOUR, reason="Jobs", idempotency_key="register-use")
    ledger.revoke_allocation(allocation=allocation, actor=director, reason="Ended early", idempotency_key="rv")

    [award] = _json(client.get(JSON))["awards"]
    assert award["status"] == "revoked"
    assert award["gpu_seconds"] == 300 * HOUR == _ledger_seconds(allocation)
    assert "(revoked)" in client.get(PAGE).content.decode()


def test_search_finds_title_summary_organisation_and_reference(client, call, pool, system, director):
    welsh, _ = _accepted(call, system, director, pool, title="Welsh model", organisation="Bangor University")
    _accepted(call, system, director, pool, title="Protein folding", summary="Enzymes at scale.")
    for query, expected in [
        ("welsh", "Welsh model"),
        ("enzymes", "Protein folding"),
        ("bangor", "Welsh model"),
        (welsh.reference, "Welsh model"),
    ]:
        titles = [a["title"] for a in _json(client.get(JSON, {"q": query}))["awards"]]
        assert titles == [expected], query
        assert "1 award<" in client.get(PAGE, {"q": query}).content.decode().replace("1 award</h2>", "1 award<")


def test_a_search_with_no_results_says_so(client, call, pool, system, director):
    _accepted(call, system, director, pool, title="Welsh model")
    page = client.get(PAGE, {"q": "no such thing"}).content.decode()
    assert "0 awards" in page and "No awards match your search" in page


def test_filters_by_programme_system_and_year_apply_to_page_and_downloads(
    client, call, pool, dawn_pool, system, dawn, director
):
    proposal, _ = _accepted(call, system, director, pool, dawn_pool, title="Two systems", dawn=dawn)
    year = proposal.start_date.year
    other_programme = ProgrammeFactory(slug="another-programme")

    def systems(**query):
        return sorted(a["system"] for a in _json(client.get(JSON, query))["awards"])

    assert systems(system="dawn") == ["Dawn"]
    assert systems(programme=call.programme.slug) == ["Dawn", "Isambard-AI"]
    assert systems(programme=other_programme.slug) == []
    assert systems(year=str(year)) == ["Dawn", "Isambard-AI"]
    _, rows = _csv_rows(client.get(CSV, {"system": "isambard-ai"}))
    assert [row["system"] for row in rows] == ["Isambard-AI"]
    page = client.get(PAGE, {"system": "dawn"}).content.decode()
    assert "1 award" in page and f"{CSV}?system=dawn" in page and f"{JSON}?system=dawn" in page


def test_the_licence_is_stated_in_the_page_the_json_and_the_csv(client, call, pool, system, director):
    _accepted(call, system, director, pool, title="Licensed")
    data = _json(client.get(JSON))
    assert data["licence"] == {
        "name": "Open Government Licence v3.0",
        "url": "https://www.nationalarchives.gov.uk/doc/open-government-licence/version/3/",
    }
    assert data["generated_at"]
    response = client.get(CSV)
    assert response["Link"] == f'<{LICENCE["url"]}>; rel="license"'
    comments, rows = _csv_rows(response)
    assert LICENCE["url"] in comments[0] and LICENCE["name"] in comments[0]
    assert rows[0]["title"] == "Licensed"
    assert LICENCE["url"] in client.get(PAGE).content.decode()


def test_a_summary_that_looks_like_a_formula_is_defused_in_the_csv(client, call, pool, system, director):
    _accepted(call, system, director, pool, title="Tricky", summary='=HYPERLINK("http://evil.example")')
    _, [row] = _csv_rows(client.get(CSV))
    assert row["summary"] == '\'=HYPERLINK("http://evil.example")'
    assert _json(client.get(JSON))["awards"][0]["summary"].startswith("=HYPERLINK")


@pytest.mark.parametrize(
    "query, message",
    [
        ({"page": "999999999"}, "There is no page 999999999"),
        ({"page": "-1"}, "There is no page -1"),
        ({"page": "abc"}, "There is no page abc"),
        ({"year": "abc"}, "Select a year from the list"),
        ({"year": "99999999999999999999"}, "Select a year from the list"),
        ({"programme": "99999"}, "Select a programme from the list"),
        ({"system": "nowhere"}, "Select a system from the list"),
        ({"q": "x" * 500}, "Search must be 200 characters or fewer"),
        ({"q": "nul\x00byte"}, "Null characters are not allowed"),
    ],
)
def test_a_hostile_query_string_gets_a_clear_message_never_an_error(
    client, call, pool, system, director, query, message
):
    _accepted(call, system, director, pool, title="Still listed")
    response = client.get(PAGE, query)
    assert response.status_code == 200
    page = response.content.decode()
    assert message in page and "Still listed" in page


@pytest.mark.parametrize("query", [{"year": "abc"}, {"programme": "99999"}, {"q": "nul\x00byte"}])
def test_a_download_with_a_bad_filter_is_a_400_that_says_why(client, query):
    csv_response = client.get(CSV, query)
    json_response = client.get(JSON, query)
    assert csv_response.status_code == json_response.status_code == 400
    assert "from the list" in csv_response.content.decode() or "Null" in csv_response.content.decode()
    body = json_response.json()
    assert body["status"] == 400 and body["code"] == "invalid" and body["errors"]


@pytest.mark.parametrize("count", [2, 25])
def test_the_page_and_downloads_cost_the_same_queries_whatever_the_number_of_awards(
    client, call, pool, system, director, count, django_assert_max_num_queries
):
    for n in range(count):
        _accepted(call, system, director, pool, title=f"Award {n}", hours=10)
    with django_assert_max_num_queries(8):
        assert f"{count} awards" in client.get(PAGE).content.decode()
    with django_assert_max_num_queries(4):
        assert len(_json(client.get(JSON))["awards"]) == count
    with django_assert_max_num_queries(4):
        assert len(_csv_rows(client.get(CSV))[1]) == count
