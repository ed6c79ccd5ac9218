"""Every transition of a proposal's state machine, the ones it forbids, and the history each leaves."""

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from programmes import proposals as services
from programmes.models import Proposal, ProposalMember, ProposalTransition, ReviewAssignment, TechnicalAssessment
from programmes.proposals import ProposalStateError
from tests.factories import UserFactory, complete_proposal, make_proposal

pytestmark = pytest.mark.django_db
State = Proposal.State


def test_a_new_draft_gets_a_reference_from_its_primary_key_and_a_first_history_line(call, alice):
    proposal = services.create_proposal(call=call, pi=alice, title="Welsh LLM")
    assert proposal.reference.endswith(f"-{proposal.pk:05d}")
    assert proposal.reference.startswith("AIRR-")
    assert proposal.state == State.DRAFT
    assert list(proposal.transitions.values_list("to_state", "actor")) == [(State.DRAFT, alice.pk)]


def test_no_draft_can_be_started_under_a_closed_call(call, alice):
    call.closes_on = call.opens_on
    call.opens_on = call.opens_on.replace(year=call.opens_on.year - 1)
    call.save()
    with pytest.raises(ProposalStateError, match="not open"):
        services.create_proposal(call=call, pi=alice)


def test_the_pi_submits_a_complete_draft_records_it_and_the_team_gets_an_email(
    call, system, alice, django_capture_on_commit_callbacks
):
    proposal = complete_proposal(services.create_proposal(call=call, pi=alice), system=system)
    with django_capture_on_commit_callbacks(execute=True):
        services.submit_proposal(proposal=proposal, actor=alice)
    proposal.refresh_from_db()
    assert proposal.state == State.SUBMITTED and proposal.submitted_at
    last = proposal.transitions.last()
    assert (last.from_state, last.to_state, last.actor) == (State.DRAFT, State.SUBMITTED, alice)
    assert [message.to for message in mail.outbox] == [[alice.email]]
    assert proposal.reference in mail.outbox[0].subject


def test_an_incomplete_draft_cannot_be_submitted_and_the_error_names_the_missing_sections(call, alice):
    proposal = services.create_proposal(call=call, pi=alice, title="Half done")
    with pytest.raises(ValidationError, match="Resources requested"):
        services.submit_proposal(proposal=proposal, actor=alice)
    proposal.refresh_from_db()
    assert proposal.state == State.DRAFT


def test_only_the_pi_may_submit(call, system, alice, bob):
    proposal = complete_proposal(services.create_proposal(call=call, pi=alice), system=system)
    with pytest.raises(PermissionDenied):
        services.submit_proposal(proposal=proposal, actor=bob)


@pytest.mark.parametrize("state", [State.SUBMITTED, State.IN_REVIEW, State.AWARDED, State.REJECTED, State.WITHDRAWN])
def test_a_proposal_that_is_not_a_draft_cannot_be_submitted_or_edited(call, system, alice, state):
    proposal = make_proposal(call=call, pi=alice, system=system, state=state)
    with pytest.raises(ProposalStateError):
        services.submit_proposal(proposal=proposal, actor=alice)
    with pytest.raises(ProposalStateError):
        services.update_proposal(proposal=proposal, actor=alice, title="Changed")


@pytest.mark.parametrize("state", [State.DRAFT, State.SUBMITTED, State.CHANGES_REQUESTED, State.IN_REVIEW])
def test_the_pi_may_withdraw_before_a_decision(call, system, alice, state):
    proposal = make_proposal(call=call, pi=alice, system=system, state=state)
    services.withdraw_proposal(proposal=proposal, actor=alice, reason="Funded elsewhere")
    proposal.refresh_from_db()
    assert proposal.state == State.WITHDRAWN
    assert proposal.transitions.last().reason == "Funded elsewhere"


@pytest.mark.parametrize("state", [State.AWARDED, State.REJECTED, State.ACCEPTED, State.DECLINED, State.WITHDRAWN])
def test_nobody_may_withdraw_after_a_decision(call, system, alice, state):
    proposal = make_proposal(call=call, pi=alice, system=system, state=state)
    with pytest.raises(ProposalStateError):
        services.withdraw_proposal(proposal=proposal, actor=alice)


