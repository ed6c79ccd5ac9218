"""Proposal services: every change to a proposal, its team, its review and its state is one function here.

Each service takes keyword-only arguments, runs in one transaction, checks that the actor may act, and raises:
- `ProposalStateError` when the action is not allowed in the proposal's current state (409 in the API);
- `django.core.exceptions.ValidationError` for bad input, with messages for the person who typed it;
- `django.core.exceptions.PermissionDenied` when the actor may not act at all.

Every state change locks the proposal's row (`select_for_update`) before it reads the state, so two directors
deciding at once cannot both succeed: the second waits, then sees the state the first left. Every state change
is recorded as a `ProposalTransition` (actor, time, from, to, reason). Emails go to Celery after commit.

Awards (where GPU-hours move) live in `allocations.awards`, which uses `lock_proposal` and
`record_transition`.
"""

import calendar
import secrets
from datetime import date, timedelta

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from airr_portal import roles
from airr_portal.validators import LATEST_DATE

from .models import (
    Call,
    Criterion,
    Decision,
    Proposal,
    ProposalMember,
    ProposalTransition,
    ResourceRequest,
    ReviewAssignment,
    Score,
    System,
    TechnicalAssessment,
)

State = Proposal.State
PDF_MAX_BYTES = 10 * 1024 * 1024
WITHDRAWABLE = (State.DRAFT, State.SUBMITTED, State.CHANGES_REQUESTED, State.IN_REVIEW)


class ProposalStateError(Exception):
    """The action is not allowed in the proposal's current state; the message says why, for a person."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def add_months(start: date, months: int) -> date:
    """The last day of a window of `months` months starting on `start` (1 Jan + 12 months → 31 Dec)."""
    month = start.month - 1 + months
    year, month = start.year + month // 12, month % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return date(year, month, day) - timedelta(days=1)


# Who may act ------------------------------------------------------------------------------------------------


def is_team_member(proposal: Proposal, user) -> bool:
    if not user.is_authenticated:
        return False
    return proposal.pi_id == user.pk or proposal.members.filter(user=user, accepted_at__isnull=False).exists()


def can_direct(proposal: Proposal, user) -> bool:
    """Admins and the programme's directors, unless they are on the proposal's team: nobody decides their own."""
    return (roles.is_admin(user) or proposal.call.programme.is_directed_by(user)) and not is_team_member(proposal, user)


def can_assess(proposal: Proposal, system: System, user) -> bool:
    """Admins and the system's assessors, unless they are on the proposal's team: nobody assesses their own."""
    return (roles.is_admin(user) or system.assessors.filter(pk=user.pk).exists()) and not is_team_member(proposal, user)


def _require(allowed: bool) -> None:
    if not allowed:
        raise PermissionDenied


# Transitions ------------------------------------------------------------------------------------------------


def lock_proposal(proposal: Proposal, *, allowed: tuple[str, ...], action: str) -> Proposal:
    """Lock the proposal's row and check its state; call inside a transaction. Returns the row as locked."""
    locked = Proposal.objects.select_for_update().select_related("call__programme").get(pk=proposal.pk)
    if locked.state not in allowed:
        raise ProposalStateError(f"You cannot {action} a proposal that is {locked.get_state_display().lower()}")
    return locked


def record_transition(proposal: Proposal, *, to: str, actor, reason: str = "", **changes) -> ProposalTransition:
    """Move a locked proposal to `to` (saving `changes` with it) and record who, when, from, to and why."""
    now = timezone.now()
    transition = ProposalTransition.objects.create(
        proposal=proposal, actor=actor, from_state=proposal.state, to_state=to, reason=reason.strip(), at=now
    )
    proposal.state = to
    for name, value in changes.items():
        setattr(proposal, name, value)
    proposal.save(update_fields=["state", "updated_at", *changes])
    return transition


def notify(event: str, proposal_id: int) -> None:
    """Write the email for `event` to the proposal's team, sent once the surrounding transaction commits."""
    from .emails import email_proposal_team

    email_proposal_team(proposal_id, event)


# Drafting ---------------------------------------------------------------------------------------------------


