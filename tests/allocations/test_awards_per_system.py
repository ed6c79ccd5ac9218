"""Awards on several systems: the director awards each requested system in full, in part or not at all, every
part committed from the call's pool on that system in one transaction with the decision; the PI answers the
award as a whole. Each awarded system gets its own allocation under the proposal's one scheduler account."""

import threading
from datetime import date

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.urls import reverse

from allocations import awards, ledger
from allocations.models import Allocation, JobRecord, LedgerAccount, LedgerEntry
from allocations.selectors import pool_figures
from allocations.usage.ingest import ingest_sacct
from programmes.models import Decision, Proposal, ResourceRequest
from programmes.proposals import add_months
from tests.allocations.usage_helpers import payload, sacct_line
from tests.factories import HOUR, AllocationFactory, FundPoolFactory, make_proposal
from tests.postgres import requires_postgres

State = Proposal.State


def _two_system_proposal(call, system, dawn, pi, *, dawn_hours=500):
    """In review, asking for 1,000 GPU-hours on Isambard-AI and `dawn_hours` on Dawn."""
    proposal = make_proposal(call=call, pi=pi, system=system, state=State.IN_REVIEW)
    ResourceRequest.objects.create(
        proposal=proposal,
        system=dawn,
        method="Fine-tuning",
        runs=5,
        seconds_per_run=dawn_hours // 5 * HOUR,
        gpus_per_job=8,
    )
    return proposal


def _part(proposal, pool, hours=None, end=None):
    return awards.AwardPart(
        pool=pool,
        seconds=(hours * HOUR) if hours else proposal.resource_requests.get(system=pool.system).seconds,
        start=proposal.start_date,
        end=end or add_months(proposal.start_date, proposal.duration_months),
    )


def _committed(allocation) -> int:
    return ledger.usage_and_commitments([allocation.pk])[allocation.pk][1]


@pytest.mark.django_db
def test_a_two_system_award_in_full_gives_one_allocation_per_system_under_one_account(
    call, pool, dawn_pool, system, dawn, alice, director
):
    proposal = _two_system_proposal(call, system, dawn, alice)
    allocations = awards.award_proposal(
        proposal=proposal,
        parts=[_part(proposal, pool), _part(proposal, dawn_pool)],
        rationale="Excellent on both",
        actor=director,
    )
    proposal.refresh_from_db()
    assert proposal.state == State.AWARDED
    assert proposal.decision.outcome == Decision.Outcome.AWARD_FULL
    assert [(a.system, a.pool) for a in allocations] == [(dawn, dawn_pool), (system, pool)]
    assert {a.scheduler_account for a in allocations} == {f"airr-{proposal.pk:05d}"}
    assert [(award.system, award.seconds) for award in awards.awarded_systems(proposal)] == [
        (dawn, 500 * HOUR),
        (system, 1_000 * HOUR),
    ]
    assert pool_figures(pool).available == 9_000 * HOUR
    assert pool_figures(dawn_pool).available == 1_500 * HOUR


@pytest.mark.django_db
def test_part_on_one_system_and_nothing_on_the_other_is_a_partial_award(
    call, pool, dawn_pool, system, dawn, alice, director
):
    proposal = _two_system_proposal(call, system, dawn, alice)
    [allocation] = awards.award_proposal(
        proposal=proposal, parts=[_part(proposal, pool, hours=600)], rationale="Isambard only", actor=director
    )
    proposal.refresh_from_db()
    assert proposal.decision.outcome == Decision.Outcome.AWARD_PART
    assert allocation.system == system and _committed(allocation) == 600 * HOUR
    assert not Allocation.objects.filter(proposal=proposal, system=dawn).exists()
    assert pool_figures(dawn_pool).available == 2_000 * HOUR


@pytest.mark.django_db
def test_a_shorter_window_on_one_system_is_a_partial_award(call, pool, dawn_pool, system, dawn, alice, director):
    proposal = _two_system_proposal(call, system, dawn, alice)
    awards.award_proposal(
        proposal=proposal,
        parts=[_part(proposal, pool), _part(proposal, dawn_pool, end=proposal.start_date)],
        rationale="A shorter run on Dawn",
        actor=director,
    )
    proposal.refresh_from_db()
    assert proposal.decision.outcome == Decision.Outcome.AWARD_PART


