"""Thresholds, exhaustion, expiry, limits and the cluster's own view of usage."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.core import mail

from allocations import ledger
from allocations.models import Allocation, LedgerTransaction, ThresholdNotice, UsageReport
from allocations.usage.ingest import ingest_sacct
from allocations.usage.limits import account_limits, sacctmgr_commands
from allocations.usage.reconcile import reconcile_system
from allocations.usage.thresholds import check_thresholds, expire_ended_allocations
from tests.allocations.usage_helpers import HOUR, funded_allocation, payload, post_usage_report, sacct_line

pytestmark = pytest.mark.django_db


def use(system, *hours_per_job, start_id=1):
    lines = [sacct_line(start_id + i, elapsed=int(hours * HOUR)) for i, hours in enumerate(hours_per_job)]
    ingest_sacct(system=system, payload=payload(*lines), source="command")
    reconcile_system(system=system)


def test_the_pi_is_emailed_once_at_each_threshold_passed(system, alice, django_capture_on_commit_callbacks):
    funded_allocation(system, hours=10, holder=alice)
    use(system, 5.5)
    with django_capture_on_commit_callbacks(execute=True):
        check_thresholds(system=system)
        check_thresholds(system=system)

    assert [m.subject for m in mail.outbox] == ["[AIRR Portal] airr-00001 on Isambard-AI has used 50% of its GPU-hours"]
    assert mail.outbox[0].to == ["alice@example.ac.uk"]

    use(system, 4, start_id=10)
    with django_capture_on_commit_callbacks(execute=True):
        check_thresholds(system=system)

    assert sorted(ThresholdNotice.objects.values_list("percent", flat=True)) == [50, 75, 90]
    assert len(mail.outbox) == 3


def test_a_notice_recorded_while_the_broker_was_down_is_emailed_by_the_beat_once(
    system, alice, django_capture_on_commit_callbacks
):
    from unittest import mock

    from django.utils import timezone
    from kombu.exceptions import OperationalError

    from airr_portal.tasks import send_unsent_emails_task

    funded_allocation(system, hours=10, holder=alice)
    use(system, 5.5)
    with (
        mock.patch("celery.app.task.Task.apply_async", side_effect=OperationalError("Connection refused")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        check_thresholds(system=system)

    assert (ThresholdNotice.objects.count(), mail.outbox) == (1, [])
    with django_capture_on_commit_callbacks(execute=True):
        check_thresholds(system=system)
        send_unsent_emails_task()
    assert mail.outbox == []  # its own task may still be on its way: not yet

    later = timezone.now() + timedelta(minutes=11)
    with mock.patch("django.utils.timezone.now", return_value=later):
        for _ in range(2):
            with django_capture_on_commit_callbacks(execute=True):
                check_thresholds(system=system)
                send_unsent_emails_task()

    assert [m.subject for m in mail.outbox] == ["[AIRR Portal] airr-00001 on Isambard-AI has used 50% of its GPU-hours"]


def test_the_pi_and_each_accepted_team_member_are_emailed_once_at_each_threshold(
    system, alice, django_capture_on_commit_callbacks
):
    from django.utils import timezone

    from programmes.models import ProposalMember
    from tests.factories import CallFactory, UserFactory, make_proposal

    proposal = make_proposal(call=CallFactory(), pi=alice, system=system, state="accepted")
    bob, carol = UserFactory(email="bob@example.ac.uk"), UserFactory(email="carol@example.ac.uk")
    now = timezone.now()
    ProposalMember.objects.create(proposal=proposal, email=bob.email, user=bob, token="t-bob", accepted_at=now)
    ProposalMember.objects.create(
        proposal=proposal, email="Carol@Example.ac.uk", user=carol, token="t-c", accepted_at=now
    )
    ProposalMember.objects.create(proposal=proposal, email="dan@example.ac.uk", token="t-dan")  # not accepted
    # The PI on their own team is told once.
    ProposalMember.objects.create(proposal=proposal, email=alice.email, user=alice, token="t-alice", accepted_at=now)
    funded_allocation(system, hours=10, holder=alice, proposal=proposal)
    use(system, 5.5)

    with django_capture_on_commit_callbacks(execute=True):
        check_thresholds(system=system)
        check_thresholds(system=system)

    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.ac.uk", "bob@example.ac.uk", "carol@example.ac.uk"]
    assert all(
        len(m.to) == 1 and m.subject == "[AIRR Portal] airr-00001 on Isambard-AI has used 50% of its GPU-hours"
        for m in mail.outbox
    )

    use(system, 2.5, start_id=10)
    with django_capture_on_commit_callbacks(execute=True):
        check_thresholds(system=system)

    assert [m.subject for m in mail.outbox[3:]] == [
        "[AIRR Portal] airr-00001 on Isambard-AI has used 75% of its GPU-hours"
    ] * 3
    assert ThresholdNotice.objects.count() == 2


def test_an_allocation_made_by_hand_tells_its_holder_alone(system, alice, django_capture_on_commit_callbacks):
    funded_allocation(system, hours=10, holder=alice)
    use(system, 9)

    with django_capture_on_commit_callbacks(execute=True):
        check_thresholds(system=system)

    assert {tuple(m.to) for m in mail.outbox} == {("alice@example.ac.uk",)}
    assert len(mail.outbox) == 3  # 50, 75 and 90 %


def test_at_100_percent_without_grace_the_allocation_is_exhausted_and_its_limit_is_zero(system):
    allocation = funded_allocation(system, hours=10)
    use(system, 10)
    check_thresholds(system=system)

    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXHAUSTED
    assert account_limits(system=system)[0]["gpu_minutes_limit"] == 0


def test_the_pools_grace_lets_an_allocation_run_past_100_percent_before_it_is_exhausted(system):
    allocation = funded_allocation(system, hours=10, pool_options={"grace_percent": 10})
    use(system, 10.5)
    check_thresholds(system=system)
    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.ACTIVE
    assert account_limits(system=system)[0]["gpu_minutes_limit"] == 660

    use(system, 0.5, start_id=10)
    check_thresholds(system=system)
    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXHAUSTED


@pytest.mark.parametrize("policy, kind", [("return", "expire"), ("forfeit", "forfeit")])
def test_at_its_end_unused_hours_are_returned_or_forfeited_once(system, policy, kind):
    allocation = funded_allocation(system, hours=10, pool_options={"unused_hours_policy": policy})
    use(system, 4)
    day_after = allocation.end_date.replace(year=allocation.end_date.year + 1)

    assert expire_ended_allocations(today=day_after) == 1
    assert expire_ended_allocations(today=day_after) == 0

    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXPIRED
    [end] = LedgerTransaction.objects.filter(type=kind)
    assert sorted(end.entries.values_list("amount", flat=True)) == [-6 * HOUR, 6 * HOUR]
    assert ledger.allocation_account(allocation).balance == 0


@pytest.mark.parametrize("policy", ["return", "forfeit"])
def test_the_limits_give_an_ended_allocation_what_its_ledger_account_holds_not_its_unused_award(system, policy):
    allocation = funded_allocation(system, hours=10, pool_options={"unused_hours_policy": policy})
    use(system, 4)
    expire_ended_allocations(today=allocation.end_date.replace(year=allocation.end_date.year + 1))
    use(system, 1, start_id=2)  # reported after it settled: an overrun of its own

    [limit] = account_limits(system=system)

    assert (limit["committed_gpu_seconds"], limit["used_gpu_seconds"]) == (10 * HOUR, 5 * HOUR)
    assert limit["remaining_gpu_seconds"] == ledger.allocation_account(allocation).balance == -1 * HOUR


def test_the_charge_factor_is_divided_back_out_of_the_slurm_limit(system):
    system.charge_factor = "2"
    system.save()
    funded_allocation(system, hours=10)

    assert account_limits(system=system)[0]["gpu_minutes_limit"] == 300


def test_a_clusters_usage_report_records_and_flags_the_variance(system):
    funded_allocation(system, account="airr-00001")
    funded_allocation(system, account="airr-00002")
    use(system, 2)  # airr-00001 used two GPU-hours according to the ledger
    report = (
        "Account|User|GrpTRESRaw\n"
        "root||cpu=1,gres/gpu=9999\n"
        "airr-00001||cpu=10,gres/gpu=125\n"
        "airr-00001|alice|cpu=10,gres/gpu=125\n"
        "airr-00002||cpu=10,gres/gpu=600\n"
    )

    response = post_usage_report(system, report.encode())

    assert response.status_code == 201, response.json()
    variance = {r.account: (r.variance_seconds, r.is_flagged) for r in UsageReport.objects.all()}
    assert variance == {"airr-00001": (5 * 60, False), "airr-00002": (10 * HOUR, True)}


def test_an_assigned_account_is_compared_with_what_its_own_jobs_were_charged(system, alice):
    from allocations.usage.services import assign_unmatched_account

    allocation = funded_allocation(system, account="airr-00001")
    old = sacct_line(7, account="old-name", elapsed=HOUR)
    ingest_sacct(system=system, payload=payload(sacct_line(1, elapsed=2 * HOUR), old), source="command")
    assign_unmatched_account(system=system, account="old-name", allocation=allocation, actor=alice)
    reconcile_system(system=system)
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 3 * HOUR
    # sshare once old-name sits under the allocation's account: the parent's row includes its child's usage.
    report = "Account|User|GrpTRESRaw\nairr-00001||gres/gpu=180\n old-name||gres/gpu=60\n"

    response = post_usage_report(system, report.encode())

    assert response.status_code == 201, response.json()
    rows = {
        r.account: (r.allocation, r.reported_seconds, r.ledger_seconds, r.is_flagged) for r in UsageReport.objects.all()
    }
    assert rows == {
        "airr-00001": (allocation, 3 * HOUR, 3 * HOUR, False),
        "old-name": (allocation, HOUR, HOUR, False),
    }


def test_a_usage_report_without_the_columns_is_a_400(system):
    response = post_usage_report(system, b"Account|Something\nx|1\n")

    assert response.status_code == 400
    assert "GrpTRESRaw" in response.json()["errors"]["body"][0]


def test_a_usage_report_without_a_user_column_is_a_400_not_each_users_usage_added_to_the_accounts(system):
    funded_allocation(system, account="airr-00001")
    use(system, 2)
    # `sshare -P -a -o Account,GrpTRESRaw`: a user's row names its account too, and nothing tells it from the
    # account's own row, which already holds the users' usage: added up, the account would have used four hours.
    report = "Account|GrpTRESRaw\nairr-00001|cpu=10,gres/gpu=120\n airr-00001|cpu=10,gres/gpu=120\n"

    response = post_usage_report(system, report.encode())

    assert response.status_code == 400
    assert "User" in response.json()["errors"]["body"][0]
    assert not UsageReport.objects.exists()


def test_a_usage_report_with_both_sshare_and_sreport_columns_is_read_as_sshare_output(system):
    funded_allocation(system, account="airr-00001")
    response = post_usage_report(system, b"Account|User|GrpTRESRaw|Used\nairr-00001||cpu=1,gres/gpu=60|7\n")

    assert response.status_code == 201, response.content
    assert UsageReport.objects.get().reported_seconds == HOUR


def test_usage_tasks_run_on_their_queues_and_the_beat_schedules_them():
    from airr_portal.celery import app as celery_app

    route = celery_app.amqp.router.route
    assert route({}, "allocations.tasks.ingest_batch_task")["queue"].name == "ingest"
    assert route({}, "allocations.tasks.ingest_stalled_batches_task")["queue"].name == "ingest"
    assert route({}, "allocations.tasks.reconcile_system_task")["queue"].name == "reconcile"
    assert route({}, "allocations.tasks.reconcile_all_systems_task")["queue"].name == "reconcile"
    assert route({}, "airr_portal.tasks.send_email_task")["queue"].name == "default"
    scheduled = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
    celery_app.loader.import_default_modules()  # as a worker does on starting: the tasks it will know
    assert {
        "allocations.tasks.ingest_stalled_batches_task",
        "allocations.tasks.reconcile_all_systems_task",
        "allocations.tasks.check_all_thresholds_task",
        "allocations.tasks.expire_allocations_task",
    } <= scheduled
    assert set(celery_app.tasks) >= scheduled


def test_an_allocation_is_not_expired_before_its_last_day_ends_in_its_systems_time_zone(system):
    """The allocation's days are its system's (UTC here): at 23:30 UTC on its last day, which is already the
    next day in London in summer, it still has half an hour to run, and its hours are not returned yet."""
    from datetime import UTC, date, datetime
    from unittest import mock

    from django.utils import timezone

    from allocations.awards import activate_started_allocations

    year = timezone.localdate().year - 1
    last_day = date(year, 7, 31)
    allocation = funded_allocation(
        system,
        hours=10,
        start_date=date(year, 7, 1),
        end_date=last_day,
        pool_options={"valid_from": date(year, 1, 1), "valid_until": date(year + 2, 12, 31)},
    )

    following = funded_allocation(
        system,
        account="airr-00002",
        state="scheduled",
        start_date=date(year, 8, 1),
        end_date=date(year, 8, 31),
        pool_options={"valid_from": date(year, 1, 1), "valid_until": date(year + 2, 12, 31)},
    )

    def at(*moment):
        return mock.patch("django.utils.timezone.now", return_value=datetime(*moment, tzinfo=UTC))

    with at(year, 7, 31, 23, 30):
        assert activate_started_allocations() == 0  # nor does the next one start an hour early
        assert account_limits(system=system)[0]["gpu_minutes_limit"] == 600
    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.ACTIVE

    with at(year, 8, 1, 0, 0, 1):
        assert activate_started_allocations() == 1
        assert account_limits(system=system)[0]["gpu_minutes_limit"] == 0  # its jobs stop
    settled = datetime(year, 8, 1, 0, 0, 1) + timedelta(days=settings.USAGE_SETTLING_DAYS)
    with at(*(settled - timedelta(seconds=2)).timetuple()[:6]):
        assert expire_ended_allocations() == 0  # its hours wait for jobs reported late
    with at(*settled.timetuple()[:6]):
        assert expire_ended_allocations() == 1
    allocation.refresh_from_db()
    following.refresh_from_db()
    assert (allocation.state, following.state) == (Allocation.State.EXPIRED, Allocation.State.ACTIVE)


def test_an_award_never_taken_up_returns_its_hours_to_the_pool_even_where_unused_hours_are_forfeited(system):
    from allocations.selectors import pool_figures

    allocation = funded_allocation(system, hours=10, state="scheduled", pool_options={"unused_hours_policy": "forfeit"})
    after = allocation.end_date + timedelta(days=settings.USAGE_SETTLING_DAYS + 1)

    assert expire_ended_allocations(today=after) == 1

    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXPIRED
    assert not LedgerTransaction.objects.filter(type="forfeit").exists()
    [end] = LedgerTransaction.objects.filter(type="expire")
    assert sorted(end.entries.values_list("amount", flat=True)) == [-10 * HOUR, 10 * HOUR]
    assert pool_figures(allocation.pool).available == 100 * HOUR  # the whole deposit is awardable again


@pytest.mark.parametrize("policy, kind", [("return", "expire"), ("forfeit", "forfeit")])
def test_jobs_reported_after_the_end_date_are_charged_before_the_unused_hours_leave(system, policy, kind):
    """A job that ended on the last day, reported the next morning, is charged to the allocation's own hours:
    only what is left when the allocation settles is returned or forfeited, and the pool loses nothing."""
    from datetime import date

    from django.utils import timezone

    year = timezone.localdate().year - 1  # an allocation that ended last year: its limit is 0 today
    allocation = funded_allocation(
        system,
        hours=10,
        start_date=date(year, 1, 1),
        end_date=date(year, 6, 30),
        pool_options={
            "unused_hours_policy": policy,
            "valid_from": date(year, 1, 1),
            "valid_until": date(year + 2, 12, 31),
        },
    )
    use(system, 4)
    day_after = allocation.end_date + timedelta(days=1)
    assert expire_ended_allocations(today=day_after) == 0
    limits = account_limits(system=system)[0]
    assert (limits["gpu_minutes_limit"], limits["may_run"]) == (0, False)
    assert (
        sacctmgr_commands(system=system)
        .splitlines()[1]
        .endswith(f"GrpTRESMins=gres/gpu=0  # active, ended {allocation.end_date.isoformat()}")
    )

    use(system, 1, start_id=10)  # reported late

    assert expire_ended_allocations(today=day_after + timedelta(days=settings.USAGE_SETTLING_DAYS)) == 1
    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXPIRED
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 5 * HOUR
    [end] = LedgerTransaction.objects.filter(type=kind)
    assert max(entry.amount for entry in end.entries.all()) == 5 * HOUR
    assert ledger.allocation_account(allocation).balance == 0


@pytest.mark.parametrize("policy, kind", [("return", "expire"), ("forfeit", "forfeit")])
def test_usage_recorded_but_not_yet_charged_when_the_allocation_settles_is_charged_before_its_hours_leave(
    system, policy, kind
):
    """A job recorded during settling whose reconciliation is still queued (or was lost with the broker) when
    the daily expiry runs: it is charged first, so only what is left leaves, and the pool is not given hours the
    allocation then spends."""
    allocation = funded_allocation(system, hours=10, pool_options={"unused_hours_policy": policy})
    use(system, 4)
    ingest_sacct(system=system, payload=payload(sacct_line(10, elapsed=HOUR)), source="command")  # not reconciled

    assert expire_ended_allocations(today=allocation.end_date + timedelta(days=settings.USAGE_SETTLING_DAYS + 1)) == 1
    reconcile_system(system=system)  # the run that was queued: nothing is left to charge

    assert ledger.net_usage(ledger.allocation_account(allocation)) == 5 * HOUR
    [end] = LedgerTransaction.objects.filter(type=kind)
    assert max(entry.amount for entry in end.entries.all()) == 5 * HOUR
    assert ledger.allocation_account(allocation).balance == 0


def test_each_threshold_email_states_the_true_figures_when_usage_jumps_past_several(
    system, alice, django_capture_on_commit_callbacks
):
    """9.5 of 10 GPU-hours used in one go passes 50, 75 and 90 %: each email says which threshold was passed and
    what was really used, never "9.5 GPU-hours, 50% of its award"."""
    from django.urls import reverse

    allocation = funded_allocation(system, hours=10, holder=alice)
    use(system, 9.5)
    with django_capture_on_commit_callbacks(execute=True):
        check_thresholds(system=system)

    bodies = {m.subject: m.body for m in mail.outbox}
    assert set(bodies) == {
        f"[AIRR Portal] airr-00001 on Isambard-AI has used {p}% of its GPU-hours" for p in (50, 75, 90)
    }
    for body in bodies.values():
        assert "9.5 GPU-hours, 50%" not in body and "9.5 GPU-hours, 75%" not in body
        assert "9.5 of its 10 GPU-hours (95%)" in body
        assert reverse("usage:allocation-usage", args=[allocation.pk]) in body


def test_an_allocation_exhausted_by_a_job_later_reported_shorter_runs_again(system):
    """Exhausted means used at least the award plus grace: once a refund brings usage back under it, the
    allocation is active again and its limit is restored, rather than stopped for good with hours left."""
    allocation = funded_allocation(system, hours=10)
    use(system, 10)
    check_thresholds(system=system)
    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.EXHAUSTED

    use(system, 4)  # job 1 re-reported: it ran 4 GPU-hours, not 10
    assert ledger.net_usage(ledger.allocation_account(allocation)) == 4 * HOUR
    check_thresholds(system=system)

    allocation.refresh_from_db()
    assert allocation.state == Allocation.State.ACTIVE
    assert account_limits(system=system)[0]["gpu_minutes_limit"] == 600
    assert sorted(ThresholdNotice.objects.values_list("percent", flat=True)) == [50, 75, 90, 100]  # each once


def test_a_threshold_email_names_the_system_since_one_award_has_the_same_account_on_each(
    system, alice, django_capture_on_commit_callbacks
):
    """An award on Isambard-AI and Dawn runs as airr-00001 on both: the email says which of the two passed 50 %."""
    from tests.factories import SystemFactory

    dawn = SystemFactory(name="Dawn", slug="dawn", cluster_name="dawn")
    funded_allocation(system, hours=10, holder=alice)
    funded_allocation(dawn, hours=10, holder=alice)
    use(system, 6)
    with django_capture_on_commit_callbacks(execute=True):
        check_thresholds(system=system)

    [message] = mail.outbox
    assert message.subject == "[AIRR Portal] airr-00001 on Isambard-AI has used 50% of its GPU-hours"
    assert "on Isambard-AI" in message.body


def test_a_notice_left_unsent_is_emailed_by_the_beat_even_once_its_allocation_has_settled(
    system, alice, django_capture_on_commit_callbacks
):
    """The 90 % notice of a late charge during settling, recorded while the broker was down: the allocation then
    settles (expired), the system's last open one. The beat must still send its emails."""
    from unittest import mock

    from django.utils import timezone
    from kombu.exceptions import OperationalError

    from airr_portal.tasks import send_unsent_emails_task

    allocation = funded_allocation(system, hours=10, holder=alice)
    use(system, 9.5)
    with (
        mock.patch("celery.app.task.Task.apply_async", side_effect=OperationalError("Connection refused")),
        django_capture_on_commit_callbacks(execute=True),
    ):
        check_thresholds(system=system)
    assert expire_ended_allocations(today=allocation.end_date + timedelta(days=settings.USAGE_SETTLING_DAYS + 1)) == 1

    later = timezone.now() + timedelta(minutes=11)
    with (
        mock.patch("django.utils.timezone.now", return_value=later),
        django_capture_on_commit_callbacks(execute=True),
    ):
        send_unsent_emails_task()

    assert sorted(m.subject for m in mail.outbox) == [
        f"[AIRR Portal] airr-00001 on Isambard-AI has used {p}% of its GPU-hours" for p in (50, 75, 90)
    ]


