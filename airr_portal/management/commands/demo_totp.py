"""Print the current two-factor code of the demo's privileged users (development only)."""

import time

from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from airr_portal.demo import DEMO_TOTP_SECRET, demo_logins


class Command(BaseCommand):
    help = "Print the current TOTP code for the demo director, assessor and admin (DEBUG only)."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("demo_totp runs only with DEBUG on.")
        code = format_hotp_value(hotp_value(DEMO_TOTP_SECRET, int(time.time()) // 30))
        emails = ", ".join(email for _role, email, needs_mfa in demo_logins() if needs_mfa)
        self.stdout.write(f"{code}  (valid for the next few seconds for {emails})")
