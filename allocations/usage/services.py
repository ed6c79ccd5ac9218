"""Operators' actions on usage: ingest tokens, claiming unmatched usage, replaying rejected rows, marking a batch
no task will read again as dealt with.

Each is one transaction; reconciliation is enqueued after commit, so what they change is charged promptly.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from airr_portal.queuing import queue_after_commit
from airr_portal.services import hash_key
from allocations.models import (
    Allocation,
    IngestBatch,
    IngestToken,
    JobRecord,
    RejectedRow,
    SchedulerAccountAlias,
)
from programmes.models import System

from .ingest import (
    IngestError,
    _record_rows,
    hold_changes,
    next_change_seq,
    open_raw,
    read_batch,
    time_zone_of,
    window_instants,
)
from .sacct import KEPT_ALTERED, SacctFormatError

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "airr_ingest_"


class UsageError(ValueError):
    """An operator's request the portal refuses; the message is for them."""


def create_ingest_token(*, system: System, name: str, actor) -> tuple[IngestToken, str]:
    """Make a token for a cluster of `system`; returns it and its key, which is never shown again."""
    name = (name or "").strip()
    if not name:
        raise UsageError("Enter a name that says where the token will be used")
    secret = secrets.token_urlsafe(32)
    key = f"{TOKEN_PREFIX}{secret}"
    with transaction.atomic():
        token = IngestToken.objects.create(
            system=system, name=name[:100], prefix=secret[:8], key_hash=hash_key(key), created_by=actor
        )
    return token, key


def revoke_ingest_token(*, token: IngestToken, actor) -> IngestToken:
    """Stop a token working at once; revoking twice keeps the first time."""
    with transaction.atomic():
        IngestToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db()
    return token


# A batch left `received` this long has lost its reading: its task never reached the broker, or the worker or the
# request reading it died. The beat queues it again, for a day; after that it waits for an operator (its page
# offers to read it), so that a payload that breaks the reader is not read over and over. Both are timed from when
# the batch was last given to be read (IngestBatch.waiting_since): a failed batch reopened gets its own day.
STALLED_BATCH_AFTER = timedelta(minutes=15)
STALLED_BATCH_GIVEN_UP_AFTER = timedelta(days=1)

# IngestBatch.waiting_since, in a query.
WAITING_SINCE = Coalesce("reopened_at", "received_at")


def stalled_batches():
    """The batches the beat queues again: unread, and waiting STALLED_BATCH_AFTER or more, but less than a day."""
    now = timezone.now()
    return IngestBatch.objects.alias(waiting_since=WAITING_SINCE).filter(
        status=IngestBatch.Status.RECEIVED,
        waiting_since__lt=now - STALLED_BATCH_AFTER,
        waiting_since__gte=now - STALLED_BATCH_GIVEN_UP_AFTER,
    )


def needing_attention(batches):
    """Of `batches`, those whose usage is not recorded and that no task will read again: each waits for an
    operator. A failed one (the beat never rereads it: a setting or the payload must change first) and one whose
    reading the beat gave up on after a day. One an operator marked as dealt with needs nothing more."""
    return batches.alias(waiting_since=WAITING_SINCE).filter(
        Q(status=IngestBatch.Status.FAILED)
        | Q(status=IngestBatch.Status.RECEIVED, waiting_since__lt=timezone.now() - STALLED_BATCH_GIVEN_UP_AFTER),
        dealt_with_at__isnull=True,
    )


def mark_batch_dealt_with(*, batch: IngestBatch, note: str, actor) -> IngestBatch:
    """Record that a batch needing attention needs nothing more, who said so, when and why; its rows, counts and
    payload stay as they are, and it can still be read again. UsageError if it does not need attention."""
    note = (note or "").strip()
    if not note:
        raise UsageError("Enter why this batch needs nothing more")
    longest = IngestBatch._meta.get_field("dealt_with_note").max_length
    if len(note) > longest:
        raise UsageError(f"The note must be {longest} characters or fewer")
    with transaction.atomic():
        # One conditional update: a worker finishing its reading, or another operator's mark, at the same moment
        # leaves it unmarked (PostgreSQL tests the conditions again on the row it waited for).
        marked = needing_attention(IngestBatch.objects.filter(pk=batch.pk)).update(
            dealt_with_at=timezone.now(), dealt_with_by=actor, dealt_with_note=note
        )
    batch.refresh_from_db()
    if marked:
        return batch
    raise UsageError(_not_needing_attention(batch))


