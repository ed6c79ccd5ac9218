"""The funded call of the proposal tests, for the award tests here, and a second pool of it on Dawn."""

import pytest

from allocations import ledger
from tests.factories import HOUR, FundPoolFactory
from tests.programmes.conftest import assessor, call, director, pool  # noqa: F401


@pytest.fixture
def dawn_pool(call, programme, dawn, pool):  # noqa: F811 (the fixtures imported above)
    """A second pool of the same call, on Dawn, holding 2,000 GPU-hours."""
    dawn_pool = FundPoolFactory(
        programme=programme,
        system=dawn,
        name="Builder Fund on Dawn",
        valid_from=pool.valid_from,
        valid_until=pool.valid_until,
    )
    ledger.deposit_to_pool(
        pool=dawn_pool, seconds=2_000 * HOUR, actor=None, reason="Budget", idempotency_key="dawn-budget"
    )
    call.pools.add(dawn_pool)
    return dawn_pool
