"""The proposal journeys end to end in Chromium: an applicant writes and submits a proposal through every
page, a director opens its review and assigns a reviewer who scores it, the director awards part of the request, the
applicant accepts, and the allocation and the pool show the hours. axe checks every page, errors included."""

import re
from datetime import date

import pytest
from django.core import mail

from allocations import ledger
from allocations.models import Allocation, LedgerAccount
from allocations.selectors import pool_figures
from programmes.models import Proposal
from tests.browser.conftest import check_accessibility, sign_in, visit
from tests.factories import HOUR, CallFactory, FundPoolFactory, UserFactory, give_mfa

pytestmark = pytest.mark.django_db(transaction=True)


def submit_and_check_errors(page, button, *messages):
    page.get_by_role("button", name=button).click()
    summary = page.locator(".govuk-error-summary")
    assert summary.is_visible()
    for message in messages:
        assert message in summary.inner_text()
    check_accessibility(page)


def test_an_applicant_applies_a_director_awards_part_and_the_applicant_accepts(page, live_server, system, programme):
    today = date.today()
    pool = FundPoolFactory(
        programme=programme,
        system=system,
        name="Builder Fund",
        valid_from=today.replace(month=1, day=1),
        valid_until=today.replace(year=today.year + 2, month=12, day=31),
    )
    ledger.deposit_to_pool(pool=pool, seconds=10_000 * HOUR, actor=None, reason="Budget", idempotency_key="journey")
    call = CallFactory(programme=programme, pools=[pool], title="Open-Source AI Builder Fund, round 1")
    alice = UserFactory(email="alice@example.ac.uk", full_name="Alice Owner")
    director = UserFactory(email="dara@example.ac.uk", full_name="Dara Director")
    programme.directors.add(director)
    give_mfa(director)
    reviewer = UserFactory(email="rhys@example.ac.uk", full_name="Rhys Reviewer")

    # The applicant finds the call and starts a proposal.
    sign_in(page, live_server, alice)
    visit(page, "/calls/")
    page.get_by_role("link", name=call.title).click()
    check_accessibility(page)
    page.get_by_role("button", name="Start a proposal").click()
    page.wait_for_url("**/tasks/")
    check_accessibility(page)
    proposal = Proposal.objects.get(pi=alice)
    assert "You have completed 1 of 7 sections" in page.content()

    page.get_by_role("link", name="Project details").click()
    check_accessibility(page)
    submit_and_check_errors(page, "Save and continue", "Enter a project title", "Enter a public summary")
    page.get_by_label("Project title").fill("An open Welsh language model")
    page.get_by_label("Public summary").fill("An open model for Welsh speakers.")
    page.get_by_label("Research field").fill("Natural language processing")
    page.get_by_label("Keywords").fill("Welsh, language models")
    page.get_by_role("button", name="Save and continue").click()
    page.wait_for_url("**/tasks/")

    page.get_by_role("link", name="Team").click()
    check_accessibility(page)
    submit_and_check_errors(page, "Send invitation", "Enter an email address")
    page.get_by_label("Co-investigator's email address").fill("bob@example.ac.uk")
    page.get_by_role("button", name="Send invitation").click()
    assert "Invitation sent to bob@example.ac.uk" in page.content()
    check_accessibility(page)
    page.get_by_role("link", name="Continue to the task list").click()

    page.get_by_role("link", name="Resources requested").click()
    check_accessibility(page)
    page.get_by_label("System").select_option(label=system.name)
    page.get_by_label("Method").fill("Pre-training runs of a 7B model")
    page.get_by_label("Number of runs").fill("10")
    page.get_by_label("GPU-hours per run").fill("5")
    page.get_by_label("GPUs per job").fill("64")
    submit_and_check_errors(page, "Save request", "must be between 100 and 50,000")
    page.get_by_label("GPU-hours per run").fill("100")
    page.get_by_label("Software and containers (optional)").fill("PyTorch in Apptainer")
    page.get_by_role("button", name="Save request").click()
    assert "Request on Isambard-AI saved" in page.content()
    check_accessibility(page)
    page.get_by_role("button", name="Continue").click()

    page.get_by_role("link", name="Timeline").click()
    check_accessibility(page)
    page.get_by_label("Day", exact=True).fill("31")
    page.get_by_label("Month", exact=True).fill("2")
    page.get_by_label("Year", exact=True).fill(str(today.year + 1))
    page.get_by_label("How many months do you need?").fill("6")
    submit_and_check_errors(page, "Save and continue", "Start date must be a real date")
    page.get_by_label("Day", exact=True).fill("1")
    page.get_by_role("button", name="Save and continue").click()
    page.wait_for_url("**/tasks/")

    page.get_by_role("link", name="Case for support").click()
    check_accessibility(page)
    page.get_by_label("Case for support", exact=True).fill("Nobody has trained one in the open.")
    page.get_by_label("Upload a PDF (optional)").set_input_files(
        files=[{"name": "case.exe", "mimeType": "application/pdf", "buffer": b"MZ not a pdf"}]
    )
    submit_and_check_errors(page, "Save and continue", "The selected file must be a PDF")
    page.get_by_label("Upload a PDF (optional)").set_input_files(
        files=[{"name": "case.pdf", "mimeType": "application/pdf", "buffer": b"%PDF-1.4\n%%EOF\n"}]
    )
    page.get_by_role("button", name="Save and continue").click()
    page.wait_for_url("**/tasks/")

    page.get_by_role("link", name="Data, ethics and trusted research").click()
    check_accessibility(page)
    submit_and_check_errors(page, "Save and continue", "Enter what data you will use")
    page.get_by_label("What data will you use?").fill("Public web text under open licences")
    page.get_by_label("No ethical approval is needed").check()
    page.get_by_label(re.compile("I confirm the project follows")).check()
    page.get_by_role("button", name="Save and continue").click()
    page.wait_for_url("**/tasks/")

    page.get_by_role("link", name="Declarations and terms").click()
    check_accessibility(page)
    submit_and_check_errors(page, "Save and continue", "Accept the terms to continue")
    page.get_by_label(re.compile("I accept the AIRR terms")).check()
    page.get_by_role("button", name="Save and continue").click()
    page.wait_for_url("**/tasks/")
    assert "You have completed 7 of 7 sections" in page.content()
    check_accessibility(page)

    page.get_by_role("button", name="Check your answers").click()
    check_accessibility(page)
    assert "1,000 GPU-hours" in page.content()
    page.get_by_role("button", name="Submit proposal").click()
    page.wait_for_url("**/submitted/")
    check_accessibility(page)
    assert proposal.reference in page.locator(".govuk-panel").inner_text()
    assert any(proposal.reference in message.subject for message in mail.outbox)

    # The director opens the review and assigns a reviewer.
    sign_in(page, live_server, director)
    visit(page, "/review/")
    page.get_by_role("link", name=proposal.reference).click()
    check_accessibility(page)
    page.get_by_role("button", name="Eligible: start review").click()
    assert "is eligible and now in review" in page.content()
    check_accessibility(page)
    page.get_by_role("button", name="Assign a reviewer").click()
    check_accessibility(page)
    submit_and_check_errors(page, "Assign reviewer", "Enter an email address")
    page.get_by_label("Reviewer's email address").fill(reviewer.email)
    page.get_by_role("button", name="Assign reviewer").click()
    assert f"{reviewer.email} has been asked to review" in page.content()

    # The reviewer declares no conflict and scores every criterion.
    sign_in(page, live_server, reviewer)
    visit(page, "/proposals/")
    page.get_by_role("link", name=re.compile(proposal.reference)).click()
    check_accessibility(page)
    submit_and_check_errors(page, "Continue", "Select yes if you have a conflict of interest")
    page.get_by_label("No", exact=True).check()
    page.get_by_role("button", name="Continue").click()
    check_accessibility(page)
    submit_and_check_errors(page, "Submit review", "Select a score for Scientific excellence")
    for criterion in call.criteria.all():
        page.get_by_role("group", name=f"{criterion.name}: score").get_by_label("4").check()
        page.get_by_label(f"{criterion.name}: comment").fill("Sound and well argued")
    page.get_by_label("Comments for the applicant (optional)").fill("Consider a smaller pilot first")
    page.get_by_role("button", name="Submit review").click()
    assert "Your review of" in page.content()
    check_accessibility(page)

    # The director decides on the call's decision page: part of the request.
    sign_in(page, live_server, director)
    visit(page, f"/calls/{call.slug}/decisions/")
    assert "10,000 GPU-hours" in page.content()
    page.get_by_role("link", name=re.compile(f"Decide on {proposal.reference}")).click()
    check_accessibility(page)
    submit_and_check_errors(page, "Record decision", "Select a decision", "Enter the rationale")
    page.get_by_label("Award part of the request").check()
    page.get_by_label(f"GPU-hours to award on {system.name} (optional)").fill("600")
    page.get_by_label("Rationale").fill("Strong, but a pilot of six runs comes first")
    page.get_by_role("button", name="Record decision").click()
    assert f"Decision on {proposal.reference} recorded" in page.content()
    check_accessibility(page)

    # The applicant reads the decision and accepts.
    sign_in(page, live_server, alice)
    visit(page, f"/proposals/{proposal.pk}/")
    assert "Awarded in part" in page.content() and "a pilot of six runs" in page.content()
    page.get_by_role("button", name="Accept or decline the award").click()
    check_accessibility(page)
    page.get_by_role("button", name="Accept award").click()
    assert f"airr-{proposal.pk:05d}" in page.content()
    check_accessibility(page)

    allocation = Allocation.objects.get(proposal=proposal)
    assert LedgerAccount.objects.get(allocation=allocation).balance == 600 * HOUR
    assert pool_figures(pool).available == 9_400 * HOUR
    sign_in(page, live_server, director)
    visit(page, f"/pools/{pool.pk}/")
    assert "9,400" in page.content()