def create_proposal(*, call: Call, pi, title: str = "") -> Proposal:
    """Start a draft under an open call, with its reference taken from its primary key (unique under load)."""
    today = timezone.localdate()
    if not call.is_open_on(today):
        raise ProposalStateError(f"{call.title} is not open for proposals")
    with transaction.atomic():
        proposal = Proposal.objects.create(call=call, pi=pi, title=title.strip())
        # The primary key comes from the database's sequence, so two drafts started at once never share one.
        proposal.reference = f"AIRR-{today.year}-{proposal.pk:05d}"
        proposal.save(update_fields=["reference"])
        ProposalTransition.objects.create(
            proposal=proposal,
            actor=pi,
            from_state="",
            to_state=State.DRAFT,
            reason="Started",
            at=timezone.now(),
        )
    return proposal


EDITABLE_FIELDS = {
    "title",
    "summary",
    "research_field",
    "keywords",
    "start_date",
    "duration_months",
    "case_for_support",
    "case_for_support_pdf",
    "data_statement",
    "ethics",
    "ethics_statement",
    "trusted_research_confirmed",
}


def _check_editable(proposal: Proposal, actor) -> Proposal:
    _require(is_team_member(proposal, actor))
    return lock_proposal(proposal, allowed=Proposal.EDITABLE_STATES, action="change")


def check_pdf(upload) -> None:
    """A case for support must be a PDF of at most 10 MB, by its content, not its name."""
    if upload.size > PDF_MAX_BYTES:
        raise ValidationError({"case_for_support_pdf": "The PDF must be smaller than 10 MB"})
    upload.seek(0)
    head = upload.read(1024)
    upload.seek(0)
    if b"%PDF-" not in head:
        raise ValidationError({"case_for_support_pdf": "The selected file must be a PDF"})


def check_timeline(call: Call, start_date: date | None, duration_months: int | None) -> None:
    errors = {}
    if duration_months is not None and not 1 <= duration_months <= call.max_duration_months:
        errors["duration_months"] = f"Duration must be between 1 and {call.max_duration_months} months"
    if start_date is not None and start_date < timezone.localdate():
        errors["start_date"] = "Start date must be today or in the future"
    elif start_date is not None and start_date > LATEST_DATE:
        errors["start_date"] = "Start date must be in 2099 or before"
    if errors:
        raise ValidationError(errors)


def update_proposal(*, proposal: Proposal, actor, **fields) -> Proposal:
    """Save answers to a draft (or one with changes requested); PI and accepted co-investigators may."""
    unknown = set(fields) - EDITABLE_FIELDS
    if unknown:
        raise TypeError(f"not editable: {sorted(unknown)}")
    if fields.get("case_for_support_pdf"):
        check_pdf(fields["case_for_support_pdf"])
    if "start_date" in fields or "duration_months" in fields:
        check_timeline(proposal.call, fields.get("start_date"), fields.get("duration_months"))
    with transaction.atomic():
        locked = _check_editable(proposal, actor)
        for name, value in fields.items():
            setattr(locked, name, value.strip() if isinstance(value, str) else value)
        locked.save()
    return locked


def accept_terms(*, proposal: Proposal, actor) -> Proposal:
    with transaction.atomic():
        locked = _check_editable(proposal, actor)
        locked.terms_accepted_at = timezone.now()
        locked.save(update_fields=["terms_accepted_at", "updated_at"])
    return locked


def save_resource_request(
    *,
    proposal: Proposal,
    actor,
    system: System,
    method: str,
    runs: int,
    seconds_per_run: int,
    gpus_per_job: int,
    software: str = "",
) -> ResourceRequest:
    """Ask for GPU-hours on one of the call's systems, within its range; replaces an earlier request there."""
    from allocations.ledger import format_gpu_hours

    call = proposal.call
    if not call.systems().filter(pk=system.pk).exists():
        raise ValidationError({"system": f"{call.title} does not offer {system.name}"})
    if gpus_per_job > system.gpus_per_node * 1024:
        raise ValidationError({"gpus_per_job": "GPUs per job is more than the system has"})
    total = runs * seconds_per_run
    if not call.min_seconds <= total <= call.max_seconds:
        raise ValidationError(
            {
                "runs": (
                    f"Runs × GPU-hours per run is {format_gpu_hours(total)} GPU-hours: it must be between "
                    f"{format_gpu_hours(call.min_seconds)} and {format_gpu_hours(call.max_seconds)}"
                )
            }
        )
    with transaction.atomic():
        _check_editable(proposal, actor)
        request, _ = ResourceRequest.objects.update_or_create(
            proposal=proposal,
            system=system,
            defaults={
                "method": method.strip(),
                "runs": runs,
                "seconds_per_run": seconds_per_run,
                "gpus_per_job": gpus_per_job,
                "software": software.strip(),
            },
        )
    return request