SREPORT_BANNER = (
    "--------------------------------------------------------------------------------\n"
    "Cluster/Account/User Utilization 2020-01-01T00:00:00 - 2026-03-02T23:59:59 (194486400 secs)\n"
    "Usage reported in TRES {unit}\n"
    "--------------------------------------------------------------------------------\n"
    "Cluster|Account|Login|Proper Name|TRES Name|Used\n"
)


def test_sreport_output_as_slurm_prints_it_in_minutes_is_read(system):
    funded_allocation(system, account="airr-00001")
    use(system, 2)
    report = SREPORT_BANNER.format(unit="Minutes") + (
        "isambard-ai|root||||gres/gpu|120\nisambard-ai|airr-00001|||gres/gpu|120\n"
        "isambard-ai|airr-00001|alice|Alice Owner|gres/gpu|120\n"
    )

    response = post_usage_report(system, report.encode())

    assert response.status_code == 201, response.json()
    assert [(r.account, r.reported_seconds, r.is_flagged) for r in UsageReport.objects.all()] == [
        ("airr-00001", 2 * HOUR, False)
    ]


@pytest.mark.parametrize("unit", ["Hours", "Seconds", "Percentage of Total", "Minutes/Percentage of Total"])
def test_sreport_output_in_another_unit_than_minutes_is_a_400_not_a_variance(system, unit):
    funded_allocation(system, account="airr-00001")
    use(system, 2)
    # `-t hours` prints 2 for two GPU-hours: read as minutes, it would record a variance of almost two hours.
    report = SREPORT_BANNER.format(unit=unit) + "isambard-ai|airr-00001|||gres/gpu|2\n"

    response = post_usage_report(system, report.encode())

    assert response.status_code == 400
    assert "-t minutes" in response.json()["errors"]["body"][0]
    assert not UsageReport.objects.exists()


