"""The emails to directors, applicants, co-investigators and reviewers.

Each is written in the transaction of what calls for it, as it stands then, and sent once that commits
(airr_portal/mail.py), so an email is owed exactly when its cause was committed, and a broker or mail server that
is down delays it rather than loses it."""

from django.conf import settings
from django.urls import reverse

from airr_portal.mail import email_after_commit

from .models import DirectorInvitation, Proposal, ProposalMember, ReviewAssignment


def email_director_invitation(invitation: DirectorInvitation) -> None:
    """Tell the invited address it is (or, once it has an account, will be) a director of the programme."""
    programme = invitation.programme.name
    if invitation.is_pending:
        subject = f"You are invited to direct {programme}"
        body = (
            f"You have been named a programme director of {programme} on the AIRR Portal.\n\n"
            f"Create an account with this email address ({invitation.email}) and confirm it, and you will be "
            f"the programme's director straight away:\n{settings.SITE_URL}{reverse('account_signup')}\n"
        )
    else:
        subject = f"You now direct {programme}"
        body = (
            f"You have been named a programme director of {programme} on the AIRR Portal.\n\n"
            f"Sign in to see its fund pools:\n{settings.SITE_URL}{reverse('programmes:programme-list')}\n"
        )
    email_after_commit(subject, body, [invitation.email])


def _proposal_url(proposal) -> str:
    return f"{settings.SITE_URL}{reverse('proposals:proposal-detail', args=[proposal.pk])}"


def _day(day) -> str:
    return f"{day.day} {day:%B %Y}"


def _award_lines(proposal) -> str:
    """One line per awarded system: hours, window and the scheduler account (empty for a rejection)."""
    from allocations.awards import awarded_systems
    from allocations.ledger import format_gpu_hours

    return "".join(
        f"- {award.system.name}: {format_gpu_hours(award.seconds)} GPU-hours, "
        f"{_day(award.allocation.start_date)} to {_day(award.allocation.end_date)}, "
        f"scheduler account {award.allocation.scheduler_account}\n"
        for award in awarded_systems(proposal)
    )


def email_proposal_team(proposal_id: int, event: str) -> None:
    """Tell a proposal's team what just happened to it: submitted, changes requested, decided or accepted."""
    proposal = Proposal.objects.select_related("call__programme", "pi").get(pk=proposal_id)
    team = [
        proposal.pi.email,
        *proposal.members.filter(accepted_at__isnull=False).values_list("email", flat=True),
    ]
    name = f"{proposal.reference} {proposal.title}"
    link = _proposal_url(proposal)
    if event == "submitted":
        email_after_commit(
            f"Proposal submitted: {proposal.reference}",
            (
                f"Your proposal {name} to {proposal.call.title} has been submitted.\n\n"
                f"Your reference is {proposal.reference}. Follow its progress at:\n{link}\n"
            ),
            team,
        )
    elif event == "changes_requested":
        message = proposal.transitions.filter(to_state=Proposal.State.CHANGES_REQUESTED).last()
        email_after_commit(
            f"Changes requested: {proposal.reference}",
            (
                f"The directors of {proposal.call.programme.name} ask for changes to {name}:\n\n"
                f"{message.reason if message else ''}\n\nMake them and submit again at:\n{link}\n"
            ),
            team,
        )
    elif event == "decided":
        awarded = _award_lines(proposal)
        email_after_commit(
            f"Decision on {proposal.reference}",
            (
                f"A decision has been made on {name}.\n\n"
                + (f"GPU-hours awarded, for you to accept or decline as a whole:\n{awarded}\n" if awarded else "")
                + f"Read the decision, and the rationale, at:\n{link}\n"
            ),
            team,
        )
    elif event == "accepted":
        directors = list(proposal.call.programme.directors.values_list("email", flat=True))
        email_after_commit(
            f"Award accepted: {proposal.reference}",
            (f"The award to {name} has been accepted by {proposal.pi.email}.\n\n{_award_lines(proposal)}\n{link}\n"),
            team + directors,
        )


def email_member_invitation(member: ProposalMember) -> None:
    """Send a co-investigator the link that joins them to the proposal's team."""
    link = f"{settings.SITE_URL}{reverse('proposals:member-accept', args=[member.token])}"
    email_after_commit(
        "You are invited to join a proposal",
        (
            f"{member.proposal.pi.full_name or member.proposal.pi.email} invites you to be a co-investigator "
            f"on {member.proposal.title or 'a proposal'} ({member.proposal.reference}).\n\n"
            f"Sign in (or create an account) and follow this link to join:\n{link}\n"
        ),
        [member.email],
    )


def email_reviewer_invitation(assignment: ReviewAssignment) -> None:
    """Send an invited reviewer the link to the proposal, where they first declare any conflict of interest."""
    link = f"{settings.SITE_URL}{reverse('proposals:review-claim', args=[assignment.token])}"
    email_after_commit(
        "You are invited to review a proposal",
        (
            f"You are invited to review proposal {assignment.proposal.reference} to "
            f"{assignment.proposal.call.title}.\n\n"
            f"Sign in (or sign up with this email address), then follow this link. You are asked first "
            f"whether you have a conflict of interest:\n{link}\n"
        ),
        [assignment.email],
    )