def remove_resource_request(*, request: ResourceRequest, actor) -> None:
    with transaction.atomic():
        _check_editable(request.proposal, actor)
        request.delete()


def invite_member(*, proposal: Proposal, email: str, actor) -> ProposalMember:
    """Invite a co-investigator by email; they join when they follow the emailed link while signed in."""
    email = get_user_model().objects.normalize_email(email.strip()).lower()
    if email == proposal.pi.email.lower():
        raise ValidationError({"email": "You are already on this proposal as its principal investigator"})
    with transaction.atomic():
        _check_editable(proposal, actor)
        if proposal.members.filter(email=email).exists():
            raise ValidationError({"email": f"{email} has already been invited"})
        member = ProposalMember.objects.create(
            proposal=proposal, email=email, token=secrets.token_urlsafe(32), invited_by=actor
        )
        from .emails import email_member_invitation

        email_member_invitation(member)
    return member


def accept_membership(*, token: str, user) -> ProposalMember:
    """Join a proposal's team through an invitation link; the link works once."""
    with transaction.atomic():
        member = ProposalMember.objects.select_for_update().filter(token=token).first()
        if member is None or (member.accepted_at is not None and member.user_id != user.pk):
            raise PermissionDenied
        if member.proposal.pi_id == user.pk:
            raise ValidationError("You are this proposal's principal investigator already")
        joined = ProposalMember.objects.filter(proposal_id=member.proposal_id, user=user, accepted_at__isnull=False)
        if member.accepted_at is None and joined.exists():
            # Invited at two addresses: one person is one member (the PI names each member's scheduler usernames).
            raise ValidationError("You are on this proposal's team already")
        if member.accepted_at is None:
            member.user = user
            member.accepted_at = timezone.now()
            member.save(update_fields=["user", "accepted_at"])
    return member


def remove_member(*, member: ProposalMember, actor) -> None:
    with transaction.atomic():
        locked = _check_editable(member.proposal, actor)
        _require(locked.pi_id == actor.pk)
        member.delete()


# Sections and submission ------------------------------------------------------------------------------------

COMPLETED, INCOMPLETE, NOT_STARTED, OPTIONAL = "Completed", "Incomplete", "Not yet started", "Optional"


def section_statuses(proposal: Proposal, *, requests=None, members=None) -> dict[str, str]:
    """Each task-list section's status, from the proposal's saved answers."""

    def status(*answers):
        given = sum(1 for answer in answers if answer not in (None, "", False))
        if given == len(answers):
            return COMPLETED
        return INCOMPLETE if given else NOT_STARTED

    requests = list(proposal.resource_requests.all()) if requests is None else requests
    members = list(proposal.members.all()) if members is None else members
    ethics_needs_statement = proposal.ethics in (Proposal.Ethics.APPROVED, Proposal.Ethics.PENDING)
    return {
        "details": status(proposal.title, proposal.summary, proposal.research_field, proposal.keywords),
        "team": COMPLETED if members else OPTIONAL,
        "resources": COMPLETED if requests else NOT_STARTED,
        "timeline": status(proposal.start_date, proposal.duration_months),
        "case": status(proposal.case_for_support),
        "data": status(
            proposal.data_statement,
            proposal.ethics,
            proposal.ethics_statement if ethics_needs_statement else True,
            proposal.trusted_research_confirmed,
        ),
        "declarations": COMPLETED if proposal.terms_accepted_at else NOT_STARTED,
    }


SECTION_NAMES = {
    "details": "Project details",
    "team": "Team",
    "resources": "Resources requested",
    "timeline": "Timeline",
    "case": "Case for support",
    "data": "Data, ethics and trusted research",
    "declarations": "Declarations and terms",
}


def submit_proposal(*, proposal: Proposal, actor) -> Proposal:
    """The PI sends a complete draft (or a proposal with changes requested) to the programme's directors."""
    _require(proposal.pi_id == actor.pk)
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=Proposal.EDITABLE_STATES, action="submit")
        incomplete = [
            SECTION_NAMES[name]
            for name, status in section_statuses(locked).items()
            if status in (INCOMPLETE, NOT_STARTED)
        ]
        if incomplete:
            raise ValidationError(f"Complete every section before you submit: {', '.join(incomplete)}")
        if locked.state == State.DRAFT and not locked.call.is_open_on(timezone.localdate()):
            raise ProposalStateError(f"{locked.call.title} closed on {locked.call.closes_on:%-d %B %Y}")
        reason = "Resubmitted with changes" if locked.state == State.CHANGES_REQUESTED else "Submitted"
        record_transition(locked, to=State.SUBMITTED, actor=actor, reason=reason, submitted_at=timezone.now())
        notify("submitted", locked.pk)
    return locked


