"""`manage.py ingest_sacct FILE --system SLUG`: ingest a file of sacct output, with progress."""

import os

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from allocations.models import IngestBatch
from allocations.usage.ingest import (
    IngestError,
    PayloadExpandsTooFar,
    PayloadTooLargeToReceive,
    ingest_sacct,
    receiving_limit,
)
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
        # The batch keeps the delimiter in four characters, as the API and the upload page allow: a longer one
        # would fail as the batch is saved, with a database traceback and the file stored for nothing.
        if delimiter and len(delimiter) > 4:
            raise CommandError("Give the delimiter as 1 to 4 characters")
        try:
            size = os.path.getsize(file)
            handle = open(file, "rb")  # noqa: SIM115 (closed below, after the bar)
        except OSError as problem:
            raise CommandError(f"Cannot read {file}: {problem.strerror}") from None
        # A file's size is known before a byte is copied; a device or a pipe (/dev/stdin) tells none, and
        # ingest_sacct stops copying it at the same limit.
        if size > receiving_limit(IngestBatch.Source.COMMAND):
            handle.close()
            raise _too_large(file)
        bar = tqdm(total=size, unit="B", unit_scale=True, desc="storing", disable=quiet, file=_BarFile(self.stderr))
        reading = self._reading_bar(bar, quiet)
        with handle:
            try:
                outcome = ingest_sacct(
                    system=target,
                    payload=_Reporting(handle, bar),
                    source="command",
                    delimiter=delimiter,
                    columns=[name.strip() for name in columns.split(",")] if columns else None,
                    progress=reading,
                )
            except PayloadTooLargeToReceive:
                raise _too_large(file) from None
            except PayloadExpandsTooFar as problem:
                # Kept, as the API keeps it: read again from its page, it may fit a limit raised since.
                raise CommandError(
                    f"{problem}. No job was recorded: the file is kept as a failed batch, which its page can have "
                    "read again if the limit is raised"
                ) from None
            except IngestError as problem:
                raise CommandError(f"The file cannot be read: {problem}") from None
            finally:
                bar.close()
                reading.close()
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
        return _ReadingBar(bar, quiet=quiet, file=_BarFile(self.stderr))


def _too_large(file: str) -> CommandError:
    limit = receiving_limit(IngestBatch.Source.COMMAND) // (1024 * 1024)
    return CommandError(
        f"{file} is larger than {limit} MB, the most a payload may be once unzipped "
        "(INGEST_MAX_UNCOMPRESSED_BYTES): split it by date (sacct -S/-E). Nothing was stored"
    )


class _ReadingBar:
    """The uncompressed bytes read, on a bar of its own that replaces the storing bar once reading starts."""

    def __init__(self, storing, *, quiet, file):
        self.storing = storing
        self.quiet = quiet
        self.file = file
        self.bar = None

    def __call__(self, size: int) -> None:
        if self.bar is None:
            self.storing.close()
            self.bar = tqdm(unit="B", unit_scale=True, desc="reading", disable=self.quiet, file=self.file)
        self.bar.update(size)

    def close(self) -> None:
        # Closing draws the bar's last figure: tqdm redraws at most ten times a second, so it may lag behind.
        if self.bar is not None:
            self.bar.close()


class _BarFile:
    """The command's stderr for tqdm: each redraw written as it is, without the newline Django's wrapper adds
    to every write (which would print a line per redraw instead of one bar)."""

    def __init__(self, out):
        self.out = out

    def write(self, text: str) -> None:
        self.out.write(text, ending="")

    def flush(self) -> None:
        self.out.flush()


class _Reporting:
    """A file that moves a progress bar as it is read."""

    def __init__(self, handle, bar):
        self.handle = handle
        self.bar = bar

    def read(self, size=-1):
        data = self.handle.read(size)
        self.bar.update(len(data))
        return data
