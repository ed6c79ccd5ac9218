"""Usage held under a scheduler account no allocation owned is charged as soon as an allocation claims the account
(DESIGN.md): an award's allocation takes what its account ran before it was made."""

import logging
from datetime import timedelta

import pytest

from airr_portal.celery import app as celery_app
from allocations import awards, ledger
from allocations.models import JobRecord, UsageSequence
from allocations.tasks import reconcile_claim_all_held_usage_task, reconcile_claim_held_usage_task
from allocations.usage.ingest import ingest_sacct
from allocations.usage.reconcile import reconcile_system
from allocations.usage.services import claim_all_held_usage, claim_held_usage
from programmes.models import Proposal, System
from programmes.proposals import add_months
from tests.allocations.usage_helpers import HOUR, funded_allocation, payload, sacct_line
from tests.factories import SystemFactory, make_proposal

pytestmark = pytest.mark.django_db


def ingest(system, *lines):
    return ingest_sacct(system=system, payload=payload(*lines), source="command")


def used(allocation) -> int:
    return ledger.net_usage(ledger.allocation_account(allocation))


def test_an_award_takes_the_usage_its_account_ran_before_it_and_reconciliation_charges_it(
    call, pool, system, dawn, alice, director, django_capture_on_commit_callbacks
):
    proposal = make_proposal(call=call, pi=alice, system=system, state=Proposal.State.IN_REVIEW)
    account = f"airr-{proposal.pk:05d}"
    first_day = proposal.start_date + timedelta(days=1)
    ingest(
        system,
        sacct_line(1, account=account),  # March: before the allocation's dates
        sacct_line(2, account=account, gpus=2, start=f"{first_day}T10:00:00", end=f"{first_day}T11:00:00"),
        sacct_line(3, account="airr-99999", gpus=4),  # another account: stays held
    )
    ingest(dawn, sacct_line(4, account=account, cluster=dawn.cluster_name))  # another system: stays held

    with django_capture_on_commit_callbacks(execute=True):
        [allocation] = awards.award_proposal(
            proposal=proposal,
            parts=[
                awards.AwardPart(
                    pool=pool,
                    seconds=proposal.resource_requests.get(system=system).seconds,
                    start=proposal.start_date,
                    end=add_months(proposal.start_date, proposal.duration_months),
                )
            ],
            rationale="Excellent and feasible",
            actor=director,
        )

    records = {record.job_id: record for record in JobRecord.objects.all()}
    assert {job: (r.allocation_id, r.is_outside_window) for job, r in records.items()} == {
        "1": (allocation.pk, True),
        "2": (allocation.pk, False),
        "3": (None, False),
        "4": (None, False),
    }
    # The claim queued a reconciliation, which (run in process here) charged both runs.
    assert used(allocation) == HOUR + 2 * HOUR
    assert reconcile_system(system=system) is None


def test_claiming_again_takes_nothing_and_takes_no_change_number(system):
    ingest(system, sacct_line(1, account="airr-00007"))
    # Reconciled while held (as the beat does within minutes): the claimed record is found as changed, not as new.
    reconcile_system(system=system)
    allocation = funded_allocation(system, account="airr-00007")
    assert claim_held_usage(allocation) == 1
    last_seq = UsageSequence.objects.get(system=system).last_seq

    assert claim_held_usage(allocation) == 0

    assert UsageSequence.objects.get(system=system).last_seq == last_seq
    reconcile_system(system=system)
    assert used(allocation) == HOUR


def test_the_allocation_takes_only_its_own_account_on_its_own_system(system):
    ingest(system, sacct_line(1, account="airr-00007"), sacct_line(2, account="airr-00008"))
    allocation = funded_allocation(system, account="airr-00007")

    assert claim_held_usage(allocation) == 1

    assert dict(JobRecord.objects.values_list("job_id", "allocation")) == {"1": allocation.pk, "2": None}


@pytest.mark.parametrize("end", ["expire", "revoke"])
def test_an_allocation_that_has_ended_takes_nothing(system, alice, end):
    """Its unused hours went back to the pool when it ended: charging it now would spend them twice."""
    ingest(system, sacct_line(1, account="airr-00007"))
    allocation = funded_allocation(system, account="airr-00007")
    if end == "expire":
        ledger.expire_allocation(allocation=allocation, idempotency_key="end")
    else:
        ledger.revoke_allocation(allocation=allocation, actor=alice, reason="Misuse", idempotency_key="end")

    assert claim_held_usage(allocation) == 0

    assert JobRecord.objects.get().allocation is None


def test_on_a_system_whose_time_zone_is_mistyped_the_usage_stays_held_and_the_operators_are_told(system, caplog):
    ingest(system, sacct_line(1, account="airr-00007"))
    allocation = funded_allocation(system, account="airr-00007")
    System.objects.filter(pk=system.pk).update(time_zone="Europe/Londn")
    allocation.pool.system.refresh_from_db()
    last_seq = UsageSequence.objects.get(system=system).last_seq

    with caplog.at_level(logging.WARNING, logger="allocations.usage.services"):
        assert claim_held_usage(allocation) == 0

    assert JobRecord.objects.get().allocation is None
    assert UsageSequence.objects.get(system=system).last_seq == last_seq
    assert "airr-00007" in caplog.text and "'Europe/Londn' is not a known time zone" in caplog.text


def test_the_claim_runs_on_the_reconcile_queue():
    route = celery_app.amqp.router.route({}, reconcile_claim_held_usage_task.name)

    assert route["queue"].name == "reconcile"


def test_the_beat_claims_the_usage_an_awards_own_claim_missed(system, alice, django_capture_on_commit_callbacks):
    """The award's task lost (a broker that could not take it), say: the allocation still gets its held usage."""
    ingest(system, sacct_line(1, account="airr-00007"), sacct_line(2, account="airr-00008"))
    ingest(system, sacct_line(3, account="airr-00009"))  # no allocation owns it: stays held
    open_one = funded_allocation(system, account="airr-00007")
    ended = funded_allocation(system, account="airr-00008")
    ledger.expire_allocation(allocation=ended, idempotency_key="end")

    with django_capture_on_commit_callbacks(execute=True):
        assert reconcile_claim_all_held_usage_task() == 1

    assert dict(JobRecord.objects.values_list("job_id", "allocation")) == {"1": open_one.pk, "2": None, "3": None}
    assert used(open_one) == HOUR  # the claim queued the reconciliation, run in process here
    assert claim_all_held_usage() == 0


def test_the_beats_check_is_one_query_when_nothing_is_held_under_an_allocations_account(
    system, django_assert_num_queries
):
    ingest(system, sacct_line(1, account="airr-00009"), sacct_line(2, account="airr-00008"))
    for number in range(5):
        funded_allocation(system, account=f"airr-0000{number}")
    # Held under the account of an allocation on another system, and of one that has ended: neither takes it.
    funded_allocation(SystemFactory(name="Dawn", slug="dawn", cluster_name="dawn"), account="airr-00009")
    ledger.expire_allocation(allocation=funded_allocation(system, account="airr-00008"), idempotency_key="end")

    with django_assert_num_queries(1):
        assert claim_all_held_usage() == 0


def test_the_beat_runs_the_check_every_five_minutes(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["claim-held-usage"]

    assert (entry["task"], entry["schedule"]) == (reconcile_claim_all_held_usage_task.name, 300.0)