def test_a_director_finds_a_submitted_proposal_eligible_which_opens_review(call, system, alice, director):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    services.confirm_eligibility(proposal=proposal, actor=director)
    proposal.refresh_from_db()
    assert proposal.state == State.IN_REVIEW


def test_a_director_of_another_programme_cannot_check_eligibility(call, system, alice):
    outsider = UserFactory()
    from tests.factories import ProgrammeFactory

    ProgrammeFactory(directors=[outsider])
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    with pytest.raises(PermissionDenied):
        services.confirm_eligibility(proposal=proposal, actor=outsider)


def test_eligibility_cannot_be_checked_twice(call, system, alice, director):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    with pytest.raises(ProposalStateError, match="in review"):
        services.confirm_eligibility(proposal=proposal, actor=director)


def test_changes_requested_go_back_to_the_team_who_edit_and_resubmit(
    call, system, alice, director, django_capture_on_commit_callbacks
):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    with django_capture_on_commit_callbacks(execute=True):
        services.request_changes(proposal=proposal, actor=director, message="Justify the number of runs")
    proposal.refresh_from_db()
    assert proposal.state == State.CHANGES_REQUESTED
    assert "Justify the number of runs" in mail.outbox[-1].body
    services.update_proposal(proposal=proposal, actor=alice, title="Better justified")
    services.submit_proposal(proposal=proposal, actor=alice)
    proposal.refresh_from_db()
    assert proposal.state == State.SUBMITTED
    assert proposal.transitions.last().reason == "Resubmitted with changes"


def test_changes_cannot_be_requested_without_a_message_or_from_a_draft(call, system, alice, director):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    with pytest.raises(ValidationError):
        services.request_changes(proposal=proposal, actor=director, message=" ")
    draft = make_proposal(call=call, pi=alice, system=system)
    with pytest.raises(ProposalStateError):
        services.request_changes(proposal=draft, actor=director, message="Why?")


def test_a_director_rejects_with_a_rationale_the_applicant_reads(
    call, system, alice, director, django_capture_on_commit_callbacks
):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    with django_capture_on_commit_callbacks(execute=True):
        services.reject_proposal(proposal=proposal, actor=director, rationale="Out of scope for this call")
    proposal.refresh_from_db()
    assert proposal.state == State.REJECTED
    assert proposal.decision.rationale == "Out of scope for this call"
    assert "decision" in mail.outbox[-1].subject.lower()


def test_a_rejected_proposal_cannot_be_rejected_again(call, system, alice, director):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.REJECTED)
    with pytest.raises(ProposalStateError):
        services.reject_proposal(proposal=proposal, actor=director, rationale="Again")


def test_an_assessor_of_the_system_records_feasibility_and_may_revise_it(call, system, alice, assessor):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    services.record_assessment(proposal=proposal, system=system, actor=assessor, outcome="feasible")
    services.record_assessment(
        proposal=proposal, system=system, actor=assessor, outcome="conditions", notes="Use 32 GPUs per job"
    )
    assessment = TechnicalAssessment.objects.get(proposal=proposal)
    assert (assessment.outcome, assessment.notes) == ("conditions", "Use 32 GPUs per job")


def test_someone_who_does_not_assess_the_system_cannot_assess(call, system, alice, bob):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    with pytest.raises(PermissionDenied):
        services.record_assessment(proposal=proposal, system=system, actor=bob, outcome="feasible")


def test_not_feasible_needs_notes(call, system, alice, assessor):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    with pytest.raises(ValidationError):
        services.record_assessment(proposal=proposal, system=system, actor=assessor, outcome="not_feasible")


def _reviewed(call, system, alice, director, reviewer, scores=(4, 5)):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    assignment = services.assign_reviewer(proposal=proposal, email=reviewer.email, actor=director)
    services.declare_conflict(assignment=assignment, actor=reviewer, has_conflict=False)
    criteria = list(call.criteria.all())
    services.submit_review(
        assignment=assignment,
        actor=reviewer,
        scores={c.pk: (score, "Good") for c, score in zip(criteria, scores, strict=True)},
        comment_for_applicant="Strong plan",
    )
    return proposal, assignment


