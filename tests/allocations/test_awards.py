"""Awards: the director's decision commits hours from the pool in the same transaction as the state change;
the PI accepts (the allocation runs) or declines (every hour returns to the pool)."""

import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.utils import timezone

from allocations import awards
from allocations.models import Allocation, LedgerAccount
from allocations.selectors import pool_figures
from programmes.models import Decision, Proposal
from programmes.proposals import ProposalStateError, add_months
from tests.factories import HOUR, make_proposal
from tests.postgres import requires_postgres

State = Proposal.State


def _in_review(call, system, pi, **kwargs):
    return make_proposal(call=call, pi=pi, system=system, state=State.IN_REVIEW, **kwargs)


def _part(proposal, pool, hours=None, end=None):
    requested = proposal.resource_requests.get(system=pool.system).seconds
    return awards.AwardPart(
        pool=pool,
        seconds=hours * HOUR if hours else requested,
        start=proposal.start_date,
        end=end or add_months(proposal.start_date, proposal.duration_months),
    )


def _award(proposal, pool, director, hours=None, end=None):
    [allocation] = awards.award_proposal(
        proposal=proposal,
        parts=[_part(proposal, pool, hours, end)],
        rationale="Excellent and feasible",
        actor=director,
    )
    return allocation


@pytest.mark.django_db
def test_an_award_in_full_commits_the_hours_and_moves_the_proposal_to_awarded(call, pool, system, alice, director):
    proposal = _in_review(call, system, alice)
    allocation = _award(proposal, pool, director)
    proposal.refresh_from_db()
    assert proposal.state == State.AWARDED
    assert proposal.decision.outcome == Decision.Outcome.AWARD_FULL
    assert allocation.scheduler_account == f"airr-{proposal.pk:05d}"
    assert LedgerAccount.objects.get(allocation=allocation).balance == 1000 * HOUR
    assert pool_figures(pool).available == 9000 * HOUR
    assert proposal.transitions.last().to_state == State.AWARDED


@pytest.mark.django_db
def test_fewer_hours_or_a_shorter_window_is_a_partial_award(call, pool, system, alice, bob, director):
    fewer = _award(_in_review(call, system, alice), pool, director, hours=400)
    assert fewer.proposal.decision.outcome == Decision.Outcome.AWARD_PART
    assert LedgerAccount.objects.get(allocation=fewer).balance == 400 * HOUR
    shorter = _in_review(call, system, bob)
    allocation = _award(shorter, pool, director, end=shorter.start_date + timedelta(days=30))
    assert allocation.proposal.decision.outcome == Decision.Outcome.AWARD_PART


@pytest.mark.django_db
def test_an_award_the_pool_cannot_cover_changes_nothing_and_says_why(call, pool, system, alice, director):
    proposal = make_proposal(call=call, pi=alice, system=system, state=State.IN_REVIEW)
    request = proposal.resource_requests.get()
    request.runs = 200  # 200 × 100 = 20,000 GPU-hours; the pool holds 10,000
    request.save()
    with pytest.raises(ValidationError, match="more than the 10,000 GPU-hours available"):
        _award(proposal, pool, director)
    proposal.refresh_from_db()
    assert proposal.state == State.IN_REVIEW
    assert not Allocation.objects.filter(proposal=proposal).exists()
    assert not Decision.objects.filter(proposal=proposal).exists()
    assert pool_figures(pool).available == 10_000 * HOUR


@pytest.mark.django_db
def test_more_hours_than_requested_cannot_be_awarded(call, pool, system, alice, director):
    with pytest.raises(ValidationError, match="at most"):
        _award(_in_review(call, system, alice), pool, director, hours=5000)


@pytest.mark.django_db
def test_only_a_director_of_the_programme_may_award(call, pool, system, alice, bob):
    with pytest.raises(PermissionDenied):
        _award(_in_review(call, system, alice), pool, bob)


@pytest.mark.django_db
@pytest.mark.parametrize("state", [State.DRAFT, State.SUBMITTED, State.AWARDED, State.REJECTED, State.WITHDRAWN])
def test_only_a_proposal_in_review_can_be_awarded(call, pool, system, alice, director, state):
    proposal = make_proposal(call=call, pi=alice, system=system, state=state)
    with pytest.raises(ProposalStateError):
        _award(proposal, pool, director)


