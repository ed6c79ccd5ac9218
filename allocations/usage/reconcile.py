"""Reconciliation: charge the ledger what changed in a system's job records since the last run, exactly once.

A run reads the records whose `changed_seq` is above the system's cursor, charges each record's difference
between what it costs (`gpu_seconds`) and what the ledger already holds for it (the sum of its JobCharge
rows), and writes those JobCharge rows and moves the cursor in the same database transaction as the ledger
entries. So:
- its cost follows the records that changed, never the size of history: it reads records numbered from its
  cursor up to the system's last committed change number (UsageSequence), so a run with nothing new reads no
  record at all, and one with changes finds the records stored since by their ids, in the ranges their writes
  noted (JobRecordIdRange), and those changed in place by an index on (system, changed_seq) that holds only them
  (`revised`);
- a second run, or a run after a worker died mid-way (its transaction rolled back), charges nothing twice;
- a running job is charged provisionally and re-charged by the difference when it ends; a run reported shorter
  is refunded the difference, even past the allocation's net usage (hours given back by hand for the same job
  take it below zero): the refund is bounded by that job's own charges, so no allocation's state can refuse it
  and, with it, stop every later run of the system.

Per allocation and run there is at most one charge and one refund transaction, and a JobCharge row per job
ties every entry to the jobs it is made of.

A run that fails is recorded on the cursor (record_reconciliation_failure, by the task that ran it), for the
system's operators to see, until a run of the system next succeeds, even one with nothing to charge.

Lock order: the system's reconciliation cursor, then ledger accounts in the ledger's own order. A record an
ingest changes while a run is under way gets a change number above the run's, so the next run sees it.
"""

from __future__ import annotations

import io
import itertools
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from allocations import ledger
from allocations.models import (
    Allocation,
    JobCharge,
    JobRecord,
    JobRecordIdRange,
    ReconciliationCursor,
    ReconciliationRun,
    UsageSequence,
)
from programmes.models import System

# The cause a run gives its ledger transactions: the mark of usage that is its jobs' (their job charges), where
# usage moved by hand has none.
RECONCILIATION_CAUSE = "reconciliation_run"

# Tests of a worker dying mid-run set this: the run pauses after writing the ledger, before moving the records
# and the cursor, so it can be killed half done. While paused, its database session shows PAUSED_APPLICATION_NAME
# (pg_stat_activity), so the test kills it there, and only there, however slow the machine.
PAUSE_ENVIRONMENT_VARIABLE = "AIRR_TEST_RECONCILE_PAUSE_SECONDS"
PAUSED_APPLICATION_NAME = "airr-reconcile-paused"