def test_a_reviewer_is_invited_declares_no_conflict_and_scores_every_criterion(
    call, system, alice, director, charlie, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        proposal, assignment = _reviewed(call, system, alice, director, charlie)
    assignment.refresh_from_db()
    assert assignment.state == ReviewAssignment.State.SUBMITTED
    assert sorted(assignment.scores.values_list("value", flat=True)) == [4, 5]
    assert any(charlie.email in message.to for message in mail.outbox)


def test_a_reviewer_reads_the_proposal_only_once_they_have_declared_no_conflict(
    client, call, system, alice, director, charlie
):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    Proposal.objects.filter(pk=proposal.pk).update(case_for_support="Our secret method, for reviewers alone.")
    proposal.refresh_from_db()
    bea = UserFactory(email="bea@example.ac.uk", full_name="Bea Colleague", organisation="Elsewhere University")
    ProposalMember.objects.create(
        proposal=proposal, email=bea.email, user=bea, token="t", invited_by=alice, accepted_at=proposal.created_at
    )
    assignment = services.assign_reviewer(proposal=proposal, email=charlie.email, actor=director)
    client.force_login(charlie)

    # Invited: their review page names the proposal and who leads it, to judge a conflict by; nothing more.
    assert not Proposal.objects.visible_to(charlie).filter(pk=proposal.pk).exists()
    assert client.get(reverse("proposals:proposal-detail", args=[proposal.pk])).status_code == 404
    page = client.get(reverse("proposals:review-detail", args=[assignment.pk])).content.decode()
    assert "Declare any conflict of interest" in page and proposal.title in page
    assert "Bea Colleague (Elsewhere University)" in page  # the team too, to judge a conflict by
    assert proposal.case_for_support not in page

    services.declare_conflict(assignment=assignment, actor=charlie, has_conflict=False)

    assert Proposal.objects.visible_to(charlie).filter(pk=proposal.pk).exists()
    assert client.get(reverse("proposals:proposal-detail", args=[proposal.pk])).status_code == 200


def test_a_declared_conflict_takes_the_reviewer_off_the_proposal(call, system, alice, director, charlie):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    assignment = services.assign_reviewer(proposal=proposal, email=charlie.email, actor=director)
    services.declare_conflict(assignment=assignment, actor=charlie, has_conflict=True, details="My student")
    assert not Proposal.objects.visible_to(charlie).filter(pk=proposal.pk).exists()
    with pytest.raises(ProposalStateError):
        services.submit_review(assignment=assignment, actor=charlie, scores={})


def test_a_review_must_score_every_criterion_from_1_to_5_with_a_comment(call, system, alice, director, charlie):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    assignment = services.assign_reviewer(proposal=proposal, email=charlie.email, actor=director)
    services.declare_conflict(assignment=assignment, actor=charlie, has_conflict=False)
    first, second = call.criteria.all()
    with pytest.raises(ValidationError) as error:
        services.submit_review(assignment=assignment, actor=charlie, scores={first.pk: (6, "x"), second.pk: (3, "")})
    assert set(error.value.message_dict) == {f"score_{first.pk}", f"comment_{second.pk}"}


def test_a_review_cannot_be_scored_before_conflicts_are_declared(call, system, alice, director, charlie):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    assignment = services.assign_reviewer(proposal=proposal, email=charlie.email, actor=director)
    scores = {c.pk: (3, "Fine") for c in call.criteria.all()}
    with pytest.raises(ProposalStateError):
        services.submit_review(assignment=assignment, actor=charlie, scores=scores)


def test_the_team_cannot_review_its_own_proposal(call, system, alice, director):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    with pytest.raises(ValidationError):
        services.assign_reviewer(proposal=proposal, email=alice.email, actor=director)


def test_reviewers_cannot_be_assigned_before_review_opens(call, system, alice, director, charlie):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.SUBMITTED)
    with pytest.raises(ProposalStateError):
        services.assign_reviewer(proposal=proposal, email=charlie.email, actor=director)