@pytest.mark.django_db
def test_when_one_pool_cannot_cover_its_part_nothing_changes_and_the_system_is_named(
    call, pool, dawn_pool, system, dawn, alice, director
):
    proposal = _two_system_proposal(call, system, dawn, alice, dawn_hours=5_000)  # Dawn's pool holds 2,000
    entries_before = LedgerEntry.objects.count()
    with pytest.raises(ValidationError, match="Dawn: .*more than the 2,000 GPU-hours available"):
        awards.award_proposal(
            proposal=proposal,
            parts=[_part(proposal, pool), _part(proposal, dawn_pool)],
            rationale="Both",
            actor=director,
        )
    proposal.refresh_from_db()
    assert proposal.state == State.IN_REVIEW
    assert not Allocation.objects.filter(proposal=proposal).exists()
    assert not Decision.objects.filter(proposal=proposal).exists()
    assert LedgerEntry.objects.count() == entries_before
    assert pool_figures(pool).available == 10_000 * HOUR
    assert pool_figures(dawn_pool).available == 2_000 * HOUR


@pytest.mark.django_db
def test_a_part_on_a_system_not_asked_for_or_from_another_calls_pool_is_refused(
    call, pool, dawn_pool, system, dawn, alice, director, programme
):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    dawn_part = awards.AwardPart(pool=dawn_pool, seconds=HOUR, start=proposal.start_date, end=proposal.start_date)
    with pytest.raises(ValidationError, match="asks for no time on Dawn"):
        awards.award_proposal(proposal=proposal, parts=[dawn_part], rationale="x", actor=director)
    stranger = FundPoolFactory(programme=programme, system=system, name="Not this call's")
    with pytest.raises(ValidationError, match="does not fund"):
        awards.award_proposal(proposal=proposal, parts=[_part(proposal, stranger)], rationale="x", actor=director)
    with pytest.raises(ValidationError, match="at least one system"):
        awards.award_proposal(proposal=proposal, parts=[], rationale="x", actor=director)
    assert Proposal.objects.get(pk=proposal.pk).state == State.IN_REVIEW


@pytest.mark.django_db
def test_accepting_activates_every_allocation_and_declining_returns_every_hour(
    call, pool, dawn_pool, system, dawn, alice, bob, director, django_capture_on_commit_callbacks
):
    accepted = _two_system_proposal(call, system, dawn, alice)
    accepted.start_date = date.today()
    accepted.save()
    awards.award_proposal(
        proposal=accepted,
        parts=[_part(accepted, pool), _part(accepted, dawn_pool)],
        rationale="Yes",
        actor=director,
    )
    with django_capture_on_commit_callbacks(execute=True):
        answered = awards.accept_award(proposal=accepted, actor=alice)
    assert [a.state for a in answered] == [Allocation.State.ACTIVE, Allocation.State.ACTIVE]
    accepted_mail = next(m for m in mail.outbox if "Award accepted" in m.subject)
    assert "- Dawn: 500 GPU-hours" in accepted_mail.body and "- Isambard-AI: 1,000 GPU-hours" in accepted_mail.body

    declined = _two_system_proposal(call, system, dawn, bob)
    awards.award_proposal(
        proposal=declined,
        parts=[_part(declined, pool), _part(declined, dawn_pool)],
        rationale="Yes",
        actor=director,
    )
    awards.decline_award(proposal=declined, actor=bob)
    assert set(Allocation.objects.filter(proposal=declined).values_list("state", flat=True)) == {"revoked"}
    # Only the accepted award's hours remain committed.
    assert pool_figures(pool).available == 9_000 * HOUR
    assert pool_figures(dawn_pool).available == 1_500 * HOUR


