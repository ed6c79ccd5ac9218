"""Helpers for the usage tests: sacct text written here, so each test shows the rows it feeds in."""

from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from allocations import ledger
from allocations.usage.services import create_ingest_token
from tests.factories import AllocationFactory, FundPoolFactory

HEADER = "JobID|JobIDRaw|Cluster|Account|User|State|Submit|Start|End|ElapsedRaw|AllocTRES|JobName"
HOUR = 3600


def sacct_line(
    job_id,
    *,
    account="airr-00001",
    user="alice",
    state="COMPLETED",
    start="2026-03-01T10:00:00",
    end="2026-03-01T11:00:00",
    elapsed=3600,
    gpus=1,
    name="train",
    job_id_raw=None,
    cluster="isambard-ai",
):
    tres = f"billing=1,cpu=8,gres/gpu={gpus},node=1" if gpus is not None else "billing=1,cpu=8,node=1"
    raw = job_id_raw or str(job_id).split("_")[0].split("+")[0]
    return (
        f"{job_id}|{raw}|{cluster}|{account}|{user}|{state}|2026-03-01T09:00:00|{start}|{end}|{elapsed}|{tres}|{name}"
    )


def payload(*lines: str) -> bytes:
    return ("\n".join([HEADER, *lines]) + "\n").encode()


def funded_allocation(system, *, account="airr-00001", hours=100, **options):
    pool = FundPoolFactory(system=system, **options.pop("pool_options", {}))
    ledger.deposit_to_pool(
        pool=pool,
        seconds=10 * hours * HOUR,
        actor=None,
        reason="Budget",
        idempotency_key=f"deposit-{pool.pk}",
    )
    allocation = AllocationFactory(pool=pool, scheduler_account=account, **options)
    ledger.commit_to_allocation(
        allocation=allocation,
        seconds=hours * HOUR,
        actor=None,
        reason="Award",
        idempotency_key=f"commit-{allocation.pk}",
    )
    return allocation


def given_back_twice(system, *also: str, charged=10 * HOUR, reported=5 * HOUR, **allocation_options):
    """An allocation (funded_allocation's, with `allocation_options`) whose job's `charged` GPU-seconds were all
    given back by hand, then the job reported at `reported` (with the lines `also`, in the same payload):
    reconciliation gives back the difference a second time, so its usage is that far below zero. Returns the
    allocation and the run that refunded."""
    from allocations.models import LedgerTransaction
    from allocations.usage.ingest import ingest_sacct
    from allocations.usage.reconcile import reconcile_system

    allocation = funded_allocation(system, **allocation_options)
    ingest_sacct(system=system, payload=payload(sacct_line(1, elapsed=charged)), source="command")
    run = reconcile_system(system=system)
    ledger.refund_usage(
        allocation=allocation,
        seconds=charged,
        actor=None,
        reason="A node failed",
        idempotency_key="given-back-by-hand",
        corrects=LedgerTransaction.objects.get(idempotency_key=f"usage-charge:{run.pk}:{allocation.pk}"),
    )
    ingest_sacct(system=system, payload=payload(sacct_line(1, elapsed=reported), *also), source="command")
    return allocation, reconcile_system(system=system)


def sacct_sample(name: str) -> Path:
    directory = Path(__file__).resolve().parents[3] / "shared" / "data" / "sacct"
    if not directory.is_dir():
        pytest.skip(f"the real sacct samples are not beside the clone (looked in {directory})")
    return directory / name


def post_usage_report(system, body: bytes):
    """Post a cluster's own view of usage with a new ingest token of `system`; a 500 comes back as a status."""
    _, key = create_ingest_token(system=system, name="cluster", actor=None)
    return Client(raise_request_exception=False).generic(
        "POST",
        reverse("usage-report", args=[system.slug]),
        body,
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
