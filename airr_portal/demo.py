"""The demo's users, one per role, for `make run` (never for production: every command using them needs DEBUG)."""

from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP

from .models import User

DEMO_PASSWORD = "airr-demo-password"
# A fixed TOTP secret for the demo's privileged users only, so a newcomer can sign in as a director at once.
DEMO_TOTP_SECRET = "JBSWY3DPEHPK3PXPAIRRDEMO"

DEMO_USERS = [
    # role, email, full name, needs MFA
    ("applicant", "applicant@demo.airr.example", "Ada Applicant", False),
    ("co-investigator", "coinvestigator@demo.airr.example", "Ben Co-investigator", False),
    ("reviewer", "reviewer@demo.airr.example", "Rhys Reviewer", False),
    ("technical assessor", "assessor@demo.airr.example", "Asha Assessor", True),
    ("programme director", "director@demo.airr.example", "Dara Director", True),
    ("admin", "admin@demo.airr.example", "Alex Admin", True),
]


def demo_logins():
    return [(role, email, needs_mfa) for role, email, _name, needs_mfa in DEMO_USERS]


def ensure_demo_users() -> dict[str, User]:
    """Create (or find) one verified user per role; privileged ones get the demo TOTP device. Safe to repeat."""
    users = {}
    for role, email, full_name, needs_mfa in DEMO_USERS:
        user, created = User.objects.get_or_create(
            email=email,
            # The demo admin may also edit systems, programmes and users on the admin site, which needs every
            # permission: a real service's staff are given theirs there.
            defaults={
                "full_name": full_name,
                "organisation": "AIRR demo",
                "is_staff": role == "admin",
                "is_superuser": role == "admin",
            },
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        EmailAddress.objects.get_or_create(user=user, email=email, defaults={"verified": True, "primary": True})
        if needs_mfa and not Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists():
            TOTP.activate(user, DEMO_TOTP_SECRET)
        users[role] = user
    return users