def reconcile_system(*, system: System, effective_at: datetime | None = None) -> ReconciliationRun | None:
    """Charge every changed, matched job record of the system; returns the run, or None when nothing moved.

    The charges take effect now, unless `effective_at` says when (for loading history, as the demo data does).
    """
    ReconciliationCursor.objects.get_or_create(system=system)
    started_at = timezone.now()
    with transaction.atomic():
        # One run per system at a time: a second run waits here, then sees what the first already charged.
        cursor = ReconciliationCursor.objects.select_for_update().get(system=system)
        # Committed with the run, so a failure recorded before is over only if this run succeeds.
        cleared = cursor.clear_failure()
        from_seq = cursor.reconciled_seq
        # The system's last committed change number. A writer takes numbers in order under the sequence's lock
        # and holds it to its commit, so every record numbered up to it is committed, and visible from here on.
        to_seq = UsageSequence.objects.filter(system=system).values_list("last_seq", flat=True).first() or 0
        if to_seq <= from_seq:
            if cleared:
                cursor.save(update_fields=cleared)
            return None
        changes = (_SqlChanges if connection.vendor == "postgresql" else _PythonChanges)(system, from_seq, to_seq)
        per_allocation = changes.per_allocation
        cursor.reconciled_seq = to_seq
        # Their records are read: the ranges are no longer needed (the cursor's move, in this transaction, says so).
        JobRecordIdRange.objects.filter(system=system, seq__lte=to_seq).delete()
        if not per_allocation:
            # Numbers taken by writes that changed nothing to charge (unchanged or unmatched records).
            cursor.save(update_fields=["reconciled_seq", *cleared])
            return None
        run = ReconciliationRun.objects.create(
            system=system,
            from_seq=from_seq,
            to_seq=to_seq,
            records=changes.records,
            allocations=len(per_allocation),
            started_at=started_at,
            finished_at=started_at,
        )
        allocations = Allocation.objects.select_related("pool__system").in_bulk(list(per_allocation))
        movements, keys = [], {}
        for allocation_id in sorted(per_allocation):
            allocation, deltas = allocations[allocation_id], per_allocation[allocation_id]
            for kind, sign, (jobs, seconds) in (("charge", 1, deltas.charges), ("refund", -1, deltas.refunds)):
                if jobs:
                    key = f"usage-{kind}:{run.pk}:{allocation_id}"
                    movements.append((allocation, sign * seconds, _reason(kind, jobs, system), key))
                    keys[(allocation_id, sign)] = key
        transactions = ledger.record_usage_in_bulk(
            system=system,
            movements=movements,
            cause=(RECONCILIATION_CAUSE, str(run.pk)),
            effective_at=effective_at,
        )
        net = sum(seconds for _, seconds, _, _ in movements)
        if pause := float(os.environ.get(PAUSE_ENVIRONMENT_VARIABLE) or 0):
            if connection.vendor == "postgresql":
                with connection.cursor() as db:
                    db.execute("SET LOCAL application_name = %s", [PAUSED_APPLICATION_NAME])
            time.sleep(pause)
        changes.insert_job_charges(run.pk, {part: transactions[key].pk for part, key in keys.items()})
        cursor.save(update_fields=["reconciled_seq", *cleared])
        run.charged_seconds = net
        run.finished_at = timezone.now()
        run.save(update_fields=["charged_seconds", "finished_at"])
        return run


def record_reconciliation_failure(*, system: System, problem: Exception) -> None:
    """Count a failed run of the system (its own transaction rolled back, having charged nothing), keeping when
    the failing began and the last error, until a run succeeds."""
    ReconciliationCursor.objects.get_or_create(system=system)
    longest = ReconciliationCursor._meta.get_field("failure").max_length
    failure = f"{type(problem).__name__}: {problem}"
    if len(failure) > longest:
        failure = failure[: longest - 1] + "…"
    # One statement, so two failing at once both count. A run that succeeded between this one's failure and this
    # record leaves it shown until the next run (the beat's, within minutes) clears it: shown too long, never lost.
    ReconciliationCursor.objects.filter(system=system).update(
        failures=F("failures") + 1,
        failing_since=Coalesce("failing_since", Value(timezone.now())),
        failure=failure,
    )


def failing_reconciliations(systems):
    """The cursors of `systems` whose last run failed: their usage is not being charged until one succeeds."""
    return (
        ReconciliationCursor.objects.filter(system__in=systems, failures__gt=0)
        .select_related("system")
        .order_by("system__name")
    )


def _id_ranges(system: System, from_seq: int, to_seq: int) -> list[tuple[int, int]]:
    """The id ranges (after, through] of the records stored by the system's writes numbered in (from_seq, to_seq]."""
    ranges = JobRecordIdRange.objects.filter(system=system, seq__gt=from_seq, seq__lte=to_seq).order_by("seq")
    return list(ranges.values_list("after_id", "through_id"))


@dataclass
class _Totals:
    charges: tuple[int, int] = (0, 0)  # (jobs, positive seconds)
    refunds: tuple[int, int] = (0, 0)  # (jobs, positive seconds)


