"""A funded call for the proposal tests: a pool of 10,000 GPU-hours on Isambard-AI, a director and a PI."""

from datetime import date

import pytest

from allocations import ledger
from tests.factories import HOUR, CallFactory, FundPoolFactory, UserFactory, give_mfa


@pytest.fixture
def pool(system, programme):
    today = date.today()
    pool = FundPoolFactory(
        programme=programme,
        system=system,
        name="Builder Fund",
        valid_from=today.replace(month=1, day=1),
        valid_until=today.replace(year=today.year + 2, month=12, day=31),
    )
    ledger.deposit_to_pool(
        pool=pool,
        seconds=10_000 * HOUR,
        actor=None,
        reason="Budget",
        idempotency_key=f"test-budget-{pool.pk}",
    )
    return pool


@pytest.fixture
def call(programme, pool):
    return CallFactory(programme=programme, pools=[pool], title="Open-Source AI Builder Fund, round 1")


@pytest.fixture
def director(programme):
    user = UserFactory(email="dara.director@example.ac.uk", full_name="Dara Director")
    programme.directors.add(user)
    give_mfa(user)
    return user


@pytest.fixture
def assessor(system):
    user = UserFactory(email="asha.assessor@example.ac.uk")
    system.assessors.add(user)
    give_mfa(user)
    return user


@pytest.fixture
def site_admin(make_persona, client):
    """An admin signed in to the admin site, whose model pages are for superusers (no per-model permissions)."""
    user = make_persona("admin")
    user.is_superuser = True
    user.save()
    client.force_login(user)
    return user