def test_sreport_output_without_tres_gres_gpu_is_a_400_not_cpu_minutes_read_as_gpu_minutes(system):
    funded_allocation(system, account="airr-00001")
    use(system, 2)
    # Without -T, sreport reports CPU-minutes (its banner says so, and it has no TRES Name column): 72 CPUs for two
    # hours read as GPU-minutes would record a variance of 142 GPU-hours.
    report = SREPORT_BANNER.format(unit="Minutes").replace("TRES Minutes", "CPU Minutes").replace(
        "TRES Name|Used", "Used|Energy"
    ) + ("isambard-ai|airr-00001|||8640|0\n")

    response = post_usage_report(system, report.encode())

    assert response.status_code == 400
    assert "-T gres/gpu" in response.json()["errors"]["body"][0]
    assert not UsageReport.objects.exists()


def test_a_report_covering_several_clusters_counts_only_the_rows_of_this_systems_cluster(system):
    funded_allocation(system, account="airr-00001")
    use(system, 2)
    # sreport clusters=all (or -M), from a slurmdbd shared by two clusters: the same account name on each.
    report = SREPORT_BANNER.format(unit="Minutes") + (
        "dawn|airr-00001|||gres/gpu|6000\nisambard-ai|airr-00001|||gres/gpu|120\n"
    )

    response = post_usage_report(system, report.encode())

    assert response.status_code == 201, response.json()
    assert [(r.account, r.reported_seconds, r.is_flagged) for r in UsageReport.objects.all()] == [
        ("airr-00001", 2 * HOUR, False)
    ]