def test_an_invitation_to_someone_without_an_account_is_claimed_by_its_link(call, system, alice, director):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    assignment = services.assign_reviewer(proposal=proposal, email="new.reviewer@example.org", actor=director)
    assert assignment.reviewer is None
    newcomer = UserFactory(email="other.address@example.org")
    services.claim_review_invitation(token=assignment.token, user=newcomer)
    assignment.refresh_from_db()
    assert assignment.reviewer == newcomer
    with pytest.raises(PermissionDenied):
        services.claim_review_invitation(token=assignment.token, user=UserFactory())


def test_a_co_investigator_joins_by_invitation_and_may_then_edit_the_draft(
    call, alice, bob, django_capture_on_commit_callbacks
):
    proposal = services.create_proposal(call=call, pi=alice)
    with django_capture_on_commit_callbacks(execute=True):
        member = services.invite_member(proposal=proposal, email=bob.email, actor=alice)
    with pytest.raises(PermissionDenied):
        services.update_proposal(proposal=proposal, actor=bob, title="Bob's title")
    services.accept_membership(token=member.token, user=bob)
    services.update_proposal(proposal=proposal, actor=bob, title="Bob's title")
    proposal.refresh_from_db()
    assert proposal.title == "Bob's title"
    assert bob.email in mail.outbox[0].to


def test_a_co_investigator_invited_at_two_addresses_joins_once(call, alice, bob):
    proposal = services.create_proposal(call=call, pi=alice)
    first = services.invite_member(proposal=proposal, email=bob.email, actor=alice)
    second = services.invite_member(proposal=proposal, email="bob@another.example.org", actor=alice)
    services.accept_membership(token=first.token, user=bob)

    with pytest.raises(ValidationError, match="on this proposal's team already"):
        services.accept_membership(token=second.token, user=bob)

    second.refresh_from_db()
    assert (second.user, second.accepted_at) == (None, None)
    assert proposal.members.filter(user=bob).count() == 1


def test_a_resource_request_must_be_within_the_calls_range(call, system, alice):
    proposal = services.create_proposal(call=call, pi=alice)
    with pytest.raises(ValidationError, match="between 100 and 50,000"):
        services.save_resource_request(
            proposal=proposal,
            actor=alice,
            system=system,
            method="x",
            runs=1,
            seconds_per_run=3600,
            gpus_per_job=1,
        )


def test_a_resource_request_must_be_on_a_system_the_call_offers(call, alice):
    from tests.factories import SystemFactory

    proposal = services.create_proposal(call=call, pi=alice)
    with pytest.raises(ValidationError, match="does not offer"):
        services.save_resource_request(
            proposal=proposal,
            actor=alice,
            system=SystemFactory(slug="dawn"),
            method="x",
            runs=10,
            seconds_per_run=360000,
            gpus_per_job=1,
        )


def test_every_transition_is_recorded_with_actor_from_to_and_reason(call, system, alice, director):
    proposal = complete_proposal(services.create_proposal(call=call, pi=alice), system=system)
    services.submit_proposal(proposal=proposal, actor=alice)
    services.request_changes(proposal=proposal, actor=director, message="More detail")
    services.submit_proposal(proposal=proposal, actor=alice)
    services.confirm_eligibility(proposal=proposal, actor=director)
    services.reject_proposal(proposal=proposal, actor=director, rationale="Ranked below the line")
    history = list(ProposalTransition.objects.filter(proposal=proposal).values_list("from_state", "to_state", "actor"))
    assert history == [
        ("", State.DRAFT, alice.pk),
        (State.DRAFT, State.SUBMITTED, alice.pk),
        (State.SUBMITTED, State.CHANGES_REQUESTED, director.pk),
        (State.CHANGES_REQUESTED, State.SUBMITTED, alice.pk),
        (State.SUBMITTED, State.IN_REVIEW, director.pk),
        (State.IN_REVIEW, State.REJECTED, director.pk),
    ]
