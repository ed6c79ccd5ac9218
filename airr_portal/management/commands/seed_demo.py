"""Load demo data: the two AIRR systems, two programmes with directors and a demo user for every role.

Safe to run twice: everything is looked up by its natural key before it is created.
"""

from decimal import Decimal

from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from airr_portal.models import User
from programmes.models import Programme, System

DEMO_PASSWORD = "airr-demo-password"
# A fixed TOTP secret for the demo's privileged users only, so a newcomer can sign in as a director at once.
DEMO_TOTP_SECRET = "JBSWY3DPEHPK3PXPAIRRDEMO"

DEMO_USERS = [
    # role, email, full name, needs MFA
    ("applicant", "applicant@demo.airr.example", "Ada Applicant", False),
    ("reviewer", "reviewer@demo.airr.example", "Rhys Reviewer", False),
    ("technical assessor", "assessor@demo.airr.example", "Asha Assessor", True),
    ("programme director", "director@demo.airr.example", "Dara Director", True),
    ("admin", "admin@demo.airr.example", "Alex Admin", True),
]

SYSTEMS = [
    {
        "slug": "isambard-ai",
        "name": "Isambard-AI",
        "cluster_name": "isambard-ai",
        "gpu_model": "NVIDIA GH200",
        "gpus_per_node": 4,
        "charge_factor": Decimal("1.0"),
        "time_zone": "UTC",
    },
    {
        "slug": "dawn",
        "name": "Dawn",
        "cluster_name": "dawn",
        "gpu_model": "Intel Data Center GPU Max 1550",
        "gpus_per_node": 4,
        "charge_factor": Decimal("1.0"),
        "time_zone": "UTC",
    },
]

PROGRAMMES = [
    {
        "slug": "open-source-ai-builder-fund",
        "name": "Open-Source AI Builder Fund",
        "description": "GPU time for teams building open-source AI models, tools and data sets.",
    },
    {
        "slug": "ai-for-science",
        "name": "AI for Science",
        "description": "GPU time for AI that advances research in the natural and life sciences.",
    },
]


def demo_logins():
    return [(role, email, needs_mfa) for role, email, _name, needs_mfa in DEMO_USERS]


def _demo_user(email, full_name, *, is_staff=False):
    user, created = User.objects.get_or_create(
        email=email, defaults={"full_name": full_name, "organisation": "AIRR demo", "is_staff": is_staff}
    )
    if created:
        user.set_password(DEMO_PASSWORD)
        user.save()
    EmailAddress.objects.get_or_create(user=user, email=email, defaults={"verified": True, "primary": True})
    return user


def _enrol_demo_totp(user):
    if not Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists():
        TOTP.activate(user, DEMO_TOTP_SECRET)


class Command(BaseCommand):
    help = "Create demo systems, programmes and one user per role (safe to run twice)."

    @transaction.atomic
    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo creates users with a published password: it runs only with DEBUG on."
            )
        systems = {}
        for values in SYSTEMS:
            slug = values["slug"]
            systems[slug], _ = System.objects.get_or_create(slug=slug, defaults=values)
        programmes = {}
        for values in PROGRAMMES:
            programmes[values["slug"]], _ = Programme.objects.get_or_create(
                slug=values["slug"], defaults=values
            )

        users = {}
        for role, email, full_name, needs_mfa in DEMO_USERS:
            users[role] = _demo_user(email, full_name, is_staff=(role == "admin"))
            if needs_mfa:
                _enrol_demo_totp(users[role])
        for programme in programmes.values():
            programme.directors.add(users["programme director"])
        systems["isambard-ai"].assessors.add(users["technical assessor"])
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data ready: {len(systems)} systems, {len(programmes)} programmes, {len(users)} demo users."
            )
        )