def test_a_report_of_another_cluster_only_is_a_400_that_names_both(system):
    funded_allocation(system, account="airr-00001")
    report = SREPORT_BANNER.format(unit="Minutes") + "dawn|airr-00001|||gres/gpu|6000\n"

    response = post_usage_report(system, report.encode())

    assert response.status_code == 400
    assert "isambard-ai" in response.json()["errors"]["body"][0]
    assert "dawn" in response.json()["errors"]["body"][0]
    assert not UsageReport.objects.exists()


def test_sshare_output_of_several_clusters_counts_only_the_block_of_this_systems_cluster(system):
    funded_allocation(system, account="airr-00001")
    use(system, 2)
    # `sshare -M dawn,isambard-ai -P` prints a CLUSTER line and a header before each cluster's rows.
    report = (
        "CLUSTER: dawn\n"
        "Account|User|GrpTRESRaw\n"
        "airr-00001||cpu=10,gres/gpu=6000\n"
        "CLUSTER: isambard-ai\n"
        "Account|User|GrpTRESRaw\n"
        "airr-00001||cpu=10,gres/gpu=120\n"
    )

    response = post_usage_report(system, report.encode())

    assert response.status_code == 201, response.json()
    assert [(r.account, r.reported_seconds, r.is_flagged) for r in UsageReport.objects.all()] == [
        ("airr-00001", 2 * HOUR, False)
    ]


