"""The applicant's and director's pages: each question page validates, wrong states get a clear message,
uploads are checked and served only through a permission check."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from allocations.awards import awarded_systems
from programmes import proposals as services
from programmes.models import Proposal
from tests.factories import HOUR, UserFactory, make_proposal

pytestmark = pytest.mark.django_db
State = Proposal.State


@pytest.fixture
def draft(call, alice):
    return services.create_proposal(call=call, pi=alice)


def _url(name, proposal, *args):
    return reverse(f"proposals:{name}", args=[proposal.pk, *args])


def _errors(response) -> str:
    assert response.status_code == 200
    content = response.content.decode()
    assert "govuk-error-summary" in content
    assert "<title>Error: " in content
    return content


@pytest.mark.parametrize(
    "page, data, message",
    [
        ("proposal-details", {}, "Enter a project title"),
        (
            "proposal-details",
            {"title": "T", "summary": "S", "research_field": "F"},
            "Enter at least one keyword",
        ),
        ("proposal-timeline", {}, "Enter the start date"),
        (
            "proposal-timeline",
            {
                "start_date_day": "31",
                "start_date_month": "2",
                "start_date_year": "2030",
                "duration_months": "3",
            },
            "Start date must be a real date",
        ),
        (
            "proposal-timeline",
            {
                "start_date_day": "1",
                "start_date_month": "2",
                "start_date_year": "2030",
                "duration_months": "13",
            },
            "Duration must be between 1 and 12 months",
        ),
        (
            "proposal-timeline",
            {
                "start_date_day": "1",
                "start_date_month": "2",
                "start_date_year": "2020",
                "duration_months": "3",
            },
            "Start date must be today or in the future",
        ),
        ("proposal-case", {}, "Enter your case for support"),
        ("proposal-data", {}, "Enter what data you will use"),
        (
            "proposal-data",
            {"data_statement": "D", "ethics": "approved", "trusted_research_confirmed": "on"},
            "Enter the committee and reference",
        ),
        (
            "proposal-data",
            {"data_statement": "D", "ethics": "not_needed"},
            "Confirm the project follows trusted",
        ),
        ("proposal-declarations", {}, "Accept the terms to continue"),
        ("proposal-resources", {}, "Select a system"),
        ("proposal-resources", {"method": "M", "runs": "0"}, "Number of runs must be 1 or more"),
        ("proposal-resources", {"hours_per_run": "ten"}, "Enter GPU-hours as a number"),
        ("proposal-team", {}, "Enter an email address"),
        ("proposal-team", {"email": "not-an-address"}, "Enter an email address in the correct format"),
    ],
)
def test_each_question_page_shows_its_errors_in_the_summary_and_saves_nothing(
    client, draft, alice, page, data, message
):
    client.force_login(alice)
    content = _errors(client.post(_url(page, draft), data))
    assert message in content
    draft.refresh_from_db()
    assert draft.title == "" and draft.case_for_support == ""


def test_a_request_outside_the_calls_range_is_refused_on_the_page(client, draft, alice, system):
    client.force_login(alice)
    data = {"system": system.pk, "method": "M", "runs": "1", "hours_per_run": "10", "gpus_per_job": "4"}
    assert "must be between 100 and 50,000" in _errors(client.post(_url("proposal-resources", draft), data))


def test_valid_answers_are_saved_and_lead_back_to_the_task_list_which_shows_them_completed(client, draft, alice):
    client.force_login(alice)
    response = client.post(
        _url("proposal-details", draft),
        {"title": "Welsh LLM", "summary": "S", "research_field": "NLP", "keywords": "Welsh"},
    )
    assert response.status_code == 302 and response.url == _url("proposal-tasks", draft)
    page = client.get(response.url).content.decode()
    assert "Welsh LLM" in page
    assert "You have completed 2 of 7 sections" in page  # details, and the optional team


def test_a_case_for_support_that_is_not_really_a_pdf_is_refused(client, draft, alice):
    client.force_login(alice)
    fake = SimpleUploadedFile("case.pdf", b"MZ\x90\x00 not a pdf", content_type="application/pdf")
    content = _errors(
        client.post(_url("proposal-case", draft), {"case_for_support": "C", "case_for_support_pdf": fake})
    )
    assert "The selected file must be a PDF" in content


def test_a_pdf_over_10_mb_is_refused(client, draft, alice):
    client.force_login(alice)
    big = SimpleUploadedFile("case.pdf", b"%PDF-1.4\n" + b"0" * (10 * 1024 * 1024), content_type="application/pdf")
    content = _errors(client.post(_url("proposal-case", draft), {"case_for_support": "C", "case_for_support_pdf": big}))
    assert "smaller than 10 MB" in content


def test_a_real_pdf_is_stored_outside_static_and_served_only_to_those_who_may_see_the_proposal(
    client, draft, alice, charlie, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    client.force_login(alice)
    pdf = SimpleUploadedFile("case.pdf", b"%PDF-1.4\n%%EOF\n", content_type="application/pdf")
    response = client.post(_url("proposal-case", draft), {"case_for_support": "C", "case_for_support_pdf": pdf})
    assert response.status_code == 302
    draft.refresh_from_db()
    assert str(tmp_path) in draft.case_for_support_pdf.path and "static" not in draft.case_for_support_pdf.path
    response = client.get(_url("proposal-pdf", draft))
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert b"".join(response.streaming_content).startswith(b"%PDF")
    client.force_login(charlie)
    assert client.get(_url("proposal-pdf", draft)).status_code == 404


def test_the_whole_applicant_journey_through_the_pages(client, call, system, alice, django_capture_on_commit_callbacks):
    client.force_login(alice)
    response = client.post(reverse("proposals:proposal-start", args=[call.slug]))
    proposal = Proposal.objects.get(pi=alice)
    assert response.url == _url("proposal-tasks", proposal)
    resources = {"system": system.pk, "method": "Pre-training", "runs": "10", "hours_per_run": "100",
                 "gpus_per_job": "64", "software": "PyTorch"}  # fmt: skip
    timeline = {
        "start_date_day": "1",
        "start_date_month": "6",
        "start_date_year": "2030",
        "duration_months": "6",
    }
    data = {"data_statement": "Open text", "ethics": "not_needed", "trusted_research_confirmed": "on"}
    steps = [
        (
            "proposal-details",
            {"title": "Welsh LLM", "summary": "S", "research_field": "NLP", "keywords": "Welsh"},
        ),
        ("proposal-resources", resources),
        ("proposal-timeline", timeline),
        ("proposal-case", {"case_for_support": "Because"}),
        ("proposal-data", data),
        ("proposal-declarations", {"accept_terms": "on"}),
    ]
    for page, data in steps:
        assert client.post(_url(page, proposal), data).status_code == 302, page
    check = client.get(_url("proposal-check", proposal)).content.decode()
    assert "Submit proposal" in check and "1,000 GPU-hours" in check
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url("proposal-submit", proposal))
    assert response.url == _url("proposal-submitted", proposal)
    assert proposal.reference in client.get(response.url).content.decode()
    proposal.refresh_from_db()
    assert proposal.state == State.SUBMITTED


def test_submitting_twice_gets_a_clear_message_not_an_error(client, call, system, alice):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    client.force_login(alice)
    response = client.post(_url("proposal-submit", proposal), follow=True)
    assert "You cannot submit a proposal that is submitted" in response.content.decode()


def test_the_history_shows_every_transition_and_the_changes_requested(client, call, system, alice, director):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    services.request_changes(proposal=proposal, actor=director, message="Justify the runs")
    client.force_login(alice)
    page = client.get(_url("proposal-detail", proposal)).content.decode()
    assert "The programme asks for changes" in page and "Justify the runs" in page
    assert "Submitted to Changes requested" in page


def test_applicants_see_released_comments_but_never_reviewer_names_or_scores(
    client, call, system, alice, director, charlie
):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    assignment = services.assign_reviewer(proposal=proposal, email=charlie.email, actor=director)
    services.declare_conflict(assignment=assignment, actor=charlie, has_conflict=False)
    services.submit_review(
        assignment=assignment,
        actor=charlie,
        scores={c.pk: (2, "Weak baseline") for c in call.criteria.all()},
        comment_for_applicant="Compare with BLOOM",
    )
    client.force_login(alice)
    assert "Compare with BLOOM" not in client.get(_url("proposal-detail", proposal)).content.decode()
    services.release_review(assignment=assignment, actor=director)
    page = client.get(_url("proposal-detail", proposal)).content.decode()
    assert "Compare with BLOOM" in page and "Weak baseline" in page
    assert charlie.email not in page and "Reviewer 1" in page


def test_a_reviewer_never_sees_other_reviewers(client, call, system, alice, director, charlie, bob):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    first = services.assign_reviewer(proposal=proposal, email=charlie.email, actor=director)
    other = UserFactory(email="other.reviewer@example.ac.uk")
    services.assign_reviewer(proposal=proposal, email=other.email, actor=director)
    client.force_login(charlie)
    for url in [reverse("proposals:review-detail", args=[first.pk]), _url("proposal-detail", proposal)]:
        assert other.email not in client.get(url).content.decode()


def test_the_director_awards_part_on_the_page_and_the_pool_is_told(client, call, pool, system, alice, director):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    client.force_login(director)
    response = client.post(
        _url("proposal-decide", proposal),
        {
            "outcome": "award_part",
            f"hours_{system.pk}": "600",
            "rationale": "Strong, but fewer runs will do",
        },
    )
    assert response.status_code == 302
    proposal.refresh_from_db()
    [award] = awarded_systems(proposal)
    assert proposal.state == State.AWARDED and award.seconds == 600 * HOUR and award.allocation.pool == pool


def test_an_award_the_pool_cannot_cover_is_explained_on_the_page(client, call, pool, system, alice, director):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    request = proposal.resource_requests.get()
    request.runs = 200
    request.save()
    client.force_login(director)
    response = client.post(_url("proposal-decide", proposal), {"outcome": "award_full", "rationale": "Yes"})
    assert "more than the 10,000 GPU-hours available" in _errors(response)
    proposal.refresh_from_db()
    assert proposal.state == State.IN_REVIEW


def test_the_decision_form_requires_a_rationale_and_hours_for_a_partial_award(
    client, call, pool, system, alice, director
):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    client.force_login(director)
    content = _errors(client.post(_url("proposal-decide", proposal), {"outcome": "award_part"}))
    assert "Enter the rationale for the decision" in content
    assert "Enter the GPU-hours to award, or a shorter window" in content


def test_the_reviewer_declares_then_scores_with_errors_shown_first(client, call, system, alice, director, charlie):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    assignment = services.assign_reviewer(proposal=proposal, email=charlie.email, actor=director)
    url = reverse("proposals:review-detail", args=[assignment.pk])
    client.force_login(charlie)
    assert "Select yes if you have a conflict of interest" in _errors(client.post(url, {}))
    assert client.post(url, {"has_conflict": "no"}).status_code == 302
    content = _errors(client.post(url, {}))
    assert "Select a score for Scientific excellence" in content
    data = {}
    for criterion in call.criteria.all():
        data[f"score_{criterion.pk}"] = "4"
        data[f"comment_{criterion.pk}"] = "Sound"
    assert client.post(url, data).status_code == 302
    assignment.refresh_from_db()
    assert assignment.state == "submitted"


def test_the_queue_filters_by_state_and_sorts_by_score(client, call, system, alice, director):
    submitted = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED, title="Submitted one")
    make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW, title="Reviewed one")
    client.force_login(director)
    page = client.get(reverse("proposals:proposal-queue"), {"state": "submitted", "sort": "score"}).content.decode()
    assert submitted.reference in page and "Reviewed one" not in page


def test_an_assessor_queue_lists_only_proposals_asking_for_their_system(client, call, system, alice, assessor):
    from tests.factories import CallFactory, FundPoolFactory, SystemFactory

    mine = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED, title="On my system")
    dawn = SystemFactory(slug="dawn", name="Dawn")
    elsewhere = CallFactory(pools=[FundPoolFactory(system=dawn)])
    make_proposal(call=elsewhere, pi=alice, system=dawn, state=State.SUBMITTED, title="On Dawn")
    client.force_login(assessor)
    page = client.get(reverse("proposals:proposal-queue")).content.decode()
    assert mine.reference in page and "On Dawn" not in page
    detail = client.get(_url("proposal-detail", mine)).content.decode()
    assert "Assess<span" in detail
