"""Who a user is to the portal, asked the same way by every view, endpoint and template.

Roles are not flags on the user: a programme director is whoever a programme names, a technical assessor whoever a
system names, a reviewer whoever a proposal's director assigned. Admins are service staff (`is_staff`). This module
asks through reverse relations only, so it never imports the apps that depend on it.
"""

from django.contrib.auth.models import AnonymousUser

ROLE_ADMIN = "admin"
ROLE_DIRECTOR = "programme director"
ROLE_ASSESSOR = "technical assessor"
ROLE_REVIEWER = "reviewer"
ROLE_APPLICANT = "applicant"


def is_admin(user) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def is_programme_director(user) -> bool:
    return bool(user.is_authenticated and user.directed_programmes.exists())


def is_technical_assessor(user) -> bool:
    return bool(user.is_authenticated and user.assessed_systems.exists())


def is_reviewer(user) -> bool:
    return bool(user.is_authenticated and hasattr(user, "review_assignments") and user.review_assignments.exists())


def manages_programmes(user) -> bool:
    """Admins and programme directors: they see programmes and fund pools (directors only their own)."""
    return is_admin(user) or is_programme_director(user)


def works_on_proposals(user) -> bool:
    """Who uses the proposal queue: admins, directors (their programmes) and assessors (their systems)."""
    return manages_programmes(user) or is_technical_assessor(user)


def operates_usage(user) -> bool:
    """Who operates usage ingestion: admins, and each system's technical assessors for their own systems."""
    return is_admin(user) or is_technical_assessor(user)


def must_use_mfa(user) -> bool:
    """Directors, assessors and admins move or judge national resources, so a password alone is not enough."""
    return is_admin(user) or is_programme_director(user) or is_technical_assessor(user)


def has_mfa(user) -> bool:
    if isinstance(user, AnonymousUser) or not user.is_authenticated:
        return False
    from allauth.mfa.models import Authenticator

    return Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


def roles_of(user) -> list[str]:
    """The roles a user holds now, most powerful first; every signed-in user is at least an applicant."""
    if not user.is_authenticated:
        return []
    roles = []
    if is_admin(user):
        roles.append(ROLE_ADMIN)
    if is_programme_director(user):
        roles.append(ROLE_DIRECTOR)
    if is_technical_assessor(user):
        roles.append(ROLE_ASSESSOR)
    if is_reviewer(user):
        roles.append(ROLE_REVIEWER)
    roles.append(ROLE_APPLICANT)
    return roles
