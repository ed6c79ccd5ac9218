"""`manage.py ingest_sacct FILE --system SLUG`: ingest a file of sacct output, with progress."""

import os

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from allocations.usage.ingest import IngestError, ingest_sacct
from allocations.usage.reconcile import reconcile_system
from programmes.models import System


class Command(BaseCommand):
    help = "Ingest a file of sacct output (--parsable2, --parsable, any delimiter, --json; gzip) for a system."

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--system", required=True, help="The system's slug, e.g. isambard-ai")
        parser.add_argument("--delimiter", help="The field delimiter, when it cannot be detected")
        parser.add_argument("--columns", help="Comma-separated column names, for output made with --noheader")
        parser.add_argument("--no-reconcile", action="store_true", help="Record the jobs but do not charge them yet")
        parser.add_argument("--quiet", action="store_true", help="No progress bar")

    def handle(self, *args, file, system, delimiter, columns, no_reconcile, quiet, **options):
        try:
            target = System.objects.get(slug=system)
        except System.DoesNotExist:
            raise CommandError(f"No system has the slug {system!r}") from None
        try:
            size = os.path.getsize(file)
            handle = open(file, "rb")  # noqa: SIM115 (closed below, after the bar)
        except OSError as problem:
            raise CommandError(f"Cannot read {file}: {problem.strerror}") from None
        bar = tqdm(total=size, unit="B", unit_scale=True, desc="storing", disable=quiet, file=self.stderr)
        with handle:
            try:
                outcome = ingest_sacct(
                    system=target,
                    payload=_Reporting(handle, bar),
                    source="command",
                    delimiter=delimiter,
                    columns=[name.strip() for name in columns.split(",")] if columns else None,
                    progress=self._reading_bar(bar, quiet),
                )
            except IngestError as problem:
                raise CommandError(f"The file cannot be read: {problem}") from None
            finally:
                bar.close()
        batch = outcome.batch
        if outcome.is_duplicate:
            self.stdout.write(f"This file was already ingested as batch {batch.pk}; nothing changed.")
        counts = ", ".join(f"{value} {name.replace('_', ' ')}" for name, value in batch.counts().items())
        self.stdout.write(f"Batch {batch.pk}: {counts}.")
        for row in batch.rejected_rows.filter(replayed_at__isnull=True)[:20]:
            self.stdout.write(f"  line {row.line_number}: {row.reason}")
        if not no_reconcile and not outcome.is_duplicate:
            run = reconcile_system(system=target)
            if run is not None:
                self.stdout.write(f"Charged {run.records} job records to {run.allocations} allocations.")

    def _reading_bar(self, bar, quiet):
        state = {"bar": None}

        def progress(size: int) -> None:
            if state["bar"] is None:
                bar.close()
                state["bar"] = tqdm(unit="B", unit_scale=True, desc="reading", disable=quiet, file=self.stderr)
            state["bar"].update(size)

        return progress


class _Reporting:
    """A file that moves a progress bar as it is read."""

    def __init__(self, handle, bar):
        self.handle = handle
        self.bar = bar

    def read(self, size=-1):
        data = self.handle.read(size)
        self.bar.update(len(data))
        return data