class _SqlChanges:
    """PostgreSQL: each changed record's difference is worked out and kept in the database, never in Python.

    The changed records are copied to a temporary table and counted there; one statement then writes (record,
    allocation, difference) for those whose cost differs from what their job charges hold to another; the totals
    per allocation come back (a few thousand rows); the job charges are then inserted from that table in one
    statement, each pointing at its allocation's charge or refund transaction.
    """

    def __init__(self, system: System, from_seq: int, to_seq: int):
        table, charges = JobRecord._meta.db_table, JobCharge._meta.db_table
        ranges = JobRecordIdRange._meta.db_table
        with connection.cursor() as db:
            # Before statistics catch up with a big ingest the planner overestimates these queries and compiles
            # them (JIT), which costs more than running them.
            db.execute("SET LOCAL jit = off")
            db.execute("SET LOCAL work_mem = '256MB'")
            # Dropped at commit; a run before it inside the same transaction (tests do that) left its own.
            db.execute("DROP TABLE IF EXISTS reconcile_changed, reconcile_deltas, reconcile_transactions")
            # Table names come from the models; every value is a parameter. Unmatched records wait, held, until
            # an allocation claims their account (which gives them a new change number, so a later run sees them).
            # The records stored since the last run, through the primary key in the ranges their writes noted
            # (other systems' records stored meanwhile may fall inside), and those changed in place since, by the
            # change index. A record both stored and changed since is read once, as changed.
            db.execute(
                f"""
                CREATE TEMPORARY TABLE reconcile_changed ON COMMIT DROP AS
                SELECT j.id, j.allocation_id, j.gpu_seconds
                FROM {ranges} r
                CROSS JOIN LATERAL (
                    SELECT id, allocation_id, gpu_seconds FROM {table}
                    WHERE id > r.after_id AND id <= r.through_id AND system_id = %(system)s
                        AND changed_seq > %(from)s AND changed_seq <= %(to)s AND allocation_id IS NOT NULL
                        AND NOT revised
                    -- Kept a subquery, so each range is read through the primary key: flattened into a join, the
                    -- planner, unable to size a range whose bounds come from a row, reads the whole table instead
                    -- from about five ranges on.
                    OFFSET 0
                ) j
                WHERE r.system_id = %(system)s AND r.seq > %(from)s AND r.seq <= %(to)s
                UNION ALL
                SELECT id, allocation_id, gpu_seconds FROM {table}
                WHERE system_id = %(system)s AND changed_seq > %(from)s AND changed_seq <= %(to)s
                    AND allocation_id IS NOT NULL AND revised
                """,  # noqa: S608
                {"system": system.pk, "from": from_seq, "to": to_seq},
            )
            # How many changed is known now, not guessed from the job records' statistics, which lag behind a
            # big ingest: guessed as a handful, a million records were each looked up in the charges one by one.
            db.execute("ANALYZE reconcile_changed")
            db.execute(
                f"""
                CREATE TEMPORARY TABLE reconcile_deltas ON COMMIT DROP AS
                -- What the ledger holds for each changed record, summed in one pass over their charges
                -- (by their index when few records changed, by a hash when many did).
                SELECT c.id, c.allocation_id, c.gpu_seconds - COALESCE(held.seconds, 0) AS delta
                FROM reconcile_changed c
                LEFT JOIN (
                    SELECT job_record_id, sum(seconds)::bigint AS seconds FROM {charges}
                    WHERE job_record_id IN (SELECT id FROM reconcile_changed)
                    GROUP BY job_record_id
                ) held ON held.job_record_id = c.id
                WHERE c.gpu_seconds <> COALESCE(held.seconds, 0)
                """  # noqa: S608
            )
            db.execute(
                """
                SELECT allocation_id,
                    count(*) FILTER (WHERE delta > 0), COALESCE(sum(delta) FILTER (WHERE delta > 0), 0),
                    count(*) FILTER (WHERE delta < 0), COALESCE(-sum(delta) FILTER (WHERE delta < 0), 0)
                FROM reconcile_deltas GROUP BY allocation_id
                """
            )
            self.per_allocation = {
                allocation_id: _Totals((charged_jobs, int(charged)), (refunded_jobs, int(refunded)))
                for allocation_id, charged_jobs, charged, refunded_jobs, refunded in db.fetchall()
            }
        self.records = sum(t.charges[0] + t.refunds[0] for t in self.per_allocation.values())

    def insert_job_charges(self, run_id: int, transaction_ids: dict[tuple[int, int], int]) -> None:
        """Write each record's charge, pointing at its allocation's charge or refund transaction.

        The rows are made by the database and loaded back with COPY: COPY writes a page of rows per log record
        where INSERT … SELECT writes one per row, which was most of a big run's cost.
        """
        parts = list(transaction_ids.items())
        with connection.cursor() as db:
            db.execute(
                """
                CREATE TEMPORARY TABLE reconcile_transactions ON COMMIT DROP AS
                SELECT * FROM unnest(%s::bigint[], %s::integer[], %s::bigint[]) AS t(allocation_id, sign, id)
                """,
                [
                    [allocation_id for (allocation_id, _), _ in parts],
                    [sign for (_, sign), _ in parts],
                    [transaction_id for _, transaction_id in parts],
                ],
            )
            db.execute("CREATE INDEX ON reconcile_transactions (allocation_id, sign)")
            # About 30 bytes a record: a million-record run holds some 30 MB here for a moment.
            rows = io.BytesIO()
            query = """
                COPY (
                    SELECT %s, t.id, d.id, d.delta
                    FROM reconcile_deltas d
                    JOIN reconcile_transactions t ON t.allocation_id = d.allocation_id AND t.sign = sign(d.delta)
                    ORDER BY d.id
                ) TO STDOUT
            """
            db.cursor.copy_expert(db.cursor.mogrify(query, [run_id]).decode(), rows)
            rows.seek(0)
            db.cursor.copy_expert(
                f"COPY {JobCharge._meta.db_table} (run_id, transaction_id, job_record_id, seconds) FROM STDIN", rows
            )
            db.execute("DROP TABLE reconcile_changed, reconcile_deltas, reconcile_transactions")