@pytest.mark.django_db
def test_the_pi_accepts_and_the_allocation_becomes_active_on_its_start_date(
    call, pool, system, alice, director, django_capture_on_commit_callbacks
):
    proposal = _in_review(call, system, alice)
    allocation = _award(proposal, pool, director)
    assert allocation.state == Allocation.State.SCHEDULED
    with django_capture_on_commit_callbacks(execute=True):
        awards.accept_award(proposal=proposal, actor=alice)
    proposal.refresh_from_db()
    allocation.refresh_from_db()
    assert proposal.state == State.ACCEPTED
    # The requested start is in the future: the allocation waits for it.
    assert allocation.state == Allocation.State.SCHEDULED
    assert any("accepted" in message.subject.lower() for message in mail.outbox)


@pytest.mark.django_db
def test_an_accepted_allocation_becomes_active_on_its_start_date_and_an_unaccepted_one_waits(
    call, pool, system, alice, bob, director
):
    accepted = _in_review(call, system, alice)
    accepted_allocation = _award(accepted, pool, director)
    awards.accept_award(proposal=accepted, actor=alice)
    unanswered_allocation = _award(_in_review(call, system, bob), pool, director)
    start = accepted_allocation.start_date

    assert awards.activate_started_allocations(today=start - timedelta(days=1)) == 0
    assert awards.activate_started_allocations(today=start) == 1
    accepted_allocation.refresh_from_db()
    unanswered_allocation.refresh_from_db()
    assert accepted_allocation.state == Allocation.State.ACTIVE
    assert unanswered_allocation.state == Allocation.State.SCHEDULED
    # Running it again changes nothing.
    assert awards.activate_started_allocations(today=start) == 0


@pytest.mark.django_db
def test_an_award_starting_today_is_active_once_accepted(call, pool, system, alice, director):
    proposal = _in_review(call, system, alice)
    proposal.start_date = timezone.localdate()
    proposal.save()
    allocation = _award(proposal, pool, director)
    awards.accept_award(proposal=proposal, actor=alice)
    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.ACTIVE


def _award_past_its_settling(call, pool, system, alice, director):
    """An award left unanswered whose end date, and the days it settles over, have passed."""
    today = timezone.localdate()
    proposal = _in_review(call, system, alice)
    proposal.start_date = max(pool.valid_from, today - timedelta(days=40))
    proposal.save()
    return proposal, _award(proposal, pool, director, end=today - timedelta(days=settings.USAGE_SETTLING_DAYS + 1))


@pytest.mark.django_db
def test_declining_returns_every_hour_to_the_pool(call, pool, system, alice, director):
    proposal = _in_review(call, system, alice)
    allocation = _award(proposal, pool, director)
    awards.decline_award(proposal=proposal, actor=alice)
    proposal.refresh_from_db()
    allocation.refresh_from_db()
    assert proposal.state == State.DECLINED
    assert allocation.state == Allocation.State.REVOKED
    assert pool_figures(pool).available == 10_000 * HOUR


