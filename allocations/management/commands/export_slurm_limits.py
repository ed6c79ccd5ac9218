"""`manage.py export_slurm_limits --system SLUG`: the limits each account must have, as sacctmgr or JSON."""

import json

from django.core.management.base import BaseCommand, CommandError

from allocations.usage.limits import account_limits, sacctmgr_commands
from programmes.models import System


class Command(BaseCommand):
    help = "Print idempotent sacctmgr commands (or JSON) setting GrpTRESMins=gres/gpu for every account."

    def add_arguments(self, parser):
        parser.add_argument("--system", required=True)
        parser.add_argument("--format", choices=["sacctmgr", "json"], default="sacctmgr")
        parser.add_argument(
            "--limit",
            choices=["total", "remaining"],
            default="total",
            help="total for a NoDecay QOS; remaining right after Slurm resets usage (see the README)",
        )
        parser.add_argument("--target", choices=["account", "qos"], default="account")

    def handle(self, *args, system, format, limit, target, **options):
        try:
            target_system = System.objects.get(slug=system)
        except System.DoesNotExist:
            raise CommandError(f"No system has the slug {system!r}") from None
        if format == "json":
            self.stdout.write(json.dumps(account_limits(system=target_system), indent=2))
        else:
            self.stdout.write(sacctmgr_commands(system=target_system, limit=limit, target=target), ending="")