class _PythonChanges:
    """The portable path (SQLite): the changed records read one by one, their differences kept in Python."""

    def __init__(self, system: System, from_seq: int, to_seq: int):
        numbered = JobRecord.objects.filter(changed_seq__gt=from_seq, changed_seq__lte=to_seq)
        # Stored since, range by range (the ranges their writes noted), then changed in place since: a record both
        # stored and changed since is read once, as changed. A range is read by its ids alone: asked for the
        # system's too, SQLite reads all of them by its run key. (SQLite's writers take turns, so a range holds
        # only its system's records; the check below keeps that so whatever the database.)
        parts = [
            numbered.filter(pk__gt=after, pk__lte=through, revised=False)
            for after, through in _id_ranges(system, from_seq, to_seq)
        ]
        parts.append(numbered.filter(system=system, revised=True))
        self.parts: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        self.records = 0
        rows = itertools.chain.from_iterable(
            part.order_by()
            .with_charged_seconds()
            .values_list("pk", "system_id", "allocation_id", "gpu_seconds", "charged_seconds")
            .iterator(chunk_size=20_000)
            for part in parts
        )
        for pk, system_id, allocation_id, gpu_seconds, charged_seconds in rows:
            # Unmatched records wait, held, until an allocation claims their account (which gives them a new
            # change number, so a later run sees them).
            if system_id != system.pk or allocation_id is None or gpu_seconds == charged_seconds:
                continue
            delta = gpu_seconds - charged_seconds
            self.parts[(allocation_id, 1 if delta > 0 else -1)].append((pk, delta))
            self.records += 1
        self.per_allocation: dict[int, _Totals] = defaultdict(_Totals)
        for (allocation_id, sign), parts in self.parts.items():
            totals = (len(parts), abs(sum(delta for _, delta in parts)))
            if sign > 0:
                self.per_allocation[allocation_id].charges = totals
            else:
                self.per_allocation[allocation_id].refunds = totals

    def insert_job_charges(self, run_id: int, transaction_ids: dict[tuple[int, int], int]) -> None:
        JobCharge.objects.bulk_create(
            (
                JobCharge(run_id=run_id, transaction_id=transaction_ids[part], job_record_id=pk, seconds=delta)
                for part, parts in self.parts.items()
                for pk, delta in parts
            ),
            batch_size=5000,
        )


def _reason(kind: str, jobs: int, system: System) -> str:
    plural = "s" if jobs != 1 else ""
    if kind == "charge":
        return f"Usage of {jobs} job{plural} reported by {system.name}"
    return f"{jobs} job{plural} re-reported shorter by {system.name}"