@pytest.mark.django_db
def test_the_decision_email_lists_each_system_awarded(
    call, pool, dawn_pool, system, dawn, alice, director, django_capture_on_commit_callbacks
):
    proposal = _two_system_proposal(call, system, dawn, alice)
    with django_capture_on_commit_callbacks(execute=True):
        awards.award_proposal(
            proposal=proposal, parts=[_part(proposal, dawn_pool, hours=100)], rationale="Dawn", actor=director
        )
    [message] = [m for m in mail.outbox if "Decision on" in m.subject]
    assert "- Dawn: 100 GPU-hours" in message.body and "Isambard-AI" not in message.body
    assert f"scheduler account airr-{proposal.pk:05d}" in message.body


@pytest.mark.django_db
def test_every_allocation_is_on_its_pools_system(call, pool, dawn_pool, system, dawn, alice, director):
    proposal = _two_system_proposal(call, system, dawn, alice)
    awards.award_proposal(
        proposal=proposal,
        parts=[_part(proposal, pool), _part(proposal, dawn_pool)],
        rationale="Yes",
        actor=director,
    )
    AllocationFactory(pool=dawn_pool)  # made by hand, without naming a system
    assert Allocation.objects.count() == 3
    assert not Allocation.objects.exclude(system=F("pool__system")).exists()
    assert not LedgerAccount.objects.filter(kind="allocation").exclude(system=F("allocation__system")).exists()


@pytest.mark.django_db
def test_a_scheduler_account_name_is_unique_per_system_not_everywhere(pool, dawn_pool):
    AllocationFactory(pool=pool, scheduler_account="airr-00042")
    AllocationFactory(pool=dawn_pool, scheduler_account="airr-00042")
    with pytest.raises(IntegrityError), transaction.atomic():
        AllocationFactory(pool=pool, scheduler_account="airr-00042")


@pytest.mark.django_db
def test_usage_on_one_system_is_matched_to_that_systems_allocation_of_the_account(
    call, pool, dawn_pool, system, dawn, alice, director
):
    proposal = _two_system_proposal(call, system, dawn, alice)
    on_isambard, on_dawn = awards.award_proposal(
        proposal=proposal,
        parts=[_part(proposal, pool), _part(proposal, dawn_pool)],
        rationale="Yes",
        actor=director,
    )[::-1]
    assert on_isambard.system == system and on_dawn.system == dawn
    start = f"{proposal.start_date}T10:00:00"
    end = f"{proposal.start_date}T11:00:00"
    # The same account name on both systems: each run goes to its own system's allocation, whichever was made last.
    for on, job in ((system, 1), (dawn, 2)):
        ingest_sacct(
            system=on,
            payload=payload(
                sacct_line(
                    job,
                    account=awards.scheduler_account_for(proposal),
                    start=start,
                    end=end,
                    cluster=on.cluster_name,
                )
            ),
            source="command",
        )
    assert dict(JobRecord.objects.values_list("job_id", "allocation")) == {"1": on_isambard.pk, "2": on_dawn.pk}


@pytest.mark.django_db
def test_the_director_awards_part_on_one_system_and_nothing_on_the_other_on_the_page(
    client, call, pool, dawn_pool, system, dawn, alice, director
):
    proposal = _two_system_proposal(call, system, dawn, alice)
    client.force_login(director)
    url = reverse("proposals:proposal-decide", args=[proposal.pk])
    form = client.get(url).content.decode()
    assert "GPU-hours to award on Isambard-AI" in form and "GPU-hours to award on Dawn" in form
    response = client.post(
        url,
        {
            "outcome": "award_part",
            f"hours_{system.pk}": "700",
            f"hours_{dawn.pk}": "0",
            "rationale": "Isambard",
        },
    )
    assert response.status_code == 302
    assert [(a.system, a.seconds) for a in awards.awarded_systems(proposal)] == [(system, 700 * HOUR)]
    client.force_login(alice)
    page = client.get(reverse("proposals:proposal-detail", args=[proposal.pk])).content.decode()
    assert "Awarded on Isambard-AI" in page and "700 GPU-hours" in page and "Awarded on Dawn" not in page