@pytest.mark.django_db
def test_only_the_pi_answers_an_award_and_only_once(call, pool, system, alice, bob, director):
    proposal = _in_review(call, system, alice)
    _award(proposal, pool, director)
    with pytest.raises(PermissionDenied):
        awards.accept_award(proposal=proposal, actor=bob)
    awards.accept_award(proposal=proposal, actor=alice)
    with pytest.raises(ProposalStateError):
        awards.decline_award(proposal=proposal, actor=alice)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_directors_deciding_the_same_proposal_at_once_cannot_both_succeed(call, pool, system, alice, director):
    from tests.factories import UserFactory

    second = UserFactory()
    call.programme.directors.add(second)
    proposal = _in_review(call, system, alice)
    barrier = threading.Barrier(2)
    outcomes = []

    def decide(actor):
        try:
            barrier.wait()
            _award(Proposal.objects.get(pk=proposal.pk), pool, actor)
            outcomes.append("awarded")
        except ProposalStateError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(actor,)) for actor in (director, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["awarded", "refused"]
    assert Allocation.objects.filter(proposal=proposal).count() == 1
    assert pool_figures(pool).available == 9000 * HOUR


@pytest.mark.django_db
def test_an_award_accepted_after_its_end_date_does_not_come_back_to_life(call, pool, system, alice, director):
    """The daily expiry ends an unanswered award's allocation once its end date passes; accepting it afterwards
    must not make it active again (its hours are already back in the pool, and expiry would never end it)."""

    from allocations.usage.limits import account_limits
    from allocations.usage.thresholds import expire_ended_allocations

    proposal, allocation = _award_past_its_settling(call, pool, system, alice, director)
    assert expire_ended_allocations() == 1
    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXPIRED
    assert pool_figures(pool).available == 10_000 * HOUR

    awards.accept_award(proposal=proposal, actor=alice)

    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXPIRED
    assert account_limits(system=system)[0]["gpu_minutes_limit"] == 0
    assert expire_ended_allocations() == 0


@pytest.mark.django_db
def test_an_award_declined_after_its_end_date_is_declined_not_a_500(call, pool, system, alice, director):
    """The daily expiry has already ended the unanswered award's allocation (its hours back in the pool): declining
    it then records the answer instead of failing on the allocation that has ended."""
    from django.urls import reverse

    from allocations.usage.thresholds import expire_ended_allocations
    from tests.factories import web_client

    proposal, allocation = _award_past_its_settling(call, pool, system, alice, director)
    assert expire_ended_allocations() == 1

    response = web_client(alice, raise_request_exception=False).post(
        reverse("proposals:proposal-respond", args=[proposal.pk]), {"answer": "decline"}
    )

    assert response.status_code == 302
    proposal.refresh_from_db()
    allocation.refresh_from_db()
    assert proposal.state == State.DECLINED
    assert allocation.state == Allocation.State.EXPIRED
    assert pool_figures(pool).available == 10_000 * HOUR


@pytest.mark.django_db
def test_an_award_declined_while_the_daily_expiry_ends_it_is_declined_not_a_500(call, pool, system, alice, director):
    """The decline read the allocation as scheduled; the daily expiry ended it (committed) before the decline took
    the ledger's locks. The answer is recorded, the hours returned once, not a 500 from revoking it."""
    from unittest import mock

    from django.urls import reverse

    from allocations import ledger
    from allocations.usage.thresholds import expire_ended_allocations
    from tests.factories import web_client

    proposal, allocation = _award_past_its_settling(call, pool, system, alice, director)
    revoke = ledger.revoke_allocation

    def expired_meanwhile(**kwargs):
        assert expire_ended_allocations() == 1  # the beat's run, between the decline's read and its revocation
        return revoke(**kwargs)

    with mock.patch.object(ledger, "revoke_allocation", side_effect=expired_meanwhile):
        response = web_client(alice, raise_request_exception=False).post(
            reverse("proposals:proposal-respond", args=[proposal.pk]), {"answer": "decline"}
        )

    assert response.status_code == 302
    proposal.refresh_from_db()
    allocation.refresh_from_db()
    assert (proposal.state, allocation.state) == (State.DECLINED, Allocation.State.EXPIRED)
    assert pool_figures(pool).available == 10_000 * HOUR


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_an_allocation_revoked_while_the_activation_runs_stays_revoked(call, pool, system, alice, director):
    """The activation's update waits for the revocation's row lock, then must see the row as the revocation left
    it: a revoked allocation made active would run with its hours already back in the pool."""
    import time

    from django.db import transaction

    from allocations import ledger

    proposal = _in_review(call, system, alice)
    allocation = _award(proposal, pool, director)
    awards.accept_award(proposal=proposal, actor=alice)
    revoked = threading.Event()

    def revoke():
        try:
            with transaction.atomic():
                ledger.revoke_allocation(allocation=allocation, actor=director, reason="Withdrawn", idempotency_key="r")
                revoked.set()
                time.sleep(1)  # holding the row while the activation's update starts and waits for it
        finally:
            connection.close()

    thread = threading.Thread(target=revoke)
    thread.start()
    assert revoked.wait(timeout=30)
    activated = awards.activate_started_allocations(today=allocation.start_date)
    thread.join()

    allocation.refresh_from_db()
    assert (activated, allocation.state) == (0, Allocation.State.REVOKED)
