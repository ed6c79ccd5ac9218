"""What the roles must not see or do around a proposal, beyond the URL matrix: its drafts, its scores, its
reviewers' comments, other programmes' pools, and decisions on one's own proposal."""

import pytest

from programmes import proposals as services
from tests.factories import (
    FundPoolFactory,
    ProgrammeFactory,
    SystemFactory,
    UserFactory,
    api_client,
    give_mfa,
    make_proposal,
    web_client,
)

pytestmark = pytest.mark.django_db


def submitted_review(proposal, director, reviewer):
    assignment = services.assign_reviewer(proposal=proposal, email=reviewer.email, actor=director)
    services.declare_conflict(assignment=assignment, actor=reviewer, has_conflict=False)
    services.submit_review(
        assignment=assignment,
        actor=reviewer,
        scores={criterion.pk: (2, "CRITERION-COMMENT") for criterion in proposal.call.criteria.all()},
        comment_for_applicant="APPLICANT-COMMENT",
    )
    return assignment


def test_a_draft_withdrawn_before_it_was_submitted_stays_its_teams_alone(call, system, alice, director, assessor):
    proposal = make_proposal(call=call, pi=alice, system=system, state="draft", title="Private draft idea")
    proposal.case_for_support = "UNSUBMITTED-PLAN"
    proposal.save()
    services.withdraw_proposal(proposal=proposal, actor=alice, reason="changed my mind")

    for user in (director, assessor):
        assert web_client(user).get(f"/proposals/{proposal.pk}/").status_code == 404
        assert web_client(user).get(f"/proposals/{proposal.pk}/case-for-support.pdf").status_code == 404
        assert api_client(user).get(f"/api/proposals/{proposal.pk}/").status_code == 404
        assert "Private draft idea" not in web_client(user).get("/review/").content.decode()
    assert web_client(alice).get(f"/proposals/{proposal.pk}/").status_code == 200


def test_a_proposal_withdrawn_after_it_was_submitted_is_still_seen_by_its_directors(call, system, alice, director):
    proposal = make_proposal(call=call, pi=alice, system=system, state="submitted", title="Submitted then withdrawn")
    services.withdraw_proposal(proposal=proposal, actor=alice, reason="funded elsewhere")

    assert web_client(director).get(f"/proposals/{proposal.pk}/").status_code == 200
    assert "Submitted then withdrawn" in web_client(director).get("/review/").content.decode()


def test_the_queue_shows_scores_to_the_calls_directors_and_not_to_assessors(
    call, system, alice, director, assessor, charlie
):
    proposal = make_proposal(call=call, pi=alice, system=system, state="in_review", title="Scored proposal")
    submitted_review(proposal, director, charlie)

    assert "2.00 (1 review)" in web_client(director).get("/review/").content.decode()
    page = web_client(assessor).get("/review/").content.decode()
    assert "Scored proposal" in page
    assert "2.00" not in page and "1 review" not in page
    # Sorting by score gives an assessor no order to read either: the proposal is there, unscored.
    assert "Scored proposal" in web_client(assessor).get("/review/?sort=-score").content.decode()


def test_released_reviews_are_shown_to_the_applicants_team_only(call, system, alice, director, assessor, charlie):
    proposal = make_proposal(call=call, pi=alice, system=system, state="in_review")
    services.release_review(assignment=submitted_review(proposal, director, charlie), actor=director)
    second = UserFactory(email="second.reviewer@example.org")
    services.assign_reviewer(proposal=proposal, email=second.email, actor=director)

    assert "APPLICANT-COMMENT" in web_client(alice).get(f"/proposals/{proposal.pk}/").content.decode()
    for user in (second, assessor):
        page = web_client(user).get(f"/proposals/{proposal.pk}/").content.decode()
        assert "APPLICANT-COMMENT" not in page and "CRITERION-COMMENT" not in page


def test_a_director_who_leads_a_proposal_in_their_programme_sees_the_applicants_page_and_cannot_decide_it(
    call, system, director, charlie
):
    proposal = make_proposal(call=call, pi=director, system=system, state="in_review", title="Director's own")
    # Another director of the programme runs the review.
    colleague = UserFactory(email="colleague@example.org")
    call.programme.directors.add(colleague)
    give_mfa(colleague)
    submitted_review(proposal, colleague, charlie)

    page = web_client(director).get(f"/proposals/{proposal.pk}/").content.decode()
    assert charlie.email not in page and "CRITERION-COMMENT" not in page
    assert "Director's own" not in web_client(director).get("/review/").content.decode()
    award = {
        "systems": [{"system": system.slug, "hours": "1000", "start": "2027-01-01", "end": "2027-06-30"}],
        "rationale": "mine",
    }
    assert api_client(director).post(f"/api/proposals/{proposal.pk}/award/", award, format="json").status_code == 403
    assert web_client(director).get(f"/proposals/{proposal.pk}/decide/").status_code == 403
    assert api_client(colleague).post(f"/api/proposals/{proposal.pk}/award/", award, format="json").status_code == 200


def test_an_assessor_cannot_assess_their_own_proposal(call, system, assessor):
    proposal = make_proposal(call=call, pi=assessor, system=system, state="submitted")

    answer = api_client(assessor).post(
        f"/api/proposals/{proposal.pk}/assess/", {"system": system.slug, "outcome": "feasible"}, format="json"
    )
    assert answer.status_code == 403
    assert web_client(assessor).get(f"/proposals/{proposal.pk}/assess/{system.slug}/").status_code == 403
    assert not proposal.assessments.exists()


@pytest.mark.parametrize("same_system", [True, False])
def test_the_award_api_names_no_pool_outside_the_call(call, system, alice, director, same_system):
    elsewhere = system if same_system else SystemFactory(name="Dawn", slug="dawn", cluster_name="dawn")
    secret = FundPoolFactory(programme=ProgrammeFactory(name="Other programme"), system=elsewhere, name="Secret Pool")
    proposal = make_proposal(call=call, pi=alice, system=system, state="in_review")
    award = {
        "systems": [
            {"system": system.slug, "pool": secret.pk, "hours": "1", "start": "2027-01-01", "end": "2027-02-01"}
        ],
        "rationale": "x",
    }

    by_director = api_client(director).post(f"/api/proposals/{proposal.pk}/award/", award, format="json")
    assert by_director.status_code == 400 and "Secret Pool" not in by_director.content.decode()
    assert "Choose one of the call's fund pools" in by_director.content.decode()
    by_applicant = api_client(alice).post(f"/api/proposals/{proposal.pk}/award/", award, format="json")
    assert by_applicant.status_code == 403 and "Secret Pool" not in by_applicant.content.decode()