def needs_attention(batch: IngestBatch) -> bool:
    """Whether `batch` is one of those `needing_attention`, as the database has it now."""
    return needing_attention(IngestBatch.objects.filter(pk=batch.pk)).exists()


def dealt_with_refusal(batch: IngestBatch) -> str | None:
    """Why `batch` cannot be marked as dealt with (see mark_batch_dealt_with), or None if it can."""
    if needs_attention(batch):
        return None
    batch.refresh_from_db()
    return _not_needing_attention(batch)


def _not_needing_attention(batch: IngestBatch) -> str:
    if batch.dealt_with_at is not None:
        return "This batch was marked as dealt with already"
    return "This batch does not need attention: it has been read, or is being read"


def stall_of(batch: IngestBatch) -> str | None:
    """Whether a batch's reading was lost, by the same rule: None, "retried" (by the beat) or "given up"."""
    age = timezone.now() - batch.waiting_since
    if batch.status != IngestBatch.Status.RECEIVED or age <= STALLED_BATCH_AFTER:
        return None
    return "retried" if age <= STALLED_BATCH_GIVEN_UP_AFTER else "given up"


def enqueue_ingest(batch: IngestBatch) -> None:
    """Have a worker read a stored batch once this transaction commits (it reconciles the system after)."""
    from allocations.tasks import ingest_batch_task

    queue_after_commit(ingest_batch_task, batch.pk)


def enqueue_reconciliation(system: System) -> None:
    from allocations.tasks import reconcile_system_task

    queue_after_commit(reconcile_system_task, system.pk)


def unmatched_accounts(system_ids=None):
    """Scheduler accounts with held usage: account, system, jobs and GPU-seconds, largest first."""
    from django.db.models import Count, Sum

    records = JobRecord.objects.unmatched()
    if system_ids is not None:
        records = records.filter(system__in=system_ids)
    return (
        records.values("system", "system__slug", "system__name", "account")
        .annotate(jobs=Count("pk"), gpu_seconds=Sum("gpu_seconds"))
        .order_by("-gpu_seconds", "account")
    )


def assign_unmatched_account(*, system: System, account: str, allocation: Allocation, actor) -> int:
    """Give a scheduler account's held usage on `system` to an allocation, now and for every later ingest.

    Records a SchedulerAccountAlias (unless the account is the allocation's own), so later usage of the
    account is matched to the allocation as it arrives. The moved records get a new change number, so the
    next reconciliation (enqueued on commit) charges them. Returns how many job records moved.

    Refused: an allocation of another system or one that has ended (its unused hours went back when it ended, so
    charging it now would spend them twice), an account with no usage held on this system, and an account
    another allocation owns or was assigned to.
    """
    if not account:
        raise UsageError("Choose the scheduler account to assign")
    if allocation.pool.system_id != system.pk:
        raise UsageError(f"{allocation.scheduler_account} is on {allocation.pool.system}, not on {system}")
    try:
        with transaction.atomic():
            # The system's change lock: no ingest of this system records rows while the account changes hands.
            seq = next_change_seq(system)
            if (problem := assignment_refusal(system=system, account=account, allocation=allocation)) is not None:
                raise UsageError(problem)
            records = JobRecord.objects.filter(system=system, account=account, allocation__isnull=True)
            if not records.exists():
                raise UsageError(f"No usage of '{account}' is held on {system}: there is nothing to assign")
            if account != allocation.scheduler_account:  # no other allocation owns it (assignment_refusal)
                SchedulerAccountAlias.objects.create(
                    system=system, account=account, allocation=allocation, created_by=actor
                )
            try:
                moved = _move_held_usage(system=system, account=account, allocation=allocation, seq=seq)
            except IngestError as problem:
                raise UsageError(str(problem)) from None
            enqueue_reconciliation(system)
    except IntegrityError:
        # Another admin assigned the same account at the same moment; theirs stands.
        raise UsageError(f"'{account}' on {system} was assigned by someone else meanwhile") from None
    return moved