def withdraw_proposal(*, proposal: Proposal, actor, reason: str = "") -> Proposal:
    """The PI takes a proposal back at any point before a decision."""
    _require(proposal.pi_id == actor.pk)
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=WITHDRAWABLE, action="withdraw")
        record_transition(locked, to=State.WITHDRAWN, actor=actor, reason=reason or "Withdrawn by the applicant")
    return locked


# Director's checks ------------------------------------------------------------------------------------------


def confirm_eligibility(*, proposal: Proposal, actor, reason: str = "") -> Proposal:
    """A director or admin finds a submitted proposal eligible, which opens its review."""
    _require(can_direct(proposal, actor))
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=(State.SUBMITTED,), action="check the eligibility of")
        record_transition(locked, to=State.IN_REVIEW, actor=actor, reason=reason or "Eligible")
    return locked


def request_changes(*, proposal: Proposal, actor, message: str) -> Proposal:
    """Send a submitted or in-review proposal back to its team with a message saying what to change."""
    _require(can_direct(proposal, actor))
    if not message.strip():
        raise ValidationError({"message": "Enter what the applicant needs to change"})
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=(State.SUBMITTED, State.IN_REVIEW), action="request changes to")
        record_transition(locked, to=State.CHANGES_REQUESTED, actor=actor, reason=message)
        notify("changes_requested", locked.pk)
    return locked


def reject_proposal(*, proposal: Proposal, actor, rationale: str) -> Proposal:
    """Decide not to fund a proposal (ineligible, or not ranked high enough), with the rationale it reads."""
    _require(can_direct(proposal, actor))
    if not rationale.strip():
        raise ValidationError({"rationale": "Enter the rationale for the decision"})
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=(State.SUBMITTED, State.IN_REVIEW), action="reject")
        Decision.objects.create(
            proposal=locked,
            outcome=Decision.Outcome.REJECT,
            rationale=rationale.strip(),
            decided_by=actor,
            decided_at=timezone.now(),
        )
        record_transition(locked, to=State.REJECTED, actor=actor, reason=rationale)
        notify("decided", locked.pk)
    return locked


def record_assessment(
    *, proposal: Proposal, system: System, actor, outcome: str, notes: str = ""
) -> TechnicalAssessment:
    """An assessor of `system` says whether the request on it is feasible; assessing again replaces it."""
    _require(can_assess(proposal, system, actor))
    if outcome not in TechnicalAssessment.Outcome.values:
        raise ValidationError({"outcome": "Select whether the request is feasible"})
    if outcome != TechnicalAssessment.Outcome.FEASIBLE and not notes.strip():
        raise ValidationError({"notes": "Enter the conditions, or why it is not feasible"})
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=(State.SUBMITTED, State.IN_REVIEW), action="assess")
        if not locked.resource_requests.filter(system=system).exists():
            raise ValidationError({"system": f"This proposal asks for no time on {system.name}"})
        assessment, _ = TechnicalAssessment.objects.update_or_create(
            proposal=locked,
            system=system,
            defaults={
                "assessor": actor,
                "outcome": outcome,
                "notes": notes.strip(),
                "assessed_at": timezone.now(),
            },
        )
    return assessment


# Peer review ------------------------------------------------------------------------------------------------


def assign_reviewer(*, proposal: Proposal, email: str, actor) -> ReviewAssignment:
    """Ask someone to review a proposal: an existing user at once, anyone else through an emailed link."""
    _require(can_direct(proposal, actor))
    email = get_user_model().objects.normalize_email(email.strip()).lower()
    if not email:
        raise ValidationError({"email": "Enter an email address"})
    with transaction.atomic():
        locked = lock_proposal(proposal, allowed=(State.IN_REVIEW,), action="assign reviewers to")
        if email == locked.pi.email.lower() or locked.members.filter(email=email).exists():
            raise ValidationError({"email": "The proposal's own team cannot review it"})
        if locked.review_assignments.filter(email=email).exists():
            raise ValidationError({"email": f"{email} is already a reviewer of this proposal"})
        reviewer = get_user_model().objects.filter(email__iexact=email).first()
        assignment = ReviewAssignment.objects.create(
            proposal=locked, email=email, reviewer=reviewer, token=secrets.token_urlsafe(32), invited_by=actor
        )
        from .emails import email_reviewer_invitation

        email_reviewer_invitation(assignment)
    return assignment


