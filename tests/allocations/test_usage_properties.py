"""Property-based: any sequence of payloads, reconciliations and assignments charges each run exactly once.

An independent model follows DESIGN.md's rules ("Usage: from the scheduler to the ledger"): a run is
(JobIDRaw, Start); its last report wins, except that a report of it running never puts back a run reported ended;
it costs GPUs × ElapsedRaw × the charge factor, rounded once per job; a byte-identical payload is a no-op; usage of
an account no allocation owns is held, and charged once the account is assigned. Chunk sizes are drawn too, so
that both the rows copied straight in and the staged merge (PostgreSQL), and several ORM chunks (SQLite), run.
"""

from datetime import datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import transaction
from django.db.models import Sum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allocations import ledger
from allocations.models import JobCharge, JobRecord, LedgerAccount, LedgerTransaction, RejectedRow
from allocations.usage import ingest as ingest_module
from allocations.usage.ingest import gpu_seconds_of, ingest_sacct
from allocations.usage.reconcile import reconcile_system
from allocations.usage.services import UsageError, assign_unmatched_account
from tests.allocations.usage_helpers import funded_allocation, payload, sacct_line
from tests.factories import SystemFactory

JOBS = 4
RUNS = 2
OWNED = ("airr-00001", "airr-00002")  # the two allocations' own accounts
UNMATCHED = "airr-09999"  # owned by no allocation until assigned
ACCOUNTS = (*OWNED, UNMATCHED)
FIRST_START = datetime(2026, 3, 1, 10, 0)

# A report: (job, run, ended, elapsed, gpus, extra), where extra adds a row that charges nothing after it: the
# run's `.batch` step (repeating its GPUs) or the job pending again (requeued, not yet started).
report = st.tuples(
    st.integers(0, JOBS - 1),
    st.integers(0, RUNS - 1),
    st.booleans(),
    st.sampled_from([0, 1, 59, 600, 3599, 3600, 7201]),
    st.integers(0, 4),
    st.sampled_from([None, "step", "pending"]),
)
operation = st.one_of(
    st.tuples(st.just("post"), st.lists(report, min_size=1, max_size=6)),
    st.tuples(st.just("post again"), st.integers(0, 100)),
    st.tuples(st.just("reconcile")),
    st.tuples(st.just("assign"), st.integers(0, len(OWNED) - 1)),
)
chunk_sizes = st.sampled_from([1, 2, 1_000_000])


def _lines(job: int, run: int, ended: bool, elapsed: int, gpus: int, extra: str | None, account: str) -> list[str]:
    start = FIRST_START + timedelta(days=run)
    end = (start + timedelta(seconds=elapsed)).isoformat() if ended else "Unknown"
    state = "COMPLETED" if ended else "RUNNING"
    common = {"account": account, "start": start.isoformat(), "end": end, "elapsed": elapsed, "gpus": gpus}
    lines = [sacct_line(1000 + job, state=state, **common)]
    if extra == "step":
        lines.append(sacct_line(f"{1000 + job}.batch", job_id_raw=str(1000 + job), state=state, **common))
    elif extra == "pending":
        lines.append(
            sacct_line(1000 + job, account=account, state="PENDING", start="Unknown", end="Unknown", elapsed=0)
        )
    return lines


class Model:
    """What each run should cost, and which allocation it belongs to, by DESIGN.md's rules alone."""

    def __init__(self, accounts: dict[int, str], factor: Decimal):
        self.accounts = accounts  # job → its scheduler account
        self.factor = factor
        self.runs: dict[tuple[int, int], tuple[bool, int]] = {}  # (job, run) → (ended, cost)
        self.assigned_to: int | None = None  # the allocation (index) the unmatched account was assigned to

    def post(self, reports) -> None:
        for job, run, ended, elapsed, gpus, _ in reports:
            known = self.runs.get((job, run))
            if known is not None and known[0] and not ended:
                continue  # a run reported ended never runs again
            self.runs[(job, run)] = (ended, gpu_seconds_of(gpus, elapsed, self.factor))

    def owner(self, job: int) -> int | None:
        account = self.accounts[job]
        return OWNED.index(account) if account in OWNED else self.assigned_to

    def cost_of(self, allocation: int) -> int:
        return sum(cost for (job, _), (_, cost) in self.runs.items() if self.owner(job) == allocation)


