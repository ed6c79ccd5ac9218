"""`manage.py seed_demo` gives every role a demo user and is safe to run twice."""

import datetime

import pytest
from allauth.mfa.models import Authenticator
from django.core.management import call_command
from django.test import override_settings

from airr_portal import roles
from airr_portal.models import User
from allocations.selectors import pool_figures
from programmes.models import FundPool, Programme, System

pytestmark = pytest.mark.django_db


@override_settings(DEBUG=True)
def test_seed_demo_creates_systems_programmes_and_one_user_per_role_and_can_run_twice():
    call_command("seed_demo")
    counts = (
        System.objects.count(),
        Programme.objects.count(),
        User.objects.count(),
        Authenticator.objects.count(),
    )
    call_command("seed_demo")
    assert counts == (
        System.objects.count(),
        Programme.objects.count(),
        User.objects.count(),
        Authenticator.objects.count(),
    )
    assert set(System.objects.values_list("slug", flat=True)) >= {"isambard-ai", "dawn"}
    assert Programme.objects.count() >= 2
    director = User.objects.get(email="director@demo.airr.example")
    assert roles.is_programme_director(director) and roles.has_mfa(director)
    assert roles.is_technical_assessor(User.objects.get(email="assessor@demo.airr.example"))
    admin = User.objects.get(email="admin@demo.airr.example")
    assert roles.is_admin(admin)
    # On the admin site, the demo admin can edit a system's settings (its time zone, its charge factor).
    assert admin.has_perm("programmes.change_system")
    assert not User.objects.get(email="director@demo.airr.example").has_perm("programmes.change_system")
    assert roles.roles_of(User.objects.get(email="applicant@demo.airr.example")) == [roles.ROLE_APPLICANT]
    builder_fund = FundPool.objects.get(programme__slug="open-source-ai-builder-fund", system__slug="isambard-ai")
    # Deposited once, although the command ran twice; the demo award is committed from it once too.
    figures = pool_figures(builder_fund)
    assert figures.deposited == 160_000 * 3600
    assert figures.committed == 24_000 * 3600 and figures.available == 136_000 * 3600


@override_settings(DEBUG=True)
def test_seed_demo_opens_a_funded_call_with_a_proposal_the_demo_reviewer_is_asked_to_review():
    from programmes.models import Call, Proposal

    call_command("seed_demo")
    call_command("seed_demo")
    call = Call.objects.get()
    assert call.is_rolling and call.pools.count() == 1
    proposal = Proposal.objects.get(state=Proposal.State.IN_REVIEW)
    assert proposal.call == call
    assert roles.is_reviewer(User.objects.get(email="reviewer@demo.airr.example"))


@override_settings(DEBUG=True)
def test_seed_demo_gives_the_applicant_an_active_allocation_with_weeks_of_reconciled_usage():
    from allocations.dashboards import allocation_report
    from allocations.models import Allocation, JobRecord, LedgerEntry
    from allocations.usage.team import own_usernames, usernames_by_member

    call_command("seed_demo")
    counts = (JobRecord.objects.count(), LedgerEntry.objects.count())
    call_command("seed_demo")

    assert (JobRecord.objects.count(), LedgerEntry.objects.count()) == counts
    allocation = Allocation.objects.get(holder__email="applicant@demo.airr.example")
    assert allocation.state == Allocation.State.ACTIVE
    assert JobRecord.objects.filter(allocation=allocation).count() > 10
    report = allocation_report(allocation)
    days_with_usage = [point for point in report.usage if point.used]
    # Charged day by day through ingest and reconciliation, not in one lump.
    assert len(days_with_usage) > 5
    assert 0 < report.used < report.committed
    assert report.used == sum(JobRecord.objects.filter(allocation=allocation).values_list("gpu_seconds", flat=True))
    # Its co-investigator sees the jobs run as the username the applicant recorded for them, and only those.
    co_investigator = User.objects.get(email="coinvestigator@demo.airr.example")
    assert list(Allocation.objects.visible_to(co_investigator)) == [allocation]
    assert own_usernames(co_investigator, allocation) == ["ben"]
    # The applicant recorded their own too, so that no co-investigator can be given it.
    assert usernames_by_member(allocation)[allocation.holder_id] == ["amina"]
    assert JobRecord.objects.filter(allocation=allocation, user="ben").exists()


@pytest.mark.parametrize(
    "today",
    [datetime.date(2027, 4, 1), datetime.date(2027, 4, 20), datetime.date(2026, 11, 22), datetime.date(2027, 3, 31)],
)
def test_the_demo_pools_are_open_today_and_hold_the_demos_weeks_of_usage_whatever_the_date(today):
    from allocations.management.commands.seed_demo import USAGE_DAYS, demo_pool_window

    opens, closes = demo_pool_window(today)
    assert opens <= today - datetime.timedelta(days=USAGE_DAYS)
    assert today <= closes and closes.month == 3 and closes.day == 31


@override_settings(DEBUG=False)
def test_seed_demo_refuses_to_run_in_production():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("seed_demo")
    assert not User.objects.exists()
