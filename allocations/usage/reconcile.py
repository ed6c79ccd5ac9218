"""Reconciliation: charge the ledger what changed in a system's job records since the last run, exactly once.

A run reads the records whose `changed_seq` is above the system's cursor, charges each record's difference
between what it costs (`gpu_seconds`) and what the ledger already holds for it (`charged_seconds`), and moves
`charged_seconds` and the cursor in the same database transaction as the ledger entries. So:
- its cost follows the records that changed, never the size of history (an index on (system, changed_seq));
- a second run, or a run after a worker died mid-way (its transaction rolled back), charges nothing twice;
- a running job is charged provisionally and re-charged by the difference when it ends; a run reported shorter
  is refunded the difference.

Per allocation and run there is at most one charge and one refund transaction, and a JobCharge row per job
ties every entry to the jobs it is made of.

Lock order (no two writers wait on each other in a circle): the system's reconciliation cursor, then ledger
accounts in the ledger's own order (allocations by primary key, then the consumed sink), then the system's
usage sequence (the lock every writer of job records holds), then job records.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from allocations import ledger
from allocations.models import (
    Allocation,
    JobCharge,
    JobRecord,
    ReconciliationCursor,
    ReconciliationRun,
    UsageSequence,
)
from programmes.models import System

# Tests of a worker dying mid-run set this: the run pauses after writing the ledger, before moving the records
# and the cursor, so it can be killed half done.
PAUSE_ENVIRONMENT_VARIABLE = "AIRR_TEST_RECONCILE_PAUSE_SECONDS"


@dataclass
class _AllocationDeltas:
    charges: list[tuple[int, int]] = field(default_factory=list)  # (job record id, positive seconds)
    refunds: list[tuple[int, int]] = field(default_factory=list)  # (job record id, positive seconds)


def reconcile_system(*, system: System) -> ReconciliationRun | None:
    """Charge every changed, matched job record of the system; returns the run, or None when nothing moved."""
    ReconciliationCursor.objects.get_or_create(system=system)
    UsageSequence.objects.get_or_create(system=system)
    started_at = timezone.now()
    with transaction.atomic():
        # One run per system at a time: a second run waits here, then sees what the first already charged.
        cursor = ReconciliationCursor.objects.select_for_update().get(system=system)
        from_seq = cursor.reconciled_seq
        rows = JobRecord.objects.filter(system=system, changed_seq__gt=from_seq).values_list(
            "pk", "allocation_id", "gpu_seconds", "charged_seconds", "changed_seq"
        )
        to_seq = from_seq
        per_allocation: dict[int, _AllocationDeltas] = defaultdict(_AllocationDeltas)
        new_charged: list[tuple[int, int]] = []
        for pk, allocation_id, gpu_seconds, charged_seconds, changed_seq in rows.iterator(chunk_size=20_000):
            to_seq = max(to_seq, changed_seq)
            # Unmatched records wait, held, until an allocation claims their account (which gives them a new
            # change number, so a later run sees them).
            if allocation_id is None or gpu_seconds == charged_seconds:
                continue
            delta = gpu_seconds - charged_seconds
            deltas = per_allocation[allocation_id]
            (deltas.charges if delta > 0 else deltas.refunds).append((pk, abs(delta)))
            new_charged.append((pk, gpu_seconds))
        if not per_allocation:
            if to_seq != from_seq:
                cursor.reconciled_seq = to_seq
                cursor.save(update_fields=["reconciled_seq"])
            return None
        run = ReconciliationRun.objects.create(
            system=system,
            from_seq=from_seq,
            to_seq=to_seq,
            records=len(new_charged),
            allocations=len(per_allocation),
            started_at=started_at,
            finished_at=started_at,
        )
        allocations = Allocation.objects.select_related("pool__system").in_bulk(list(per_allocation))
        movements, parts_by_key = [], {}
        for allocation_id in sorted(per_allocation):
            allocation, deltas = allocations[allocation_id], per_allocation[allocation_id]
            for kind, sign, parts in (("charge", 1, deltas.charges), ("refund", -1, deltas.refunds)):
                if parts:
                    key = f"usage-{kind}:{run.pk}:{allocation_id}"
                    seconds = sum(amount for _, amount in parts)
                    movements.append((allocation, sign * seconds, _reason(kind, len(parts), system), key))
                    parts_by_key[key] = (sign, parts)
        transactions = ledger.record_usage_in_bulk(
            system=system, movements=movements, cause=("reconciliation_run", str(run.pk))
        )
        net = sum(seconds for _, seconds, _, _ in movements)
        job_charges = [
            JobCharge(run=run, transaction=transactions[key], job_record_id=pk, seconds=sign * amount)
            for key, (sign, parts) in parts_by_key.items()
            for pk, amount in parts
        ]
        if pause := float(os.environ.get(PAUSE_ENVIRONMENT_VARIABLE) or 0):
            time.sleep(pause)
        JobCharge.objects.bulk_create(job_charges, batch_size=5000)
        # Writers of job records hold the usage sequence's lock; taking it here means no ingest holds record
        # locks this update needs while waiting for ours.
        UsageSequence.objects.select_for_update().get(system=system)
        _set_charged_seconds(new_charged)
        cursor.reconciled_seq = to_seq
        cursor.save(update_fields=["reconciled_seq"])
        run.charged_seconds = net
        run.finished_at = timezone.now()
        run.save(update_fields=["charged_seconds", "finished_at"])
        return run


def _reason(kind: str, jobs: int, system: System) -> str:
    plural = "s" if jobs != 1 else ""
    if kind == "charge":
        return f"Usage of {jobs} job{plural} reported by {system.name}"
    return f"{jobs} job{plural} re-reported shorter by {system.name}"


def _set_charged_seconds(values: list[tuple[int, int]]) -> None:
    table = JobRecord._meta.db_table
    with connection.cursor() as cursor:
        for start in range(0, len(values), 50_000):
            chunk = values[start : start + 50_000]
            if connection.vendor == "postgresql":
                cursor.execute(
                    f"UPDATE {table} AS r SET charged_seconds = v.seconds "  # noqa: S608 (a model's table name)
                    "FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, seconds) WHERE r.id = v.id",
                    [[pk for pk, _ in chunk], [seconds for _, seconds in chunk]],
                )
            else:
                cursor.executemany(
                    f"UPDATE {table} SET charged_seconds = %s WHERE id = %s",  # noqa: S608
                    [(seconds, pk) for pk, seconds in chunk],
                )