@pytest.mark.parametrize(
    "report",
    [
        "Account|User|GrpTRESRaw\nairr-00001||cpu=10,gres/gpu=120\n",
        # Hidden behind the mark, the first CLUSTER line would leave dawn's rows counted as this cluster's.
        "CLUSTER: dawn\nAccount|User|GrpTRESRaw\nairr-00001||gres/gpu=6000\n"
        "CLUSTER: isambard-ai\nAccount|User|GrpTRESRaw\nairr-00001||gres/gpu=120\n",
    ],
    ids=["sshare", "sshare -M"],
)
def test_a_usage_report_saved_with_a_byte_order_mark_is_read_as_without_it(system, report):
    funded_allocation(system, account="airr-00001")
    use(system, 2)

    response = post_usage_report(system, b"\xef\xbb\xbf" + report.replace("\n", "\r\n").encode())

    assert response.status_code == 201, response.json()
    assert [(r.account, r.reported_seconds, r.is_flagged) for r in UsageReport.objects.all()] == [
        ("airr-00001", 2 * HOUR, False)
    ]


def test_sshare_output_of_another_cluster_only_is_a_400_that_names_both(system):
    funded_allocation(system, account="airr-00001")

    response = post_usage_report(system, b"CLUSTER: dawn\nAccount|User|GrpTRESRaw\nairr-00001||gres/gpu=60\n")

    assert response.status_code == 400
    assert "isambard-ai" in response.json()["errors"]["body"][0]
    assert "dawn" in response.json()["errors"]["body"][0]
    assert not UsageReport.objects.exists()