@pytest.mark.django_db
def test_the_page_says_which_pool_could_not_cover_its_part(
    client, call, pool, dawn_pool, system, dawn, alice, director
):
    proposal = _two_system_proposal(call, system, dawn, alice, dawn_hours=5_000)
    client.force_login(director)
    response = client.post(
        reverse("proposals:proposal-decide", args=[proposal.pk]),
        {"outcome": "award_full", "rationale": "Both"},
    )
    assert response.status_code == 200
    assert "Dawn: Committing 5,000 GPU-hours" in response.content.decode()
    assert not Allocation.objects.filter(proposal=proposal).exists()


@pytest.mark.django_db
def test_the_decision_page_shows_each_pools_running_total_and_cut_off(
    client, call, pool, dawn_pool, system, dawn, alice, bob, director
):
    _two_system_proposal(call, system, dawn, alice, dawn_hours=1_500)
    _two_system_proposal(call, system, dawn, bob, dawn_hours=1_500)  # 3,000 asked of Dawn's 2,000
    client.force_login(director)
    page = client.get(reverse("proposals:call-decisions", args=[call.slug])).content.decode()
    assert "Builder Fund on Dawn" in page and "3,000" in page and "Rank 2" in page
    assert "Every proposal in review fits" in page  # Isambard-AI: 2,000 of 10,000
    # Ranked against Dawn's pool (the first, by system): the line falls between the two proposals.
    rows = page.split("<tbody")[-1]
    marker = rows.index("The pool's available hours run out here")
    assert sorted([rows.index(p.reference) for p in Proposal.objects.all()] + [marker]).index(marker) == 1
    on_isambard = client.get(reverse("proposals:call-decisions", args=[call.slug]), {"pool": pool.pk})
    assert "The pool's available hours run out here" not in on_isambard.content.decode()


