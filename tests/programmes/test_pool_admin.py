"""A pool's system, which its allocations and its ledger account were made on, is kept once either exists."""

import pytest
from django.urls import reverse

from allocations import ledger
from allocations.models import Allocation
from tests.allocations.usage_helpers import funded_allocation
from tests.factories import HOUR, FundPoolFactory

pytestmark = pytest.mark.django_db


def _post(client, pool, system):
    return client.post(
        reverse("admin:programmes_fundpool_change", args=[pool.pk]),
        {
            "programme": pool.programme_id,
            "system": system.pk,
            "name": pool.name,
            "valid_from": pool.valid_from.isoformat(),
            "valid_until": pool.valid_until.isoformat(),
            "unused_hours_policy": pool.unused_hours_policy,
            "grace_percent": pool.grace_percent,
        },
    )


def test_the_system_of_a_pool_with_allocations_is_refused_with_the_reason(client, site_admin, system, dawn):
    """Its allocations' system (copied from the pool, for usage matching) would no longer be the pool's."""
    allocation = funded_allocation(system, account="airr-00007")

    response = _post(client, allocation.pool, dawn)

    assert response.status_code == 200
    assert "allocations and its hours are on Isambard-AI" in response.content.decode()
    allocation = Allocation.objects.select_related("pool").get(pk=allocation.pk)
    assert (allocation.system_id, allocation.pool.system_id) == (system.pk, system.pk)


def test_an_unused_pool_can_move_to_another_system(client, site_admin, system, dawn):
    pool = FundPoolFactory(system=system)

    response = _post(client, pool, dawn)

    assert response.status_code == 302
    pool.refresh_from_db()
    assert pool.system_id == dawn.pk


def test_the_system_of_a_pool_holding_hours_and_no_allocation_is_refused(client, site_admin, system, dawn):
    """Its ledger account, which holds the hours, was opened on its system."""
    pool = FundPoolFactory(system=system)
    ledger.deposit_to_pool(pool=pool, seconds=10 * HOUR, actor=None, reason="Budget", idempotency_key="budget")

    response = _post(client, pool, dawn)

    assert response.status_code == 200
    pool.refresh_from_db()
    assert pool.system_id == system.pk