def _move_held_usage(*, system: System, account: str, allocation: Allocation, seq: int) -> int:
    """Give the usage held under `account` on `system` to `allocation` under change number `seq` (the caller holds
    the system's change lock), for the next reconciliation to charge; returns how many job records moved.

    A run outside the allocation's dates is still charged (usage happened), but flagged for an operator: the rule
    ingest applies, in the system's time zone (IngestError, and nothing moved, when that is no time zone).
    """
    opens, closes = window_instants(allocation.start_date, allocation.end_date, time_zone_of(system))
    moved = JobRecord.objects.filter(system=system, account=account, allocation__isnull=True).update(
        allocation=allocation, changed_seq=seq, revised=True
    )
    JobRecord.objects.filter(system=system, account=account, allocation=allocation, changed_seq=seq).filter(
        Q(start__lt=opens) | Q(end__gte=closes) | Q(end__isnull=True, start__gte=closes)
    ).update(is_outside_window=True)
    return moved


def claim_held_usage(allocation: Allocation) -> int:
    """Charge a new allocation with the usage held under its own scheduler account on its system; returns how many
    job records it took.

    Usage no allocation owned is held, and charged as soon as an allocation claims its account (DESIGN.md): an
    award's allocation claims its account when it is made (`awards.award_proposal` queues
    reconcile_claim_held_usage_task). Runs before its dates are charged and flagged, as ingest does. Later posts of
    the account are matched as they arrive; a post read while the award was being made, which could not see it, is
    recorded before this takes the system's change lock, and so is taken too. Safe to run again: nothing is held
    the second time. An allocation that has ended takes nothing (its unused hours went back when it ended), nor one
    whose system's time zone is mistyped: the usage then stays held, for an admin to assign once it is corrected.
    """
    system = allocation.pool.system
    account = allocation.scheduler_account
    with transaction.atomic():
        hold_changes(system)  # before looking: a post of the system being recorded is then committed
        held = JobRecord.objects.filter(system=system, account=account, allocation__isnull=True)
        state = Allocation.objects.values_list("state", flat=True).get(pk=allocation.pk)
        if state in Allocation.ENDED_STATES or not held.exists():
            return 0
        try:
            time_zone_of(system)  # which _move_held_usage reads the allocation's dates in
        except IngestError as problem:
            logger.warning("The usage held under %s on %s stays held: %s", account, system, problem)
            return 0
        moved = _move_held_usage(system=system, account=account, allocation=allocation, seq=next_change_seq(system))
        enqueue_reconciliation(system)
    logger.info("%s took the %s job records held under its account on %s", allocation, moved, system)
    return moved


def claim_all_held_usage() -> int:
    """The beat's check behind `claim_held_usage`: every allocation that has not ended, with usage held under its own
    scheduler account on its system, claims it; returns how many job records moved.

    An award's own claim can be lost (the broker could not take its task) or, on SQLite, miss a post being written
    beside it (SQLite locks nothing on a read).
    It reads only the held records' index (job_record_unmatched) and the allocations: its cost follows the usage held,
    not the history.
    """
    held = JobRecord.objects.filter(
        system=OuterRef("system"), account=OuterRef("scheduler_account"), allocation__isnull=True
    )
    owners = (
        Allocation.objects.exclude(state__in=Allocation.ENDED_STATES)
        .filter(Exists(held))
        .select_related("pool__system")
        .order_by("pk")
    )
    return sum(claim_held_usage(allocation) for allocation in owners)


def assignment_refusal(*, system: System, account: str, allocation: Allocation) -> str | None:
    """Why an account's held usage on `system` cannot go to `allocation` (see assign_unmatched_account), or None.

    Asked again under the system's lock when the assignment is made; asked first before the page asks to confirm,
    so that it never asks to confirm an assignment it will refuse.
    """
    state = Allocation.objects.values_list("state", flat=True).get(pk=allocation.pk)
    if state in Allocation.ENDED_STATES:
        return (
            f"{allocation.scheduler_account} has ended ({Allocation.State(state).label.lower()}): "
            "its usage can no longer be charged there"
        )
    owner = Allocation.objects.filter(system=system, scheduler_account=account).first()
    if owner is not None and owner.pk != allocation.pk:
        return f"'{account}' is the scheduler account of {owner}: its usage is charged there"
    alias = SchedulerAccountAlias.objects.filter(system=system, account=account).select_related("allocation").first()
    if alias is not None:
        return f"'{account}' on {system} was already assigned to {alias.allocation} on {alias.created_at:%d %B %Y}"
    return None


