"""The proposal API: a script writes, submits and follows a proposal; directors decide; wrong states: 409."""

import pytest

from allocations.models import Allocation
from programmes.models import Proposal, ReviewAssignment
from tests.factories import api_client, make_proposal

pytestmark = pytest.mark.django_db
State = Proposal.State


def test_a_script_writes_and_submits_a_proposal_and_reads_its_status(call, system, alice):
    api = api_client(alice)
    created = api.post("/api/proposals/", {"call": call.slug, "title": "By script"}, format="json")
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]
    answers = {
        "summary": "S",
        "research_field": "NLP",
        "keywords": "Welsh",
        "start_date": "2030-06-01",
        "duration_months": 6,
        "case_for_support": "Because",
        "data_statement": "Open text",
        "ethics": "not_needed",
        "trusted_research_confirmed": True,
    }
    assert api.patch(f"/api/proposals/{pk}/", answers, format="json").status_code == 200
    resource = {"system": system.slug, "method": "M", "runs": 10, "hours_per_run": "100", "gpus_per_job": 8}
    response = api.post(f"/api/proposals/{pk}/resources/", resource, format="json")
    assert response.status_code == 201
    assert response.json()["resource_requests"][0]["gpu_hours"] == "1000.00"
    assert api.post(f"/api/proposals/{pk}/accept-terms/").status_code == 200
    submitted = api.post(f"/api/proposals/{pk}/submit/")
    assert submitted.status_code == 200
    assert submitted.json()["state"] == "submitted"
    assert [step["to_state"] for step in api.get(f"/api/proposals/{pk}/").json()["history"]] == [
        "draft",
        "submitted",
    ]


def test_an_action_not_allowed_in_the_state_answers_409_in_the_one_error_format(call, system, alice):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    response = api_client(alice).post(f"/api/proposals/{proposal.pk}/submit/")
    assert response.status_code == 409
    assert response.json() == {
        "status": 409,
        "code": "conflict",
        "detail": "You cannot submit a proposal that is submitted",
        "errors": {},
    }


def test_an_incomplete_draft_is_a_400_naming_the_sections(call, alice):
    created = api_client(alice).post("/api/proposals/", {"call": call.slug}, format="json").json()
    response = api_client(alice).post(f"/api/proposals/{created['id']}/submit/")
    assert response.status_code == 400
    assert "Resources requested" in response.json()["errors"]["non_field_errors"][0]


def test_another_applicant_guessing_an_id_finds_nothing(call, system, alice, charlie):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    api = api_client(charlie)
    assert api.get(f"/api/proposals/{proposal.pk}/").status_code == 404
    assert api.post(f"/api/proposals/{proposal.pk}/withdraw/").status_code == 404
    listed = api.get("/api/proposals/").json()
    assert proposal.reference not in str(listed)


def test_directors_review_and_award_through_the_api_and_the_pi_accepts(call, pool, system, alice, director, charlie):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    directing = api_client(director)
    assert directing.post(f"/api/proposals/{proposal.pk}/eligible/").json()["state"] == "in_review"
    assert directing.post(f"/api/proposals/{proposal.pk}/eligible/").status_code == 409
    review = directing.post(f"/api/proposals/{proposal.pk}/reviewers/", {"email": charlie.email}, format="json")
    assert review.status_code == 201
    reviewing = api_client(charlie)
    review_id = review.json()["review"]
    declared = reviewing.post(f"/api/reviews/{review_id}/declare-conflict/", {"has_conflict": False}, format="json")
    assert declared.status_code == 200
    scores = [{"criterion": c.pk, "score": 5, "comment": "Excellent"} for c in call.criteria.all()]
    assert reviewing.post(f"/api/reviews/{review_id}/submit/", {"scores": scores}, format="json").status_code == 200
    assert ReviewAssignment.objects.get(pk=review_id).state == "submitted"
    day = str(proposal.start_date)
    award = {
        "systems": [{"system": system.slug, "hours": "600", "start": day, "end": day}],
        "rationale": "Strong",
    }
    awarded = directing.post(f"/api/proposals/{proposal.pk}/award/", award, format="json")
    assert awarded.status_code == 200, awarded.json()
    assert awarded.json()["decision"]["gpu_hours"] == "600.00"
    [on_system] = awarded.json()["decision"]["systems"]
    assert on_system["system"] == system.slug and on_system["gpu_seconds"] == 600 * 3600
    assert api_client(alice).post(f"/api/proposals/{proposal.pk}/accept/").json()["state"] == "accepted"
    assert Allocation.objects.get(proposal=proposal).scheduler_account == f"airr-{proposal.pk:05d}"


def test_an_award_the_pool_cannot_cover_is_a_400_and_changes_nothing(call, pool, system, alice, director):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    request = proposal.resource_requests.get()
    request.runs = 200
    request.save()
    day = str(proposal.start_date)
    award = {
        "systems": [{"system": system.slug, "hours": "20000", "start": day, "end": day}],
        "rationale": "Strong",
    }
    response = api_client(director).post(f"/api/proposals/{proposal.pk}/award/", award, format="json")
    assert response.status_code == 400
    assert "available in the pool" in str(response.json()["errors"])
    proposal.refresh_from_db()
    assert proposal.state == State.IN_REVIEW


@pytest.mark.parametrize("count", [1, 6])
def test_listing_awarded_proposals_costs_the_same_queries_however_many_there_are(
    call, pool, system, director, count, django_assert_max_num_queries
):
    from allocations import awards
    from tests.factories import HOUR, UserFactory

    for _ in range(count):
        proposal = make_proposal(call=call, pi=UserFactory(), system=system, state=State.IN_REVIEW)
        part = awards.AwardPart(pool=pool, seconds=HOUR, start=proposal.start_date, end=proposal.start_date)
        awards.award_proposal(proposal=proposal, parts=[part], rationale="Yes", actor=director)
    api = api_client(director)
    with django_assert_max_num_queries(16):
        listed = api.get("/api/proposals/").json()["results"]
    assert len(listed) == count
    assert all(item["decision"]["systems"][0]["gpu_hours"] == "1.00" for item in listed)
