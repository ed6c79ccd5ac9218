"""A hand-made ledger whose report figures are worked out by hand, and readers of the exported files.

The clock is moved (`at`) so that awards, usage, refunds and endings take effect in February, March and April
2026, each recorded when it happened; usage goes through the real ingest and reconciliation.
"""

import io
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
from django.conf import settings
from django.utils import timezone

from allocations import ledger
from allocations.usage.ingest import ingest_sacct
from allocations.usage.reconcile import reconcile_system
from tests.allocations.usage_helpers import HOUR, payload, sacct_line
from tests.factories import AllocationFactory, FundPoolFactory, ProgrammeFactory, SystemFactory, UserFactory

MARCH = (date(2026, 3, 1), date(2026, 3, 31))
APRIL = (date(2026, 4, 1), date(2026, 4, 30))


@contextmanager
def at(moment: datetime):
    """Run the portal's code as if it were `moment`: effective and recorded times are both then."""
    real = timezone.now
    timezone.now = lambda: moment
    try:
        yield
    finally:
        timezone.now = real


@dataclass
class LedgerWorld:
    isambard: object
    dawn: object
    builder: object  # programme
    science: object  # programme
    pool_builder: object
    pool_science: object
    a1: object
    a2: object
    b1: object
    alice: object
    bob: object


def _when(day: int, month: int, hour: int = 9) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def _ingest(system, *lines):
    ingest_sacct(system=system, payload=payload(*lines), source="command")
    reconcile_system(system=system)


def build_ledger_world(isambard, builder) -> LedgerWorld:
    """Two programmes, a pool each on a different system, three allocations, usage in March and April.

    GPU-hours, by what a report should show:
    - awarded: a1 100 (2 Feb), a2 40 (3 Mar), b1 30 (4 Mar)
    - used in March: a1 4 (alice) + 2 (carol) [10 Mar], a2 1 (bob) [10 Mar], b1 3 (alice) [12 Mar];
      plus a back-dated adjustment of +0.5 on a1 effective 20 Mar but recorded 5 Apr
    - used in April: a1 +1 (alice, 2 Apr) and -1 refunded (carol's job re-reported shorter, 3 Apr)
    - returned: a2 revoked 20 Apr, 39 back to its pool; forfeited: b1 expired 30 Apr, 27 forfeited
    """
    dawn = SystemFactory(name="Dawn", slug="dawn", cluster_name="dawn")
    science = ProgrammeFactory(name="AI for Science", slug="ai-for-science")
    alice = UserFactory(email="alice.pi@example.ac.uk", organisation="University of Bristol")
    bob = UserFactory(email="bob.pi@example.ac.uk", organisation="University of Cambridge")
    start, until = date(2026, 1, 1), date(2026, 12, 31)
    pool_builder = FundPoolFactory(
        programme=builder, system=isambard, name="Builder on Isambard-AI", valid_from=start, valid_until=until
    )
    pool_science = FundPoolFactory(
        programme=science,
        system=dawn,
        name="Science on Dawn",
        valid_from=start,
        valid_until=until,
        unused_hours_policy="forfeit",
    )
    with at(_when(5, 1)):
        for pool, hours in ((pool_builder, 1000), (pool_science, 500)):
            ledger.deposit_to_pool(
                pool=pool, seconds=hours * HOUR, actor=None, reason="Budget", idempotency_key=f"dep-{pool.pk}"
            )
    a1 = AllocationFactory(pool=pool_builder, holder=alice, scheduler_account="airr-00001")
    a2 = AllocationFactory(pool=pool_builder, holder=bob, scheduler_account="airr-00002")
    b1 = AllocationFactory(pool=pool_science, holder=alice, scheduler_account="airr-00003")
    for allocation, hours, moment in ((a1, 100, _when(2, 2)), (a2, 40, _when(3, 3)), (b1, 30, _when(4, 3))):
        with at(moment):
            ledger.commit_to_allocation(
                allocation=allocation,
                seconds=hours * HOUR,
                actor=None,
                reason="Award",
                idempotency_key=f"commit-{allocation.pk}",
            )
    carol_job = {"account": "airr-00001", "user": "carol", "start": "2026-03-09T10:00:00"}
    with at(_when(10, 3)):
        _ingest(
            isambard,
            sacct_line(1, account="airr-00001", user="alice", gpus=4, elapsed=HOUR),
            sacct_line(2, **carol_job, end="2026-03-09T12:00:00", gpus=1, elapsed=2 * HOUR),
            sacct_line(3, account="airr-00002", user="bob", gpus=2, elapsed=HOUR // 2),
        )
    with at(_when(12, 3)):
        _ingest(
            dawn, sacct_line(4, account="airr-00003", user="alice", gpus=3, elapsed=HOUR).replace("isambard-ai", "dawn")
        )
    with at(_when(2, 4)):
        _ingest(
            isambard,
            sacct_line(
                5,
                account="airr-00001",
                user="alice",
                start="2026-04-01T10:00:00",
                end="2026-04-01T11:00:00",
                gpus=1,
                elapsed=HOUR,
            ),
        )
    with at(_when(3, 4)):
        _ingest(isambard, sacct_line(2, **carol_job, end="2026-03-09T11:00:00", gpus=1, elapsed=HOUR))
    with at(_when(5, 4)):
        march_charge = a1.ledger_account.entries.filter(transaction__type="charge").earliest("effective_at")
        ledger.adjust_usage(
            corrects=march_charge.transaction,
            seconds=HOUR // 2,
            actor=None,
            reason="Node fault credit reversed",
            idempotency_key="adjust-a1",
            effective_at=_when(20, 3),
        )
    with at(_when(20, 4)):
        ledger.revoke_allocation(allocation=a2, actor=None, reason="Project stopped", idempotency_key="revoke-a2")
    with at(_when(30, 4, 21)):  # 22:00 in London: still April there, where months are counted
        ledger.expire_allocation(allocation=b1, idempotency_key="expire-b1")
    return LedgerWorld(isambard, dawn, builder, science, pool_builder, pool_science, a1, a2, b1, alice, bob)


def hours(value) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


def read_csv(path_or_bytes) -> tuple[list[str], pd.DataFrame]:
    """The `#` note lines and the table of an exported CSV (read back with pandas, every cell as text)."""
    text = (
        path_or_bytes.decode() if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_text(encoding="utf-8")
    )
    lines = text.splitlines(keepends=True)
    notes = [line.rstrip("\n") for line in lines if line.startswith("#")]
    table = "".join(line for line in lines if not line.startswith("#"))
    return notes, pd.read_csv(io.StringIO(table), dtype=str, keep_default_na=False)


def read_xlsx(path_or_bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    sheets = pd.read_excel(source, sheet_name=None, dtype=object, keep_default_na=False)
    return sheets["Report"], sheets["Notes"]


def export_file(export) -> Path:
    return Path(settings.MEDIA_ROOT) / export.file_path
