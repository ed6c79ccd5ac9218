"""`manage.py reconcile_usage --system SLUG`: charge what changed now, as the beat schedule would."""

from django.core.management.base import BaseCommand, CommandError

from allocations.usage.reconcile import reconcile_system
from allocations.usage.thresholds import check_thresholds
from programmes.models import System


class Command(BaseCommand):
    help = "Charge a system's changed job records to the ledger, then check thresholds."

    def add_arguments(self, parser):
        parser.add_argument("--system", required=True)

    def handle(self, *args, system, **options):
        try:
            target = System.objects.get(slug=system)
        except System.DoesNotExist:
            raise CommandError(f"No system has the slug {system!r}") from None
        run = reconcile_system(system=target)
        if run is None:
            self.stdout.write("Nothing new to charge.")
        else:
            self.stdout.write(
                f"Run {run.pk}: {run.records} job records, {run.allocations} allocations, "
                f"{run.charged_seconds} GPU-seconds net."
            )
        check_thresholds(system=target)
