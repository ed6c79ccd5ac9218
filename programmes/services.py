"""Writes for programmes: fund pools and naming directors. Hours never move here; that is
`allocations.ledger`."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .models import DirectorInvitation, FundPool, Programme


def create_fund_pool(
    *,
    programme: Programme,
    system,
    name: str,
    valid_from,
    valid_until,
    unused_hours_policy: str,
    grace_percent: int = 0,
    actor,
) -> FundPool:
    """Create an empty pool; its hours come only from ledger deposits."""
    pool = FundPool(
        programme=programme,
        system=system,
        name=name.strip(),
        valid_from=valid_from,
        valid_until=valid_until,
        unused_hours_policy=unused_hours_policy,
        grace_percent=grace_percent,
    )
    pool.full_clean()
    pool.save()
    return pool


def invite_director(*, programme: Programme, email: str, actor) -> DirectorInvitation:
    """Name someone a director by email: at once if they have an account, else when they verify that address.

    Either way the invitation is kept (who named whom, and when) and an email goes out once the transaction
    commits. Inviting someone whose invitation is still pending sends it again rather than storing another.
    """
    email = get_user_model().objects.normalize_email(email.strip()).lower()
    if not email:
        raise ValidationError({"email": "Enter an email address"})
    with transaction.atomic():
        user = get_user_model().objects.filter(email__iexact=email).first()
        if user is not None and programme.directors.filter(pk=user.pk).exists():
            raise ValidationError({"email": f"{email} is already a director of {programme.name}"})
        invitation = DirectorInvitation.objects.pending().filter(programme=programme, email=email).first()
        if invitation is None:
            invitation = DirectorInvitation.objects.create(programme=programme, email=email, invited_by=actor)
        if user is not None:
            _accept(invitation, user)
        from .emails import email_director_invitation

        email_director_invitation(invitation)
    return invitation


def _accept(invitation: DirectorInvitation, user) -> None:
    invitation.programme.directors.add(user)
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])


def accept_director_invitations(*, user, email: str) -> list[DirectorInvitation]:
    """Attach the pending invitations for an address the user has just proved they own."""
    with transaction.atomic():
        invitations = list(DirectorInvitation.objects.pending().select_for_update().filter(email__iexact=email.strip()))
        for invitation in invitations:
            _accept(invitation, user)
    return invitations