@pytest.mark.django_db
def test_the_api_awards_per_system_and_leaves_out_a_system_not_named(
    call, pool, dawn_pool, system, dawn, alice, director
):
    from rest_framework.test import APIClient

    proposal = _two_system_proposal(call, system, dawn, alice)
    api = APIClient()
    api.force_authenticate(director)
    day = str(proposal.start_date)
    response = api.post(
        f"/api/proposals/{proposal.pk}/award/",
        {"systems": [{"system": "dawn", "hours": "250", "start": day, "end": day}], "rationale": "Dawn only"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    decision = response.json()["decision"]
    assert decision["outcome"] == "award_part"
    assert [(s["system"], s["gpu_hours"]) for s in decision["systems"]] == [("dawn", "250.00")]
    nonsense = api.post(f"/api/proposals/{proposal.pk}/award/", {"systems": [], "rationale": "x"}, format="json")
    assert nonsense.status_code in (400, 409)


@pytest.mark.django_db
def test_the_api_refuses_a_pool_on_another_system_than_the_part_names(
    call, pool, dawn_pool, system, dawn, alice, director
):
    from rest_framework.test import APIClient

    proposal = _two_system_proposal(call, system, dawn, alice)
    api = APIClient()
    api.force_authenticate(director)
    day = str(proposal.start_date)
    part = {"system": "dawn", "pool": pool.pk, "hours": "250", "start": day, "end": day}  # pool is Isambard-AI's

    response = api.post(f"/api/proposals/{proposal.pk}/award/", {"systems": [part], "rationale": "x"}, format="json")

    assert response.status_code == 400
    assert "is not on Dawn" in str(response.json()["errors"])
    proposal.refresh_from_db()
    assert proposal.state == Proposal.State.IN_REVIEW and not Allocation.objects.exists()


@pytest.fixture
def second_isambard_pool(call, programme, system, pool):
    """Another pool of the same call on Isambard-AI, so the director must say which one pays."""
    second = FundPoolFactory(
        programme=programme,
        system=system,
        name="Builder Fund, second tranche",
        valid_from=pool.valid_from,
        valid_until=pool.valid_until,
    )
    ledger.deposit_to_pool(pool=second, seconds=5_000 * HOUR, actor=None, reason="Budget", idempotency_key="second")
    call.pools.add(second)
    return second


def _committed_from(pool) -> int:
    return pool_figures(pool).committed


@pytest.mark.django_db
def test_with_two_pools_on_a_system_the_api_awards_from_the_one_named_and_asks_when_none_is(
    call, pool, second_isambard_pool, system, alice, director
):
    from rest_framework.test import APIClient

    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    api = APIClient()
    api.force_authenticate(director)
    day = str(proposal.start_date)
    part = {"system": system.slug, "hours": "100", "start": day, "end": day}

    unnamed = api.post(f"/api/proposals/{proposal.pk}/award/", {"systems": [part], "rationale": "x"}, format="json")
    twice = api.post(
        f"/api/proposals/{proposal.pk}/award/",
        {"systems": [{**part, "pool": pool.pk}, {**part, "pool": second_isambard_pool.pk}], "rationale": "x"},
        format="json",
    )
    named = api.post(
        f"/api/proposals/{proposal.pk}/award/",
        {"systems": [{**part, "pool": second_isambard_pool.pk}], "rationale": "Second tranche"},
        format="json",
    )

    assert unnamed.status_code == 400 and "Choose the fund pool" in str(unnamed.json()["errors"])
    assert twice.status_code == 400 and "one pool only on Isambard-AI" in str(twice.json()["errors"])
    assert named.status_code == 200, named.json()
    assert (_committed_from(pool), _committed_from(second_isambard_pool)) == (0, 100 * HOUR)


@pytest.mark.django_db
def test_with_two_pools_on_a_system_the_page_awards_from_the_one_chosen(
    client, call, pool, second_isambard_pool, system, alice, director
):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    client.force_login(director)

    response = client.post(
        reverse("proposals:proposal-decide", args=[proposal.pk]),
        {
            "outcome": "award_part",
            f"hours_{system.pk}": "100",
            f"pool_{system.pk}": second_isambard_pool.pk,
            "rationale": "Second tranche",
        },
    )

    assert response.status_code == 302
    assert (_committed_from(pool), _committed_from(second_isambard_pool)) == (0, 100 * HOUR)


@pytest.mark.django_db
def test_the_pool_that_pays_is_the_one_chosen_or_the_only_one_on_the_system(
    pool, dawn_pool, second_isambard_pool, system, dawn
):
    isambard_only = [pool]
    both = [pool, second_isambard_pool, dawn_pool]

    assert awards.pool_for(system, isambard_only) == pool
    assert awards.pool_for(dawn, both) == dawn_pool
    assert awards.pool_for(system, both, second_isambard_pool) == second_isambard_pool
    for call_pools, chosen, message in [
        (both, None, "Choose the fund pool to award from on Isambard-AI"),
        (both, dawn_pool, "Builder Fund on Dawn is not on Isambard-AI"),
        ([dawn_pool], None, "This call has no fund pool on Isambard-AI"),
    ]:
        with pytest.raises(ValidationError, match=message):
            awards.pool_for(system, call_pools, chosen)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_awards_racing_for_the_same_two_pools_never_overcommit_or_deadlock(
    call, pool, dawn_pool, system, dawn, alice, bob, director
):
    # Each asks for 1,500 GPU-hours on Dawn, whose pool holds 2,000: only one award can be made.
    first = _two_system_proposal(call, system, dawn, alice, dawn_hours=1_500)
    second = _two_system_proposal(call, system, dawn, bob, dawn_hours=1_500)
    barrier = threading.Barrier(2)
    outcomes = []

    def decide(proposal, parts_order):
        try:
            proposal = Proposal.objects.get(pk=proposal.pk)
            parts = [_part(proposal, pool), _part(proposal, dawn_pool)]
            barrier.wait()
            awards.award_proposal(proposal=proposal, parts=parts[::parts_order], rationale="Race", actor=director)
            outcomes.append("awarded")
        except ValidationError:
            outcomes.append("refused")
        finally:
            connection.close()

    # The two awards list their parts in opposite orders: the service still locks the pools in one order.
    threads = [
        threading.Thread(target=decide, args=(first, 1)),
        threading.Thread(target=decide, args=(second, -1)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["awarded", "refused"]
    assert Allocation.objects.count() == 2
    assert pool_figures(pool).available == 9_000 * HOUR
    assert pool_figures(dawn_pool).available == 500 * HOUR
