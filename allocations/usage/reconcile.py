"""Reconciliation: charge the ledger what changed in a system's job records since the last run, exactly once.

A run reads the records whose `changed_seq` is above the system's cursor, charges each record's difference
between what it costs (`gpu_seconds`) and what the ledger already holds for it (the sum of its JobCharge
rows), and writes those JobCharge rows and moves the cursor in the same database transaction as the ledger
entries. So:
- its cost follows the records that changed, never the size of history (an index on (system, changed_seq),
  and one on the charges of a record);
- a second run, or a run after a worker died mid-way (its transaction rolled back), charges nothing twice;
- a running job is charged provisionally and re-charged by the difference when it ends; a run reported shorter
  is refunded the difference.

Per allocation and run there is at most one charge and one refund transaction, and a JobCharge row per job
ties every entry to the jobs it is made of.

Lock order: the system's reconciliation cursor, then ledger accounts in the ledger's own order. A record an
ingest changes while a run is under way gets a change number above the run's, so the next run sees it.
"""

from __future__ import annotations

import io
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from allocations import ledger
from allocations.models import (
    Allocation,
    JobCharge,
    JobRecord,
    ReconciliationCursor,
    ReconciliationRun,
)
from programmes.models import System

# Tests of a worker dying mid-run set this: the run pauses after writing the ledger, before moving the records
# and the cursor, so it can be killed half done.
PAUSE_ENVIRONMENT_VARIABLE = "AIRR_TEST_RECONCILE_PAUSE_SECONDS"


@dataclass
class _AllocationDeltas:
    charges: list[tuple[int, int]] = field(default_factory=list)  # (job record id, positive seconds)
    refunds: list[tuple[int, int]] = field(default_factory=list)  # (job record id, positive seconds)


def reconcile_system(*, system: System, effective_at: datetime | None = None) -> ReconciliationRun | None:
    """Charge every changed, matched job record of the system; returns the run, or None when nothing moved.

    The charges take effect now, unless `effective_at` says when (for loading history, as the demo data does).
    """
    ReconciliationCursor.objects.get_or_create(system=system)
    started_at = timezone.now()
    with transaction.atomic():
        # One run per system at a time: a second run waits here, then sees what the first already charged.
        cursor = ReconciliationCursor.objects.select_for_update().get(system=system)
        from_seq = cursor.reconciled_seq
        if connection.vendor == "postgresql":
            # Before statistics catch up with a big ingest the planner overestimates this query and compiles
            # it (JIT), which costs a hundred times more than the index scan it usually is.
            with connection.cursor() as db:
                db.execute("SET LOCAL jit = off")
        rows = (
            JobRecord.objects.filter(system=system, changed_seq__gt=from_seq)
            .order_by()
            .with_charged_seconds()
            .values_list("pk", "allocation_id", "gpu_seconds", "charged_seconds", "changed_seq")
        )
        to_seq = from_seq
        per_allocation: dict[int, _AllocationDeltas] = defaultdict(_AllocationDeltas)
        records = 0
        for pk, allocation_id, gpu_seconds, charged_seconds, changed_seq in rows.iterator(chunk_size=20_000):
            to_seq = max(to_seq, changed_seq)
            # Unmatched records wait, held, until an allocation claims their account (which gives them a new
            # change number, so a later run sees them).
            if allocation_id is None or gpu_seconds == charged_seconds:
                continue
            delta = gpu_seconds - charged_seconds
            deltas = per_allocation[allocation_id]
            (deltas.charges if delta > 0 else deltas.refunds).append((pk, abs(delta)))
            records += 1
        if not per_allocation:
            if to_seq != from_seq:
                cursor.reconciled_seq = to_seq
                cursor.save(update_fields=["reconciled_seq"])
            return None
        run = ReconciliationRun.objects.create(
            system=system,
            from_seq=from_seq,
            to_seq=to_seq,
            records=records,
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
            system=system,
            movements=movements,
            cause=("reconciliation_run", str(run.pk)),
            effective_at=effective_at,
        )
        net = sum(seconds for _, seconds, _, _ in movements)
        job_charges = [
            (run.pk, transactions[key].pk, pk, sign * amount)
            for key, (sign, parts) in parts_by_key.items()
            for pk, amount in parts
        ]
        if pause := float(os.environ.get(PAUSE_ENVIRONMENT_VARIABLE) or 0):
            time.sleep(pause)
        _insert_job_charges(job_charges)
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


def _insert_job_charges(charges: list[tuple[int, int, int, int]]) -> None:
    """Insert (run, transaction, job record, seconds) rows; COPY on PostgreSQL: a run can hold a million."""
    if connection.vendor != "postgresql":
        JobCharge.objects.bulk_create(
            (JobCharge(run_id=r, transaction_id=t, job_record_id=j, seconds=s) for r, t, j, s in charges),
            batch_size=5000,
        )
        return
    columns = "(run_id, transaction_id, job_record_id, seconds)"
    for start in range(0, len(charges), 100_000):
        text = "".join(f"{r}\t{t}\t{j}\t{s}\n" for r, t, j, s in charges[start : start + 100_000])
        with connection.cursor() as cursor:
            cursor.cursor.copy_expert(f"COPY {JobCharge._meta.db_table} {columns} FROM STDIN", io.StringIO(text))