@pytest.mark.django_db
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    operations=st.lists(operation, min_size=1, max_size=10),
    accounts=st.lists(st.sampled_from(ACCOUNTS), min_size=JOBS, max_size=JOBS),
    factor=st.sampled_from([Decimal("1.0"), Decimal("1.5"), Decimal("0.333")]),
    copy_chunk_rows=chunk_sizes,
    chunk_rows=chunk_sizes,
)
def test_any_sequence_of_payloads_reconciliations_and_assignments_charges_each_run_once(
    operations, accounts, factor, copy_chunk_rows, chunk_rows
):
    with (
        transaction.atomic(),
        mock.patch.object(ingest_module, "COPY_CHUNK_ROWS", copy_chunk_rows),
        mock.patch.object(ingest_module, "CHUNK_ROWS", chunk_rows),
    ):
        system = SystemFactory(cluster_name="isambard-ai", charge_factor=factor)
        allocations = [funded_allocation(system, account=account, hours=10_000) for account in OWNED]
        model = Model(dict(enumerate(accounts)), factor)
        posted: list[tuple[bytes, list]] = []
        for op in operations:
            kind, *args = op
            if kind == "post":
                reports = args[0]
                data = payload(*(line for r in reports for line in _lines(*r, accounts[r[0]])))
                if all(data != earlier for earlier, _ in posted):
                    model.post(reports)
                posted.append((data, reports))
                ingest_sacct(system=system, payload=data, source="command")
            elif kind == "post again":
                if posted:
                    ingest_sacct(system=system, payload=posted[args[0] % len(posted)][0], source="command")
            elif kind == "reconcile":
                reconcile_system(system=system)
            elif kind == "assign":
                allocation = allocations[args[0]]
                try:
                    assign_unmatched_account(system=system, account=UNMATCHED, allocation=allocation, actor=None)
                except UsageError:
                    # Refused only when assigned already, or when nothing of the account is held.
                    assert model.assigned_to is not None or all(accounts[job] != UNMATCHED for job, _ in model.runs)
                else:
                    assert model.assigned_to is None
                    model.assigned_to = args[0]

        reconcile_system(system=system)

        # Every row read (the steps and pending rows skipped, not rejected).
        assert not RejectedRow.objects.filter(batch__system=system).exists()

        # Each run is stored once, at the cost the model says, with the allocation that owns its account.
        stored = {
            (int(job_id_raw) - 1000, (start.replace(tzinfo=None) - FIRST_START).days): (end is not None, cost, owner)
            for job_id_raw, start, end, cost, owner in JobRecord.objects.filter(system=system).values_list(
                "job_id_raw", "start", "end", "gpu_seconds", "allocation_id"
            )
        }
        pks = [allocation.pk for allocation in allocations]
        expected = {
            key: (ended, cost, None if model.owner(key[0]) is None else pks[model.owner(key[0])])
            for key, (ended, cost) in model.runs.items()
        }
        assert stored == expected

        # Each allocation's net usage is what its runs cost; each run's job charges sum to its cost; an unmatched
        # run holds none.
        for index, allocation in enumerate(allocations):
            assert ledger.net_usage(ledger.allocation_account(allocation)) == model.cost_of(index)
        for record in JobRecord.objects.filter(system=system):
            held = JobCharge.objects.filter(job_record=record).aggregate(total=Sum("seconds"))["total"] or 0
            assert held == (record.gpu_seconds if record.allocation_id is not None else 0)

        # Every balance is the sum of its entries, and the books balance.
        for account in LedgerAccount.objects.all():
            assert account.balance == (account.entries.aggregate(total=Sum("amount"))["total"] or 0)
        for txn in LedgerTransaction.objects.all():
            assert (txn.entries.aggregate(total=Sum("amount"))["total"] or 0) == 0

        # A further reconciliation charges nothing.
        transactions = LedgerTransaction.objects.count()
        assert reconcile_system(system=system) is None
        assert LedgerTransaction.objects.count() == transactions
        transaction.set_rollback(True)