def claim_review_invitation(*, token: str, user) -> ReviewAssignment:
    """Attach the signed-in user to the review an emailed link invited them to; the link works once."""
    with transaction.atomic():
        assignment = ReviewAssignment.objects.select_for_update().filter(token=token).first()
        if assignment is None or (assignment.reviewer_id and assignment.reviewer_id != user.pk):
            raise PermissionDenied
        if is_team_member(assignment.proposal, user):
            raise PermissionDenied
        if assignment.reviewer_id is None:
            assignment.reviewer = user
            assignment.save(update_fields=["reviewer"])
    return assignment


def _lock_assignment(assignment: ReviewAssignment, actor, allowed: tuple[str, ...], action: str):
    _require(assignment.reviewer_id == actor.pk)
    locked = ReviewAssignment.objects.select_for_update().get(pk=assignment.pk)
    if locked.state not in allowed:
        raise ProposalStateError(f"You cannot {action}: {locked.get_state_display().lower()}")
    lock_proposal(locked.proposal, allowed=(State.IN_REVIEW,), action=action)
    return locked


def declare_conflict(*, assignment: ReviewAssignment, actor, has_conflict: bool, details: str = "") -> ReviewAssignment:
    """The reviewer's first step: a declared conflict takes them off the proposal for good."""
    if has_conflict and not details.strip():
        raise ValidationError({"details": "Describe the conflict of interest"})
    with transaction.atomic():
        locked = _lock_assignment(assignment, actor, (ReviewAssignment.State.INVITED,), "declare interests")
        locked.conflict_declared = has_conflict
        locked.conflict_details = details.strip()
        locked.state = ReviewAssignment.State.CONFLICTED if has_conflict else ReviewAssignment.State.READY
        locked.save(update_fields=["conflict_declared", "conflict_details", "state"])
    return locked


def submit_review(
    *,
    assignment: ReviewAssignment,
    actor,
    scores: dict[int, tuple[int, str]],
    comment_for_applicant: str = "",
) -> ReviewAssignment:
    """Score every criterion of the call from 1 to 5, with a comment.

    `scores` maps each criterion's id to (score, comment).
    """
    with transaction.atomic():
        locked = _lock_assignment(assignment, actor, (ReviewAssignment.State.READY,), "submit this review")
        criteria = list(Criterion.objects.filter(call_id=assignment.proposal.call_id))
        errors = {}
        for criterion in criteria:
            value, comment = scores.get(criterion.pk, (None, ""))
            if value not in (1, 2, 3, 4, 5):
                errors[f"score_{criterion.pk}"] = f"Select a score for {criterion.name}"
            elif not (comment or "").strip():
                errors[f"comment_{criterion.pk}"] = f"Enter a comment on {criterion.name}"
        if errors:
            raise ValidationError(errors)
        Score.objects.bulk_create(
            Score(
                assignment=locked,
                criterion=criterion,
                value=scores[criterion.pk][0],
                comment=scores[criterion.pk][1].strip(),
            )
            for criterion in criteria
        )
        locked.comment_for_applicant = comment_for_applicant.strip()
        locked.state = ReviewAssignment.State.SUBMITTED
        locked.submitted_at = timezone.now()
        locked.save(update_fields=["comment_for_applicant", "state", "submitted_at"])
    return locked


def release_review(*, assignment: ReviewAssignment, actor, released: bool = True) -> ReviewAssignment:
    """Show (or hide) a submitted review's comments to the applicant; never the reviewer's name or scores."""
    _require(can_direct(assignment.proposal, actor))
    with transaction.atomic():
        locked = ReviewAssignment.objects.select_for_update().get(pk=assignment.pk)
        if locked.state != ReviewAssignment.State.SUBMITTED:
            raise ProposalStateError("Only a submitted review can be released to the applicant")
        locked.released_to_applicant = released
        locked.save(update_fields=["released_to_applicant"])
    return locked