def test_a_usage_report_over_its_size_limit_is_a_413_and_records_nothing(system):
    from allocations.usage.variance import REPORT_MAX_BYTES

    funded_allocation(system, account="airr-00001")
    rows = b"airr-00001||gres/gpu=60\n" * (REPORT_MAX_BYTES // 24 + 1)

    response = post_usage_report(system, b"Account|User|GrpTRESRaw\n" + rows)

    assert response.status_code == 413
    assert "larger than 16 MB" in response.json()["detail"]
    assert not UsageReport.objects.exists()


def test_an_allocation_starting_today_has_its_limit_before_the_hourly_activation_runs(client, system):
    """Its first day begins at midnight in its system's time zone (London here, an hour ahead of UTC in summer);
    the activation runs hourly, and until then the cluster must not be told 0. One starting tomorrow still gets 0,
    and neither is made active by the limits being read."""
    from datetime import UTC, date, datetime
    from io import StringIO
    from unittest import mock

    from django.core.management import call_command
    from django.urls import reverse
    from django.utils import timezone

    from allocations.usage.services import create_ingest_token

    system.time_zone = "Europe/London"
    system.save()
    year = timezone.localdate().year + 1
    window = {"valid_from": date(year, 1, 1), "valid_until": date(year, 12, 31)}
    starting = funded_allocation(
        system,
        hours=10,
        state="scheduled",
        start_date=date(year, 7, 1),
        end_date=date(year, 7, 31),
        pool_options=window,
    )
    funded_allocation(
        system,
        account="airr-00002",
        hours=10,
        state="scheduled",
        start_date=date(year, 7, 2),
        end_date=date(year, 7, 31),
        pool_options=window,
    )
    _, key = create_ingest_token(system=system, name="limits agent", actor=None)

    def limits_at(*moment):
        with mock.patch("django.utils.timezone.now", return_value=datetime(*moment, tzinfo=UTC)):
            response = client.get(reverse("system-limits", args=[system.slug]), HTTP_AUTHORIZATION=f"Bearer {key}")
            out = StringIO()
            call_command("export_slurm_limits", "--system", system.slug, stdout=out)
        commands = out.getvalue().splitlines()[1:]
        return [(a["account"], a["state"], a["gpu_minutes_limit"]) for a in response.json()["accounts"]], commands

    # 23:30 on 30 June in London: not yet its day.
    assert limits_at(year, 6, 30, 22, 30)[0] == [("airr-00001", "scheduled", 0), ("airr-00002", "scheduled", 0)]

    # 00:30 on 1 July in London (23:30 UTC on 30 June): its day, the activation not yet run.
    api, commands = limits_at(year, 6, 30, 23, 30)
    assert api == [("airr-00001", "active", 600), ("airr-00002", "scheduled", 0)]
    assert commands[0].endswith("set GrpTRESMins=gres/gpu=600  # active")
    assert commands[1].endswith("set GrpTRESMins=gres/gpu=0  # scheduled")
    starting.refresh_from_db()
    assert starting.state == Allocation.State.SCHEDULED  # the activation's to make so
