"""Ingest sacct payloads: store each raw, read its rows, record each run once per (system, JobIDRaw, Start).

Guarantees (DESIGN.md, "Usage: from the scheduler to the ledger"):
- the payload is on disk as received, and its batch row committed, before a single row is parsed (a plain-text
  payload is gzip-compressed while its rows are read);
- a byte-identical payload for the same system is a no-op that returns the first batch and its counts;
- every unreadable row is kept as a RejectedRow with its line number and reason, and never blocks the others;
- a job record's `changed_seq` moves only when something about the job really changed, so reconciliation's
  work follows new information, and ingesting the same rows again changes nothing.

Nothing here touches the ledger: reconciliation (`reconcile.py`) charges what changed.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import shutil
import sys
import tempfile
import threading
import zoneinfo
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import BinaryIO

import psycopg2.errors
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from allocations.ledger import MAX_SECONDS
from allocations.models import (
    Allocation,
    IngestBatch,
    IngestToken,
    JobRecord,
    JobRecordIdRange,
    RejectedRow,
    SchedulerAccountAlias,
    UsageSequence,
)
from programmes.models import System

from .sacct import JobRow, JsonPayloadTooLarge, SacctFormatError, SacctReader, iter_sacct
from .sacct import RejectedRow as SacctRejectedRow

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
# A stored payload is `<sha256>.gz`, or `<sha256>.raw` until a plain payload has been compressed.
GZIP_SUFFIX, PLAIN_SUFFIX = ".gz", ".raw"
CHUNK_ROWS = 5000
# Rejected rows held in memory before they are saved (about 100 MB): a payload of nothing but bad lines, a
# gigabyte of them, was held whole, as some six million RejectedRow objects. On PostgreSQL saving them ends a chunk
# (see COPY_CHUNK_ROWS), so they add at most one chunk, and its savepoint, per this many.
REJECTED_ROWS_HELD = 100_000
# Column widths of JobRecord; a longer value is rejected with a reason rather than cut.
_FIELD_LIMITS = {"job_id": 64, "job_id_raw": 64, "account": 64, "user": 64, "state": 32}
JOB_NAME_LIMIT = 200
# A reconciliation run charges each allocation the sum of its jobs in one movement, which the ledger caps at
# MAX_SECONDS: a job above a hundredth of it (2.8 million GPU-hours, a 5,000-GPU machine for three weeks) is no
# real job, and charged it would stop its system's charging.
JOB_GPU_SECONDS_LIMIT = MAX_SECONDS // 100
REJECTED_IN_RESPONSE = 1000


class IngestError(ValueError):
    """The payload as a whole cannot be ingested (it is still stored, with this message on its batch)."""


def batch_summary(batch: IngestBatch) -> dict:
    """What came of a batch, as the ingest API answers it: its status, format, counts and first rejected rows."""
    # A response stays small however bad the payload: the first thousand here, all on the batch's page.
    still = batch.rejected_rows.filter(replayed_at__isnull=True)  # not those recorded since, on a replay
    rejected = list(still.values("line_number", "reason")[:REJECTED_IN_RESPONSE])
    return {
        "batch": batch.pk,
        "status": batch.status,
        "format": batch.format,
        **batch.counts(),
        "rejected_rows": rejected,
        "rejected_rows_truncated": batch.rejected > len(rejected),
    }


@dataclass
class IngestOutcome:
    batch: IngestBatch
    is_duplicate: bool

    def as_dict(self) -> dict:
        return {"duplicate": self.is_duplicate, **batch_summary(self.batch)}


# Receiving ------------------------------------------------------------------------------------------------


def declared_size(request) -> int:
    """The body's size as the request's Content-Length declares it; 0 when it declares none, or no number.

    The API and the upload page refuse a body declared over their limit before a byte of it is read.
    """
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


class PayloadTooLargeToReceive(IngestError):
    """The payload as received is over its limit (`receiving_limit`): refused before a batch is recorded, and none
    of it kept."""


def receiving_limit(source: str) -> int:
    """The most bytes a payload from this source may be as received.

    A body sent to the API or the upload page crosses the network and is held while it arrives: INGEST_MAX_BYTES
    (gzip makes a day of a big cluster's jobs a few MB). A file given to the command is on the operator's own disk,
    and may be a month of plain sacct text: it may be as large as any payload may expand to when read,
    INGEST_MAX_UNCOMPRESSED_BYTES.
    """
    if source == IngestBatch.Source.COMMAND:
        return settings.INGEST_MAX_UNCOMPRESSED_BYTES
    return settings.INGEST_MAX_BYTES


def _store_raw(source: BinaryIO, *, system: System, limit: int) -> tuple[Path, str, int, bool]:
    """Copy the payload as received to a new file under MEDIA_ROOT/ingest/<system>/.

    Returns (that file, sha256, size in bytes, whether it is gzip). The hash is of the bytes as received, so the
    same gzip file or the same text is recognised when re-sent. Plain text is not compressed here: a payload is
    stored before its rows are read, and compressing a million rows would keep them waiting a second.
    `_compressing` compresses it while they are read.

    Copying stops past `limit` bytes with PayloadTooLargeToReceive: the API and the upload page refuse a larger
    payload before this, but a file given to the command may be a device or a pipe (`/dev/zero`, `/dev/stdin`)
    whose size nothing tells in advance, and would fill the disk.
    """
    folder = Path(settings.MEDIA_ROOT) / "ingest" / system.slug
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            chunk = source.read(1 << 20)
            is_gzip = chunk.startswith(GZIP_MAGIC)
            while chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeToReceive(f"The payload is larger than {limit // (1024 * 1024)} MB")
                digest.update(chunk)
                out.write(chunk)
                chunk = source.read(1 << 20)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return Path(temporary), digest.hexdigest(), size, is_gzip


def receive_payload(
    *,
    system: System,
    payload: bytes | BinaryIO,
    source: str,
    token: IngestToken | None = None,
    uploaded_by=None,
    delimiter: str | None = None,
    columns: list[str] | None = None,
) -> IngestOutcome:
    """Store a payload raw and record its batch (committed on its own), or find the batch of those bytes."""
    stream = io.BytesIO(payload) if isinstance(payload, bytes | bytearray) else payload
    temporary, sha256, size, is_gzip = _store_raw(stream, system=system, limit=receiving_limit(source))
    existing = IngestBatch.objects.filter(system=system, sha256=sha256).first()
    if existing is not None:
        temporary.unlink()
        return _received_again(existing, delimiter=delimiter, columns=columns)
    stored = temporary.with_name(f"{sha256}{GZIP_SUFFIX if is_gzip else PLAIN_SUFFIX}")
    os.replace(temporary, stored)
    try:
        with transaction.atomic():
            batch = IngestBatch.objects.create(
                system=system,
                source=source,
                sha256=sha256,
                raw_path=str(stored.relative_to(settings.MEDIA_ROOT)),
                size=size,
                delimiter=delimiter or "",
                columns=",".join(columns or []),
                token=token,
                uploaded_by=uploaded_by,
            )
    except IntegrityError:
        # The same bytes were posted concurrently and the other request recorded them first.
        existing = IngestBatch.objects.get(system=system, sha256=sha256)
        if existing.raw_path != str(stored.relative_to(settings.MEDIA_ROOT)):
            stored.unlink(missing_ok=True)  # its payload is compressed already: this copy would be left over
        return IngestOutcome(existing, is_duplicate=True)
    return IngestOutcome(batch, is_duplicate=False)


def _received_again(batch: IngestBatch, *, delimiter: str | None, columns: list[str] | None) -> IngestOutcome:
    """Bytes received before: a duplicate that changes nothing, unless they could not be read then.

    A batch that failed is read again, with the delimiter and columns sent this time: its error may have asked
    for them, or the system's settings or the size limit may have changed since.
    """
    again = reopen_failed_batch(batch, delimiter=delimiter or "", columns=",".join(columns or []))
    return IngestOutcome(batch, is_duplicate=not again)


def reopen_failed_batch(batch: IngestBatch, *, delimiter: str, columns: str) -> bool:
    """Make a failed batch `received` again, to be read with these options, and timed as waiting from now (see
    services.stall_of); False if it had not failed."""
    reopened = IngestBatch.objects.filter(pk=batch.pk, status=IngestBatch.Status.FAILED).update(
        status=IngestBatch.Status.RECEIVED,
        error="",
        delimiter=delimiter,
        columns=columns,
        reopened_at=timezone.now(),
    )
    batch.refresh_from_db()
    return bool(reopened)


def open_raw(batch: IngestBatch) -> BinaryIO:
    """The stored payload, uncompressed."""
    stored = Path(settings.MEDIA_ROOT) / batch.raw_path
    if stored.suffix == GZIP_SUFFIX:
        return gzip.open(stored, "rb")
    try:
        return open(stored, "rb")
    except FileNotFoundError:
        # Compressed (and the plain copy removed) since this batch was read from the database.
        return gzip.open(stored.with_suffix(GZIP_SUFFIX), "rb")


@contextmanager
def _compressing(batch: IngestBatch) -> Iterator[None]:
    """Compress a payload stored as plain text while its rows are read, then keep only the compressed copy.

    zlib works without Python's lock, so the compression runs beside the reading, on another core. If the
    reading fails, the batch keeps its plain copy (the compressed one beside it is not yet its payload).
    """
    plain = Path(settings.MEDIA_ROOT) / batch.raw_path
    if plain.suffix == GZIP_SUFFIX:
        yield
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-gzip") as worker:
        compressing = worker.submit(_gzip_file, plain)
        yield
    try:
        stored = compressing.result()
    except OSError as problem:
        # The rows are recorded: a full disk here costs only the space the compression would have saved.
        logger.warning("Batch %s stays uncompressed: %s", batch.pk, problem)
        return
    raw_path = str(stored.relative_to(settings.MEDIA_ROOT))
    IngestBatch.objects.filter(pk=batch.pk).update(raw_path=raw_path)
    batch.raw_path = raw_path
    plain.unlink(missing_ok=True)


def _in_the_background() -> None:
    """Give the calling thread the lowest CPU priority, so that it takes only the time that reading the rows and
    the database leave idle: on a host with few cores the compression otherwise slows both.

    Linux keeps a priority per thread, set by the thread's own id. Elsewhere that id may be another process's,
    so nothing is changed.
    """
    if sys.platform != "linux":
        return
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # lowering one's own is always allowed


def _gzip_file(plain: Path) -> Path:
    _in_the_background()
    stored = plain.with_suffix(GZIP_SUFFIX)
    if not plain.exists() and stored.exists():
        return stored  # another read of the same batch compressed it first
    handle, temporary = tempfile.mkstemp(dir=plain.parent, suffix=".partial")
    try:
        with (
            open(plain, "rb") as source,
            os.fdopen(handle, "wb") as out,
            gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1) as sink,
        ):
            shutil.copyfileobj(source, sink, 1 << 20)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    os.replace(temporary, stored)
    return stored


def ingest_sacct(
    *,
    system: System,
    payload: bytes | BinaryIO,
    source: str,
    token: IngestToken | None = None,
    uploaded_by=None,
    delimiter: str | None = None,
    columns: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestOutcome:
    """Store a payload, then read and record its rows; a payload already received returns its first batch.

    Raises IngestError when the payload as a whole cannot be read; the batch stays, marked failed.
    """
    outcome = receive_payload(
        system=system,
        payload=payload,
        source=source,
        token=token,
        uploaded_by=uploaded_by,
        delimiter=delimiter,
        columns=columns,
    )
    if outcome.is_duplicate and outcome.batch.status != IngestBatch.Status.RECEIVED:
        if outcome.batch.status == IngestBatch.Status.FAILED:
            raise IngestError(outcome.batch.error)
        return outcome
    if process_batch(batch=outcome.batch, progress=progress) and outcome.is_duplicate:
        # The same bytes were stored before but still waiting to be read (posted asynchronously, or their reading
        # lost): this call read them, so for the caller they are new, to be answered and reconciled as such.
        return IngestOutcome(outcome.batch, is_duplicate=False)
    return outcome


# Reading and recording ------------------------------------------------------------------------------------


def hold_changes(system: System) -> UsageSequence:
    """Take the system's change lock, which every writer of its job records holds until it commits: until the
    caller's transaction ends, no ingest, replay or assignment of this system records anything."""
    UsageSequence.objects.get_or_create(system=system)
    return UsageSequence.objects.select_for_update().get(system=system)


def next_change_seq(system: System) -> int:
    """Take the system's next change number; the caller's transaction holds the lock until it commits."""
    sequence = hold_changes(system)
    sequence.last_seq += 1
    sequence.save(update_fields=["last_seq"])
    return sequence.last_seq


def window_instants(first_day: date, last_day: date, tz) -> tuple[datetime, datetime]:
    """An allocation's window as instants: from its first day's midnight to the midnight after its last day, in
    the system's time zone. A run is outside it if it starts before the first or ends (or, running, started) at
    or after the second."""
    opens = datetime.combine(first_day, dt_time.min, tz)
    if last_day == date.max:
        return opens, datetime.max.replace(tzinfo=UTC)  # there is no day after it to start
    return opens, datetime.combine(last_day + timedelta(days=1), dt_time.min, tz)


class _Matcher:
    """Resolves a scheduler account to its allocation and says whether a run falls outside its window."""

    def __init__(self, system: System):
        tz = time_zone_of(system)
        # Accounts an admin assigned to an allocation (SchedulerAccountAlias) first, so that an allocation's
        # own account wins over an alias of the same name.
        aliases = SchedulerAccountAlias.objects.filter(system=system, allocation__system=system).values_list(
            "account", "allocation", "allocation__start_date", "allocation__end_date"
        )
        own = Allocation.objects.filter(system=system).values_list("scheduler_account", "pk", "start_date", "end_date")
        # The windows as instants, so each row compares two datetimes instead of converting its own.
        self.by_account = {
            account: (pk, *window_instants(first_day, last_day, tz))
            for account, pk, first_day, last_day in [*aliases, *own]
        }
        self.utc_text = {
            account: (pk, opens.astimezone(UTC).isoformat(), closes.astimezone(UTC).isoformat())
            for account, (pk, opens, closes) in self.by_account.items()
        }

    def match(self, account: str, start, end) -> tuple[int | None, bool]:
        found = self.by_account.get(account)
        if found is None:
            return None, False
        pk, opens, closes = found
        return pk, start < opens or (end or start) >= closes

    def match_text(self, account: str, start: str, end: str | None) -> tuple[int | None, bool]:
        """`match` for times as UTC ISO text (SacctReader.records), read as datetimes only when they differ.

        Text of the one form `2026-01-01T09:00:00+00:00` sorts as the instants do, so it is compared as text.
        """
        found = self.utc_text.get(account)
        if found is None:
            return None, False
        pk, opens, closes = found
        last = end or start
        if len(start) == 25 == len(last) and start.endswith("+00:00") and last.endswith("+00:00"):
            return pk, start < opens or last >= closes
        return self.match(account, datetime.fromisoformat(start), datetime.fromisoformat(last))


def gpu_seconds_of(gpus: int, elapsed_seconds: int, charge_factor: Decimal) -> int:
    """GPUs × elapsed × the system's charge factor, rounded half up once per job (DESIGN.md)."""
    used = gpus * elapsed_seconds
    if charge_factor == 1:
        return used
    return int((used * charge_factor).to_integral_value(rounding=ROUND_HALF_UP))


def _too_long(row: JobRow) -> str | None:
    return _too_long_fields(row.job_id, row.job_id_raw, row.account, row.user, row.state)


def _too_costly(gpu_seconds: int) -> str | None:
    if gpu_seconds <= JOB_GPU_SECONDS_LIMIT:
        return None
    return (
        f"the job would be charged {gpu_seconds // 3600:,} GPU-hours, more than the "
        f"{JOB_GPU_SECONDS_LIMIT // 3600:,} any one job can use: its ElapsedRaw or AllocTRES is not a real figure"
    )


@dataclass
class _Counts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    unmatched: int = 0
    rejected: int = 0
    never_started: int = 0
    without_gpus: int = 0


def time_zone_of(system: System) -> zoneinfo.ZoneInfo:
    """The zone sacct's times are read in, and allocation days bounded by; IngestError if it is no zone."""
    try:
        return zoneinfo.ZoneInfo(system.time_zone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise IngestError(
            f"{system.name}'s time zone {system.time_zone!r} is not a known time zone: an admin can correct it on "
            "the admin site (Systems), then have the batch read again"
        ) from None


def read_batch(batch: IngestBatch, source) -> SacctReader:
    """A reader over `source` with the batch's settings: its system's time zone and cluster, delimiter and columns."""
    tz = time_zone_of(batch.system)
    try:
        return iter_sacct(
            source,
            tz=UTC if tz.key == "UTC" else tz,  # the reader's fast path knows UTC by identity
            delimiter=batch.delimiter or None,
            cluster=batch.system.cluster_name,
            columns=batch.columns.split(",") if batch.columns else None,
            max_json_bytes=settings.INGEST_MAX_JSON_BYTES,
        )
    except JsonPayloadTooLarge as problem:
        raise PayloadExpandsTooFar(f"The payload is too large: {problem}") from None


def process_batch(*, batch: IngestBatch, progress: Callable[[int], None] | None = None) -> bool:
    """Read a stored batch and record its rows in one transaction; safe to run again on the same batch.

    Returns whether this call recorded them: False when another process had read the batch meanwhile (`batch` then
    holds that reading's counts)."""
    system = batch.system
    try:
        with _compressing(batch), open_raw(batch) as raw:
            source = _CountingReader.reading(raw, progress)
            try:
                reader = read_batch(batch, source)
            except PayloadExpandsTooFar:
                raise  # marked failed below, and kept as itself: the API answers it 413
            except (SacctFormatError, IngestError) as problem:
                IngestBatch.objects.filter(pk=batch.pk).update(status=IngestBatch.Status.FAILED, error=str(problem))
                batch.refresh_from_db()
                raise IngestError(str(problem)) from None
            with transaction.atomic():
                seq = next_change_seq(system)
                # Under the sequence lock: if another process read this batch meanwhile, keep its counts.
                if IngestBatch.objects.get(pk=batch.pk).status != IngestBatch.Status.RECEIVED:
                    batch.refresh_from_db()
                    return False
                # A re-run of this batch (after a crash) starts its rejected rows afresh.
                batch.rejected_rows.all().delete()
                counts = _record_rows(batch=batch, rows=reader, seq=seq)
                batch.format = reader.format
                batch.skipped_steps = reader.skipped_steps
                batch.skipped_pending = reader.skipped_pending
                for name, value in vars(counts).items():
                    setattr(batch, name, value)
                batch.status = IngestBatch.Status.INGESTED
                batch.error = ""
                batch.save()
    except PayloadExpandsTooFar as problem:
        IngestBatch.objects.filter(pk=batch.pk).update(status=IngestBatch.Status.FAILED, error=str(problem))
        batch.refresh_from_db()
        raise
    except (EOFError, OSError, gzip.BadGzipFile) as problem:
        # A truncated or corrupt gzip body: the batch stays stored, marked as unreadable.
        message = f"The gzip payload is truncated or corrupt ({problem})"
        IngestBatch.objects.filter(pk=batch.pk).update(status=IngestBatch.Status.FAILED, error=message)
        batch.refresh_from_db()
        raise IngestError(message) from None
    return True


class PayloadExpandsTooFar(IngestError):
    """The payload, unzipped, is over INGEST_MAX_UNCOMPRESSED_BYTES (the API answers 413)."""


class _CountingReader(io.RawIOBase):
    """A file over the uncompressed payload that moves a progress bar and stops a gzip bomb.

    A small gzip body can expand without bound; reading stops at INGEST_MAX_UNCOMPRESSED_BYTES so that no
    payload can exhaust memory (a JSON payload is read whole) or hold a worker for hours. It counts the chunks
    a BufferedReader asks for (`reading`), so lines are split in C rather than counted one by one.
    """

    def __init__(self, raw: BinaryIO, progress: Callable[[int], None] | None):
        self.raw = raw
        self.progress = progress
        self.limit = settings.INGEST_MAX_UNCOMPRESSED_BYTES
        self.total = 0

    @classmethod
    def reading(cls, raw: BinaryIO, progress: Callable[[int], None] | None) -> io.BufferedReader:
        return io.BufferedReader(cls(raw, progress), buffer_size=1 << 20)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = self.raw.readinto(buffer)
        if size:
            self.total += size
            if self.total > self.limit:
                raise PayloadExpandsTooFar(
                    f"The payload expands to more than {self.limit // (1024 * 1024)} MB: send a shorter window"
                )
            if self.progress is not None:
                self.progress(size)
        return size


def _record_rows(
    *,
    batch: IngestBatch,
    rows: SacctReader,
    seq: int,
    on_rejected: Callable | None = None,
) -> _Counts:
    """Store a batch's rows under change number `seq`; rejected rows go to `on_rejected` when given.

    A run whose record was last reported by a batch received after this one keeps that report (counted
    unchanged): it is newer than these rows. So does a run whose record has ended, against a row that reports it
    running: a run never runs again once it has ended (a requeued job starts a new run, with a new Start).
    Batches are not always read in the order they came: workers read them side by side, the beat reads again one
    whose reading was lost, and a replay reads an older batch's rows; nor always made in that order: a file saved
    earlier may be loaded late.

    The caller holds the system's change lock (next_change_seq): the ids of the records stored here are noted for
    reconciliation (JobRecordIdRange), and no other write of the system's can take ids in between.
    """
    after_id = newest_job_record_id()
    if connection.vendor == "postgresql":
        counts = _record_rows_postgresql(batch=batch, reader=rows, seq=seq, on_rejected=on_rejected)
    else:
        counts = _record_rows_portable(batch=batch, rows=rows, seq=seq, on_rejected=on_rejected)
    if counts.new:
        # Where reconciliation will find the records stored here (JobRecordIdRange).
        JobRecordIdRange.objects.create(
            system=batch.system, seq=seq, after_id=after_id, through_id=newest_job_record_id()
        )
    return counts


def newest_job_record_id() -> int:
    """The newest id any job record has been given, committed or not (0 before the first).

    Every id taken after this call is above it. On PostgreSQL, the ids' sequence (handed out in order: never
    give it a CACHE above 1); on SQLite, whose writers take turns, the newest stored (AUTOINCREMENT never reuses).
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')::regclass)",
                [JobRecord._meta.db_table],
            )
            return cursor.fetchone()[0] or 0
    return JobRecord.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def _record_rows_portable(*, batch, rows: SacctReader, seq: int, on_rejected: Callable | None) -> _Counts:
    """_record_rows through the ORM, for SQLite (and any database without COPY)."""
    system = batch.system
    matcher = _Matcher(system)
    factor = Decimal(system.charge_factor)
    counts = _Counts()
    rejected: list[RejectedRow] = []
    chunk: list[tuple] = []
    for row in rows:
        if type(row) is not JobRow:
            if on_rejected is not None:
                on_rejected(row.line_number, row.reason)
                continue
            rejected.append(RejectedRow(batch=batch, line_number=row.line_number, raw=row.raw, reason=row.reason))
        elif row.start is None:
            # It never ran (pending, or cancelled before starting): nothing to charge, nothing to store.
            counts.never_started += 1
        elif problem := _too_long(row) or _too_costly(gpu_seconds_of(row.gpus, row.elapsed_seconds, factor)):
            if on_rejected is not None:
                on_rejected(row.line_number, problem)
                continue
            rejected.append(RejectedRow(batch=batch, line_number=row.line_number, raw=row.raw, reason=problem))
        else:
            allocation_id, outside = matcher.match(row.account, row.start, row.end)
            if allocation_id is None:
                counts.unmatched += 1
            if not row.gpus:
                counts.without_gpus += 1
            chunk.append(
                (
                    row.job_id_raw,
                    row.start,
                    row.job_id,
                    row.account,
                    row.user,
                    row.state,
                    row.submit,
                    row.end,
                    row.elapsed_seconds,
                    row.gpus,
                    row.job_name[:JOB_NAME_LIMIT],
                    gpu_seconds_of(row.gpus, row.elapsed_seconds, factor),
                    allocation_id,
                    outside,
                )
            )
        if len(chunk) >= CHUNK_ROWS:
            _store_chunk_portable(chunk, batch=batch, seq=seq, counts=counts)
            chunk = []
        if len(rejected) >= REJECTED_ROWS_HELD:
            RejectedRow.objects.bulk_create(rejected)
            rejected = []
    if chunk:
        _store_chunk_portable(chunk, batch=batch, seq=seq, counts=counts)
    RejectedRow.objects.bulk_create(rejected)
    counts.rejected = batch.rejected_rows.filter(replayed_at__isnull=True).count()
    return counts


# The fields that, when they differ from the stored record, make it a change to reconcile.
_COMPARED = (
    "job_id",
    "account",
    "user",
    "state",
    "submit",
    "end",
    "elapsed_seconds",
    "gpus",
    "job_name",
    "gpu_seconds",
    "is_outside_window",
)
_COLUMNS = (
    "job_id_raw",
    "start",
    "job_id",
    "account",
    "user",
    "state",
    "submit",
    "end",
    "elapsed_seconds",
    "gpus",
    "job_name",
    "gpu_seconds",
    "allocation_id",
    "is_outside_window",
)


_END_AT = _COLUMNS.index("end")


def _store_chunk_portable(chunk, *, batch, seq, counts):
    """Upsert through the ORM, a chunk at a time: the path for SQLite (and any database without COPY)."""
    # The last report of a run in one payload wins, as it does across payloads, unless it reports the run running
    # after one that reported it ended (see _record_rows).
    by_key = {}
    for values in chunk:
        earlier = by_key.get((values[0], values[1]))
        if earlier is None or earlier[_END_AT] is None or values[_END_AT] is not None:
            by_key[(values[0], values[1])] = values
    counts.unchanged += len(chunk) - len(by_key)
    existing = {
        (record.job_id_raw, record.start): record
        for record in JobRecord.objects.filter(system=batch.system, job_id_raw__in={key[0] for key in by_key})
    }
    created, changed = [], []
    for key, values in by_key.items():
        fields = dict(zip(_COLUMNS, values, strict=True))
        record = existing.get(key)
        if record is None:
            created.append(JobRecord(system=batch.system, changed_seq=seq, last_batch=batch, **fields))
            continue
        if (record.last_batch_id or 0) > batch.pk:
            counts.unchanged += 1  # a batch received after this one reported the run: its report is newer
            continue
        if record.end is not None and fields["end"] is None:
            counts.unchanged += 1  # a run that ended never runs again: a report of it running is older
            continue
        if all(getattr(record, name) == fields[name] for name in _COMPARED) and not (
            record.allocation_id is None and fields["allocation_id"] is not None
        ):
            counts.unchanged += 1
            continue
        if record.changed_seq == seq:
            counts.unchanged += 1  # this payload reported the run in an earlier chunk, and counted it then
        else:
            counts.updated += 1
        for name in _COMPARED:
            setattr(record, name, fields[name])
        # Once matched, a record stays with its allocation: its charges are there.
        record.allocation_id = record.allocation_id or fields["allocation_id"]
        record.changed_seq = seq
        record.revised = True
        record.last_batch = batch
        changed.append(record)
    JobRecord.objects.bulk_create(created, batch_size=1000)
    JobRecord.objects.bulk_update(
        changed, [*_COMPARED, "allocation_id", "changed_seq", "revised", "last_batch"], batch_size=1000
    )
    counts.new += len(created)


# The PostgreSQL path ----------------------------------------------------------------------------------------
#
# The rows are read as plain tuples (SacctReader.records) and streamed as COPY text while they are being read,
# so the database loads one part while Python reads the next. Most payloads bring runs the portal has not seen:
# each chunk of rows is copied straight into the job records, in a savepoint, and the run key's unique index
# refuses the chunk if one of its runs is stored already or comes twice in it. From a refused chunk on, the rows
# go to a temporary table instead, merged in set-based SQL at the end: runs not seen before are inserted, runs
# whose fields changed are updated, and unchanged runs are left alone, so they keep their change number. The
# rows copied straight in come before the staged ones in the payload, so the last report of a run wins, within
# a payload as across payloads (in the order they were received). Accounts are matched to allocations here, by
# _Matcher, on both ways.

# Rows per chunk: a chunk refused costs what was copied of it, and between two the rejected rows are saved.
# Each chunk's savepoint is a subtransaction, and PostgreSQL slows other sessions' snapshots once a transaction
# holds more than 64: a payload at INGEST_MAX_UNCOMPRESSED_BYTES (1 GB, some 6.5 million rows) holds about 33.
COPY_CHUNK_ROWS = 200_000
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"
# The COPY columns, in the order of each line made by _record_rows_postgresql.copy_lines.
_COPY_COLUMNS = ("system_id", *_COLUMNS, "changed_seq", "last_batch_id")
_RUN_KEY = "job_record_one_per_run"


def _too_long_fields(job_id: str, job_id_raw: str, account: str, user: str, state: str) -> str | None:
    if len(account) <= 64 and len(user) <= 64 and len(job_id) <= 64 and len(job_id_raw) <= 64 and len(state) <= 32:
        return None
    values = {"job_id": job_id, "job_id_raw": job_id_raw, "account": account, "user": user, "state": state}
    for name, limit in _FIELD_LIMITS.items():
        if len(values[name]) > limit:
            return f"{name} is longer than {limit} characters"
    return None


class _CopyChunks:
    """COPY text lines as a file psycopg2's copy_expert reads, a chunk of rows at a time.

    `read` hands out whole lines and reports the end after `rows_per_chunk` rows, or early when `lines` gives
    None (REJECTED_ROWS_HELD rejected rows are waiting), so the caller can save the rejected rows gathered so far
    (no other statement may run during a COPY) and start the next chunk. The chunk's lines are kept until then, to
    be copied again if the database refused them.
    """

    def __init__(self, lines: Iterator[str], rows_per_chunk: int):
        self.lines = lines
        self.limit = rows_per_chunk
        self.chunk: list[str] = []
        self.exhausted = False
        self.ended_early = False
        # psycopg2 reports an exception raised in read() as a failed COPY: it is kept to be raised as itself.
        self.error: BaseException | None = None

    def next_chunk(self) -> None:
        self.chunk = []
        self.ended_early = False

    def read(self, size: int = -1) -> str:
        room = self.limit - len(self.chunk)
        if room <= 0 or self.exhausted or self.ended_early:
            return ""
        parts, length = [], 0
        try:
            for line in self.lines:
                if line is None:
                    self.ended_early = True
                    break
                parts.append(line)
                length += len(line)
                if length >= size or len(parts) >= room:
                    break
            else:
                self.exhausted = True
        except BaseException as problem:
            self.error = problem
            raise
        self.chunk.extend(parts)
        return "".join(parts)

    def copy_into(self, cursor, table: str) -> None:
        try:
            cursor.cursor.copy_expert(_copy_statement(table), self, size=1 << 18)
        except Exception:
            if self.error is not None:
                raise self.error from None
            raise


def _copy_statement(table: str) -> str:
    columns = ", ".join(f'"{name}"' for name in _COPY_COLUMNS)
    return f"COPY {table} ({columns}) FROM STDIN"


def _record_rows_postgresql(*, batch, reader: SacctReader, seq: int, on_rejected: Callable | None) -> _Counts:
    system = batch.system
    matcher = _Matcher(system)
    factor = Decimal(system.charge_factor)
    counts = _Counts()
    rejected: list[RejectedRow] = []

    def reject(line_number: int, raw: str, reason: str) -> None:
        if on_rejected is not None:
            on_rejected(line_number, reason)
        else:
            rejected.append(RejectedRow(batch=batch, line_number=line_number, raw=raw, reason=reason))

    def copy_lines() -> Iterator[str | None]:
        escapes, match = _COPY_ESCAPES, matcher.match_text
        plain_factor, cost_limit = factor == 1, JOB_GPU_SECONDS_LIMIT
        head, tail = f"{system.pk}\t", f"\t{seq}\t{batch.pk}\n"
        for record in reader.records():
            if len(rejected) >= REJECTED_ROWS_HELD:
                yield None  # ends the chunk, so that they are saved
            if type(record) is SacctRejectedRow:
                reject(record.line_number, record.raw, record.reason)
                continue
            line_number, raw, job_id, job_id_raw, account, user, state, submit, start, end, elapsed, gpus, name = record
            if start is None:
                # It never ran (pending, or cancelled before starting): nothing to charge, nothing to store.
                counts.never_started += 1
                continue
            if (problem := _too_long_fields(job_id, job_id_raw, account, user, state)) is not None:
                reject(line_number, raw, problem)
                continue
            cost = gpus * elapsed if plain_factor else gpu_seconds_of(gpus, elapsed, factor)
            if cost > cost_limit:
                reject(line_number, raw, _too_costly(cost))
                continue
            allocation_id, outside = match(account, start, end)
            if allocation_id is None:
                counts.unmatched += 1
            if not gpus:
                counts.without_gpus += 1
            if len(name) > JOB_NAME_LIMIT:
                name = name[:JOB_NAME_LIMIT]
            if "\\" in raw or "\t" in raw or "\r" in raw:
                account, user, name = account.translate(escapes), user.translate(escapes), name.translate(escapes)
            # JobIDRaw and JobID (checked by the reader to be job ids), State (a word) and the times (ISO
            # text) need no escaping; free text does, when the line holds a character COPY would read.
            yield (
                f"{head}{job_id_raw}\t{start}\t{job_id}\t{account}\t{user}\t{state}\t"
                f"{NULL if submit is None else submit}\t{NULL if end is None else end}\t{elapsed}\t{gpus}\t"
                f"{name}\t{cost}\t{NULL if allocation_id is None else allocation_id}\t{'t' if outside else 'f'}"
                f"{tail}"
            )

    table = JobRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS usage_staging")
        # The job records' own columns (collations included, which the merge's joins need), numbered in the
        # order they are copied, so that a run's last report wins.
        cursor.execute(
            f"CREATE TEMPORARY TABLE usage_staging (LIKE {table} INCLUDING DEFAULTS INCLUDING IDENTITY) ON COMMIT DROP"
        )
        chunks = _CopyChunks(copy_lines(), COPY_CHUNK_ROWS)
        staged = 0
        while not chunks.exhausted:
            chunks.next_chunk()
            if staged:
                chunks.copy_into(cursor, "usage_staging")
                staged += len(chunks.chunk)
            else:
                savepoint = transaction.savepoint()
                try:
                    chunks.copy_into(cursor, table)
                except psycopg2.errors.UniqueViolation as refused:
                    if refused.diag.constraint_name != _RUN_KEY:
                        raise
                    # Once a payload repeats what is stored, what follows is likely to repeat it too (a window
                    # sent again): the rest of it goes to the temporary table, merged in one go at the end.
                    transaction.savepoint_rollback(savepoint)
                    # What the database read of the chunk before refusing it; the rest follows in the next.
                    cursor.cursor.copy_expert(
                        _copy_statement("usage_staging"), io.StringIO("".join(chunks.chunk)), size=1 << 18
                    )
                    staged = len(chunks.chunk)
                else:
                    transaction.savepoint_commit(savepoint)
                    counts.new += len(chunks.chunk)
            RejectedRow.objects.bulk_create(rejected, batch_size=5000)
            rejected.clear()
        if staged:
            new, updated = _merge_staging(cursor, batch=batch, seq=seq, copied_straight=counts.new > 0)
            counts.new += new
            counts.updated += updated
            counts.unchanged += staged - new - updated
        cursor.execute("DROP TABLE usage_staging")
    counts.rejected = batch.rejected_rows.filter(replayed_at__isnull=True).count()
    return counts


def _merge_staging(cursor, *, batch: IngestBatch, seq: int, copied_straight: bool) -> tuple[int, int]:
    """Insert the staged rows' new runs and update their changed ones; returns (new, updated).

    A run this payload copied straight in (`copied_straight`: some were) and reports again is new, counted once:
    its later report is not counted as updated (it is counted unchanged, as a run reported twice in one chunk is).
    """
    table = JobRecord._meta.db_table
    changed = " OR ".join(f'r."{name}" IS DISTINCT FROM m."{name}"' for name in _COMPARED)
    # A run that a batch received after this one reported since keeps that report (see _record_rows), and one
    # that has ended keeps its end: it never runs again, so a report of it running is older, whenever it came.
    newer = 'AND (r.last_batch_id IS NULL OR r.last_batch_id <= %(batch)s) AND (r."end" IS NULL OR m."end" IS NOT NULL)'
    updates = ", ".join(f'"{name}" = m."{name}"' for name in _COMPARED)
    columns = ", ".join(f'"{name}"' for name in _COLUMNS)
    # DISTINCT ON sorts the staged rows: let it sort in memory rather than in temporary files.
    cursor.execute("SET LOCAL work_mem = '256MB'")
    # The last report of a run wins, of those that report it ended if any do (see _record_rows).
    latest = f"""
        SELECT DISTINCT ON (s.job_id_raw, s.start) {columns}
        FROM usage_staging s
        ORDER BY s.job_id_raw, s.start, s."end" IS NULL, s.id DESC
    """  # noqa: S608
    values = {"system": batch.system_id, "seq": seq, "batch": batch.pk}
    # Two statements rather than one with both: each reads the rows straight from their sort. The update first,
    # so that the insert's check for existing runs sees the same runs it did. Table and column names come from
    # the model; every value is a parameter.
    reported_again = 0
    if copied_straight:
        cursor.execute(
            f"""
            SELECT count(*) FROM ({latest}) m JOIN {table} r
                ON r.system_id = %(system)s AND r.job_id_raw = m.job_id_raw AND r.start = m.start
            WHERE r.changed_seq = %(seq)s AND ({changed} OR (r.allocation_id IS NULL AND m.allocation_id IS NOT NULL))
                {newer}
            """,  # noqa: S608
            values,
        )
        reported_again = cursor.fetchone()[0]
    cursor.execute(
        f"""
        UPDATE {table} AS r SET {updates},
            -- Once matched, a record stays with its allocation: its charges are there.
            allocation_id = COALESCE(r.allocation_id, m.allocation_id),
            changed_seq = %(seq)s, revised = true, last_batch_id = %(batch)s
        FROM ({latest}) m
        WHERE r.system_id = %(system)s AND r.job_id_raw = m.job_id_raw AND r.start = m.start
            AND ({changed} OR (r.allocation_id IS NULL AND m.allocation_id IS NOT NULL))
            {newer}
        """,  # noqa: S608
        values,
    )
    updated = cursor.rowcount - reported_again
    # The key's index is the unique (system, job_id_raw, start): rows sorted by (job_id_raw, start) reach it
    # in its own order, which keeps its writes sequential.
    cursor.execute(
        f"""
        INSERT INTO {table} (system_id, {columns}, changed_seq, last_batch_id)
        SELECT %(system)s, {columns}, %(seq)s, %(batch)s FROM ({latest}) m
        WHERE NOT EXISTS (
            SELECT FROM {table} r
            WHERE r.system_id = %(system)s AND r.job_id_raw = m.job_id_raw AND r.start = m.start
        )
        ORDER BY job_id_raw, start
        """,  # noqa: S608
        values,
    )
    return cursor.rowcount, updated
