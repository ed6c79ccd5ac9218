"""A team member's own share of an allocation's usage: the jobs run under the scheduler usernames its PI recorded
for them (DESIGN.md, roles: a team member "sees the project, its usage and their own share").

The portal knows its people by email and the scheduler by username, and the two need not match (a site may give
one person a username per project), so the PI says which usernames are whose, per allocation, since each system
names its users its own way. The PI records their own too: a name of theirs given to a co-investigator would show
that co-investigator the PI's jobs.
"""

from __future__ import annotations

from django.db import transaction

from airr_portal import roles
from allocations.models import Allocation, MemberSchedulerUser
from programmes.models import ProposalMember

# More than a person needs on one system, few enough to list on the page.
USERNAMES_PER_MEMBER = 10


def co_investigators(allocation: Allocation) -> list:
    """The accepted co-investigators of the proposal the allocation was awarded to, each once, in the order they
    joined."""
    if allocation.proposal_id is None:
        return []
    memberships = (
        ProposalMember.objects.filter(proposal_id=allocation.proposal_id, accepted_at__isnull=False)
        .exclude(user=None)
        .exclude(user_id=allocation.holder_id)
        .select_related("user")
        .order_by("accepted_at", "pk")
    )
    # One person may have accepted invitations sent to two of their addresses: they are one member, not two.
    return list({membership.user_id: membership.user for membership in memberships}.values())


def sees_every_member(user, allocation: Allocation) -> bool:
    """Its holder, its programme's directors and admins see every member's jobs; a co-investigator their own."""
    return (
        roles.is_admin(user)
        or allocation.holder_id == user.pk
        or allocation.pool.programme.directors.filter(pk=user.pk).exists()
    )


def records_usernames(user, allocation: Allocation) -> bool:
    """Whether the user records the co-investigators' usernames: the allocation's holder and admins."""
    return allocation.holder_id == user.pk or roles.is_admin(user)


def own_usernames(user, allocation: Allocation) -> list[str] | None:
    """The scheduler usernames whose jobs `user` sees on `allocation`, or None when they see every member's."""
    if sees_every_member(user, allocation):
        return None
    return list(MemberSchedulerUser.objects.filter(allocation=allocation, user=user).values_list("username", flat=True))


def usernames_by_member(allocation: Allocation) -> dict[int, list[str]]:
    """The usernames recorded for each person on the allocation (its PI and co-investigators), by user id."""
    recorded: dict[int, list[str]] = {}
    for user_id, username in MemberSchedulerUser.objects.filter(allocation=allocation).values_list(
        "user_id", "username"
    ):
        recorded.setdefault(user_id, []).append(username)
    return recorded


def parse_usernames(text: str) -> list[str]:
    """Usernames separated by commas or spaces; ValueError with the reason if one cannot be a scheduler's.

    Any printable name is taken as sacct prints it (a site's directory may give `alice@example.ac.uk`): it is only
    compared with the User of the jobs, never put into a command.
    """
    names = list(dict.fromkeys(text.replace(",", " ").split()))
    for name in names:
        if len(name) > 64:
            raise ValueError(f"'{name[:20]}…' is longer than 64 characters: no scheduler username is")
        if not name.isprintable():
            raise ValueError("A username holds a character that is not printable")
    if len(names) > USERNAMES_PER_MEMBER:
        raise ValueError(f"Enter at most {USERNAMES_PER_MEMBER} usernames for one person")
    return names


@transaction.atomic
def set_member_usernames(*, allocation: Allocation, usernames: dict[int, list[str]]) -> None:
    """Record the usernames of the PI and each co-investigator (by user id), replacing those recorded before.

    The caller checks that each user is the PI or a co-investigator and that no name is given to two of them; the
    unique constraint refuses it anyway.
    """
    # Locked so that two saves of the same page one after the other leave the second's names, not a mixture.
    Allocation.objects.select_for_update().filter(pk=allocation.pk).first()
    MemberSchedulerUser.objects.filter(allocation=allocation).delete()
    MemberSchedulerUser.objects.bulk_create(
        MemberSchedulerUser(allocation=allocation, user_id=user_id, username=name)
        for user_id, names in usernames.items()
        for name in names
    )