def replay_rejected_rows(*, batch: IngestBatch, actor) -> tuple[int, int]:
    """Read a batch's rejected rows again with the system's settings; returns (recorded, still rejected).

    Rows that now read are recorded like any others (and charged by the next reconciliation); rows that still
    fail keep their place, with the new reason.
    """
    if not batch.rejected_rows.filter(replayed_at__isnull=True).exists():
        return 0, 0
    system = batch.system
    with transaction.atomic():
        # The system's change lock before the rows are read: a replay of the same batch that held it meanwhile
        # has recorded its rows and marked them replayed, and they are not recorded (and counted) again.
        seq = next_change_seq(system)
        pending = list(batch.rejected_rows.filter(replayed_at__isnull=True).order_by("line_number"))
        if not pending:
            return 0, 0
        # A row kept with its bad bytes replaced, or only its beginning, is not the line the cluster sent: read
        # again, the replacement would be recorded (and charged) as if sent. No setting makes it readable: it stays.
        altered = [row for row in pending if row.reason in KEPT_ALTERED]
        readable = [row for row in pending if row.reason not in KEPT_ALTERED]
        failures: dict[int, str] = {}
        counts = None
        if readable:
            reader, offset = _replay_reader(batch, readable)

            def on_rejected(line_number: int, reason: str) -> None:
                failures[line_number - offset - 1] = reason

            # A run a later batch reported since keeps that newer report: these rows are older.
            counts = _record_rows(batch=batch, rows=reader, seq=seq, on_rejected=on_rejected)
        now = timezone.now()
        for index, row in enumerate(readable):
            if index in failures:
                row.reason = failures[index]
                row.replay_outcome = f"Still rejected on {now:%d %B %Y %H:%M}"
            else:
                row.replayed_at = now
                row.replay_outcome = "Recorded"
        for row in altered:
            row.replay_outcome = f"Still rejected on {now:%d %B %Y %H:%M}"
        RejectedRow.objects.bulk_update(pending, ["reason", "replayed_at", "replay_outcome"])
        still = len(failures) + len(altered)
        # The rows recorded now join the batch's counts, as if they had read the first time.
        read = ("new", "updated", "unchanged", "unmatched", "never_started", "without_gpus")
        added = {name: F(name) + getattr(counts, name) for name in read} if counts is not None else {}
        IngestBatch.objects.filter(pk=batch.pk).update(rejected=still, **added)
        if counts is not None:
            enqueue_reconciliation(system)
    return len(pending) - still, still


def _replay_reader(batch: IngestBatch, pending: list[RejectedRow]):
    """A reader over a batch's pending rejected rows (behind the payload's header), and the line offset of the
    first row in what it reads."""
    is_json = batch.format == "json"
    header = []
    if not (is_json or batch.columns):
        # The header is the payload's first line that is not blank, as the reader found it.
        try:
            with open_raw(batch) as raw:
                header = [next((line for line in raw if line.strip()), b"").rstrip(b"\r\n")]
        except OSError as problem:
            raise UsageError(f"The stored payload of batch {batch.pk} cannot be read: {problem}") from None
    if is_json:
        jobs = []
        for row in pending:
            try:
                jobs.append(json.loads(row.raw))
            except ValueError:
                jobs.append(row.raw)
        payload = json.dumps({"jobs": jobs}).encode()
    else:
        payload = b"\n".join([*header, *(row.raw.encode() for row in pending)]) + b"\n"
    try:
        reader = read_batch(batch, payload)
    except (SacctFormatError, IngestError) as problem:
        raise UsageError(f"The batch cannot be read again: {problem}") from None
    return reader, 0 if (is_json or batch.columns) else 1
