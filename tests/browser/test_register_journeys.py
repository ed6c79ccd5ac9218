"""The public register of awards in Chromium: someone who is not signed in finds it from the home page, searches
it (with and without results), filters it, meets a clear message for a bad filter, and downloads the open data.
axe checks every page."""

from datetime import date

import pytest

from allocations import awards, ledger
from programmes.models import Proposal, ResourceRequest
from programmes.proposals import add_months
from tests.browser.conftest import check_accessibility, visit
from tests.factories import HOUR, CallFactory, FundPoolFactory, SystemFactory, UserFactory, make_proposal

pytestmark = pytest.mark.django_db(transaction=True)


def _register(system, programme):
    """Two accepted awards, one of them on two systems, and an award not yet accepted."""
    dawn = SystemFactory(name="Dawn", slug="dawn", cluster_name="dawn")
    today = date.today()
    pools = [
        FundPoolFactory(
            programme=programme,
            system=on,
            name=f"Builder Fund on {on.name}",
            valid_from=today.replace(month=1, day=1),
            valid_until=today.replace(year=today.year + 2, month=12, day=31),
        )
        for on in (system, dawn)
    ]
    for pool in pools:
        ledger.deposit_to_pool(
            pool=pool, seconds=10_000 * HOUR, actor=None, reason="Budget", idempotency_key=f"b-{pool.pk}"
        )
    call = CallFactory(programme=programme, pools=pools, title="Open-Source AI Builder Fund, round 1")
    director = UserFactory()
    programme.directors.add(director)

    def award(title, organisation, summary, on_pools, accept=True):
        pi = UserFactory(organisation=organisation)
        proposal = make_proposal(call=call, pi=pi, system=system, state=Proposal.State.IN_REVIEW, title=title)
        proposal.summary = summary
        proposal.save()
        if pools[1] in on_pools:
            ResourceRequest.objects.create(
                proposal=proposal, system=dawn, method="M", runs=4, seconds_per_run=100 * HOUR, gpus_per_job=8
            )
        end = add_months(proposal.start_date, proposal.duration_months)
        parts = [
            awards.AwardPart(
                pool=pool,
                seconds=proposal.resource_requests.get(system=pool.system).seconds,
                start=proposal.start_date,
                end=end,
            )
            for pool in on_pools
        ]
        awards.award_proposal(proposal=proposal, parts=parts, rationale="Strong", actor=director)
        if accept:
            awards.accept_award(proposal=proposal, actor=pi)
        return proposal

    welsh = award("An open Welsh language model", "Bangor University", "Speech and text for Welsh.", pools)
    award("Protein design at scale", "University of Example", "Enzymes for plastic recycling.", pools[:1])
    award("Not yet accepted", "Hidden Ltd", "Waiting for the PI.", pools[:1], accept=False)
    return welsh


def test_the_public_searches_filters_and_downloads_the_register(page, live_server, system, programme):
    welsh = _register(system, programme)

    visit(page, "/")
    page.get_by_role("main").get_by_role("link", name="register of awards").click()
    check_accessibility(page)
    content = page.content()
    assert "3 awards" in content and "Not yet accepted" not in content
    assert "Open Government Licence v3.0" in content
    assert page.get_by_role("contentinfo").get_by_role("link", name="Register of awards").is_visible()

    # A search by organisation.
    page.get_by_label("Search").fill("Bangor")
    page.get_by_role("button", name="Search").click()
    check_accessibility(page)
    assert "2 awards" in page.content() and "Protein design" not in page.content()

    # A search with no results.
    page.get_by_label("Search").fill("quantum gravity")
    page.get_by_role("button", name="Search").click()
    check_accessibility(page)
    assert "0 awards" in page.content() and "No awards match your search" in page.content()

    # A filter by system, and the downloads that honour it.
    page.get_by_label("Search").fill("")
    page.get_by_label("System").select_option(label="Dawn")
    page.get_by_role("button", name="Search").click()
    check_accessibility(page)
    assert "1 award" in page.content() and welsh.reference in page.content()
    json_url = page.get_by_role("link", name="JSON").get_attribute("href")
    data = page.request.get(json_url).json()
    assert data["licence"]["name"] == "Open Government Licence v3.0"
    assert [(a["reference"], a["system"], a["gpu_hours"]) for a in data["awards"]] == [
        (welsh.reference, "Dawn", "400.00")
    ]
    csv_text = page.request.get(page.get_by_role("link", name="CSV").get_attribute("href")).text()
    assert csv_text.startswith("# AIRR register of awards. Licence: Open Government Licence v3.0")
    assert welsh.reference in csv_text and "Protein design" not in csv_text

    # A hostile query string: a clear message, in the error summary, and the page still works.
    visit(page, "/register/?year=1066&page=999")
    summary = page.locator(".govuk-error-summary")
    assert summary.is_visible() and "Select a year from the list" in summary.inner_text()
    assert "There is no page 999" in page.content()
