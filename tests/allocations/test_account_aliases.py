"""Assigning an unmatched scheduler account lasts: later usage of that account is charged to the allocation."""

import html
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db.models import F
from django.urls import reverse

from allocations import ledger
from allocations.models import JobRecord, SchedulerAccountAlias
from allocations.usage.ingest import ingest_sacct
from allocations.usage.limits import account_limits, sacctmgr_commands
from allocations.usage.reconcile import reconcile_system
from allocations.usage.services import UsageError, assign_unmatched_account
from programmes.models import System
from tests.allocations.usage_helpers import HOUR, funded_allocation, payload, sacct_line
from tests.factories import SystemFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(make_persona, client):
    user = make_persona("admin")
    client.force_login(user)
    return user


def ingest(system, data):
    return ingest_sacct(system=system, payload=data, source="command")


def used(allocation) -> int:
    return ledger.net_usage(ledger.allocation_account(allocation))


def test_after_an_assignment_a_later_post_for_that_account_is_matched_and_charged(system, alice):
    allocation = funded_allocation(system, account="airr-00001")
    ingest(system, payload(sacct_line(1, account="old-name")))
    assign_unmatched_account(system=system, account="old-name", allocation=allocation, actor=alice)
    reconcile_system(system=system)

    outcome = ingest(system, payload(sacct_line(2, account="old-name", gpus=2)))
    reconcile_system(system=system)

    assert outcome.batch.unmatched == 0
    assert JobRecord.objects.get(job_id="2").allocation == allocation
    assert used(allocation) == HOUR + 2 * HOUR
    alias = SchedulerAccountAlias.objects.get()
    assert (alias.system, alias.account, alias.allocation, alias.created_by) == (system, "old-name", allocation, alice)


def test_usage_of_an_assigned_account_outside_the_allocation_window_is_flagged(system, alice):
    allocation = funded_allocation(system, account="airr-00001")
    ingest(system, payload(sacct_line(1, account="old-name")))
    assign_unmatched_account(system=system, account="old-name", allocation=allocation, actor=alice)
    late = allocation.end_date.replace(year=allocation.end_date.year + 1)

    ingest(system, payload(sacct_line(2, account="old-name", start=f"{late}T10:00:00", end=f"{late}T11:00:00")))

    assert JobRecord.objects.get(job_id="2").is_outside_window


def test_held_usage_is_flagged_on_assignment_by_the_same_window_rule_as_ingest(system, alice):
    """Assigning held usage flags exactly the runs that posting them after the assignment would flag."""
    allocation = funded_allocation(system, account="airr-00001")
    first, last = allocation.start_date, allocation.end_date
    runs = [
        sacct_line(1, account="old-name", start=f"{last}T23:00:00", end=f"{last}T23:45:00"),  # ends on the last day
        sacct_line(2, account="old-name", start=f"{last}T23:00:00", end=f"{last + timedelta(days=1)}T00:30:00"),
        sacct_line(3, account="old-name", state="RUNNING", start=f"{last + timedelta(days=1)}T01:00:00", end="Unknown"),
        sacct_line(4, account="old-name", start=f"{first}T00:00:00", end=f"{first}T01:00:00"),
    ]
    ingest(system, payload(*runs))
    assign_unmatched_account(system=system, account="old-name", allocation=allocation, actor=alice)
    assigned = dict(JobRecord.objects.values_list("job_id", "is_outside_window"))

    JobRecord.objects.all().delete()
    ingest(system, payload(*(run.replace("old-name", "airr-00001") for run in runs)))
    posted = dict(JobRecord.objects.values_list("job_id", "is_outside_window"))

    assert assigned == posted == {"1": False, "2": True, "3": True, "4": False}


def test_the_same_account_name_on_another_system_stays_unmatched(system, alice):
    allocation = funded_allocation(system, account="airr-00001")
    ingest(system, payload(sacct_line(1, account="old-name")))
    assign_unmatched_account(system=system, account="old-name", allocation=allocation, actor=alice)
    dawn = SystemFactory(slug="dawn")

    outcome = ingest(dawn, payload(sacct_line(2, account="old-name", cluster=dawn.cluster_name)))

    assert outcome.batch.unmatched == 1
    assert JobRecord.objects.get(system=dawn).allocation is None


def test_an_account_whose_usage_is_held_only_on_another_system_is_refused(system, alice):
    allocation = funded_allocation(system, account="airr-00001")
    dawn = SystemFactory(slug="dawn")
    ingest(dawn, payload(sacct_line(1, account="old-name", cluster=dawn.cluster_name)))

    with pytest.raises(UsageError, match="No usage of 'old-name' is held on"):
        assign_unmatched_account(system=system, account="old-name", allocation=allocation, actor=alice)

    assert not SchedulerAccountAlias.objects.exists()
    assert JobRecord.objects.get().allocation is None


def test_an_allocation_of_another_system_is_refused(system, alice):
    dawn = SystemFactory(slug="dawn")
    theirs = funded_allocation(dawn, account="dawn-00001")
    ingest(system, payload(sacct_line(1, account="old-name")))

    with pytest.raises(UsageError, match="dawn-00001 is on"):
        assign_unmatched_account(system=system, account="old-name", allocation=theirs, actor=alice)

    assert not SchedulerAccountAlias.objects.exists()
    assert JobRecord.objects.get().allocation is None


def test_an_account_another_allocation_owns_is_refused(system, alice):
    owner = funded_allocation(system, account="airr-00001")
    other = funded_allocation(system, account="airr-00002")
    # Held before the owner took that account name: its usage is the owner's, not another's.
    ingest(system, payload(sacct_line(1, account="airr-00003")))
    owner.scheduler_account = "airr-00003"
    owner.save()

    with pytest.raises(UsageError, match="'airr-00003' is the scheduler account of airr-00003"):
        assign_unmatched_account(system=system, account="airr-00003", allocation=other, actor=alice)

    assert not SchedulerAccountAlias.objects.exists()
    assert JobRecord.objects.get().allocation is None


def test_an_account_already_assigned_is_refused_and_keeps_its_first_allocation(system, alice):
    first = funded_allocation(system, account="airr-00001")
    second = funded_allocation(system, account="airr-00002")
    ingest(system, payload(sacct_line(1, account="old-name")))
    assign_unmatched_account(system=system, account="old-name", allocation=first, actor=alice)
    # Held again: e.g. rows recorded before the assignment by a replay. Still the first allocation's.
    JobRecord.objects.filter(account="old-name").update(allocation=None)

    with pytest.raises(UsageError, match="already assigned to airr-00001"):
        assign_unmatched_account(system=system, account="old-name", allocation=second, actor=alice)

    assert SchedulerAccountAlias.objects.get().allocation == first


def test_the_allocations_own_account_moves_its_held_usage_without_an_alias(system, alice):
    allocation = funded_allocation(system, account="airr-00001")
    ingest(system, payload(sacct_line(1, account="airr-00009")))
    allocation.scheduler_account = "airr-00009"
    allocation.save()

    moved = assign_unmatched_account(system=system, account="airr-00009", allocation=allocation, actor=alice)

    assert moved == 1
    assert not SchedulerAccountAlias.objects.exists()


def test_the_page_refuses_a_hostile_assignment_with_a_clear_message(client, admin, system):
    funded_allocation(system, account="airr-00001")
    dawn = SystemFactory(slug="dawn")
    theirs = funded_allocation(dawn, account="dawn-00001")
    ingest(system, payload(sacct_line(1, account="old-name")))

    response = client.post(
        reverse("usage:unmatched-assign", args=[system.slug]),
        {"account": "old-name", "allocation": theirs.scheduler_account},
        follow=True,
    )

    assert response.status_code == 200
    assert "No allocation of this system has that scheduler account" in response.content.decode()
    assert not SchedulerAccountAlias.objects.exists()


@pytest.mark.parametrize(
    ("typed", "outcome"),
    [
        (" airr-00001 ", "Are you sure you want to assign 'old-name' to airr-00001?"),
        ("", "Enter the scheduler account of the allocation to assign it to"),
        ("airr\x00", "Null characters are not allowed"),
        ("x" * 5000, "No allocation of this system has that scheduler account"),
    ],
)
def test_the_allocation_is_named_by_its_scheduler_account_and_a_name_that_is_none_is_refused(
    client, admin, system, typed, outcome
):
    funded_allocation(system, account="airr-00001")
    ingest(system, payload(sacct_line(1, account="old-name")))

    response = client.post(
        reverse("usage:unmatched-assign", args=[system.slug]), {"account": "old-name", "allocation": typed}, follow=True
    )

    assert response.status_code == 200
    assert outcome in response.content.decode()
    assert not SchedulerAccountAlias.objects.exists()


def test_the_page_says_why_an_owned_account_cannot_be_assigned(client, admin, system):
    funded_allocation(system, account="airr-00001")
    other = funded_allocation(system, account="airr-00002")
    JobRecord.objects.create(
        system=system,
        job_id_raw="7",
        start="2026-03-01T10:00:00Z",
        job_id="7",
        account="airr-00001",
        user="alice",
        state="COMPLETED",
        elapsed_seconds=60,
        gpus=1,
        gpu_seconds=60,
        changed_seq=1,
    )

    response = client.post(
        reverse("usage:unmatched-assign", args=[system.slug]),
        {"account": "airr-00001", "allocation": other.scheduler_account, "confirm": "yes"},
        follow=True,
    )

    assert "is the scheduler account of airr-00001" in response.content.decode()
    assert not SchedulerAccountAlias.objects.exists()


def test_the_limits_list_an_assigned_account_with_its_allocations_limit(system, alice, capsys):
    allocation = funded_allocation(system, account="airr-00001", hours=10)
    ingest(system, payload(sacct_line(1, account="old-name")))
    assign_unmatched_account(system=system, account="old-name", allocation=allocation, actor=alice)

    limits = {limit["account"]: limit for limit in account_limits(system=system)}
    call_command("export_slurm_limits", "--system", "isambard-ai")
    commands = capsys.readouterr().out.splitlines()

    assert limits["old-name"]["alias_of"] == "airr-00001"
    assert limits["old-name"]["gpu_minutes_limit"] == limits["airr-00001"]["gpu_minutes_limit"] == 600
    assert limits["airr-00001"]["alias_of"] is None
    assert commands[2] == (
        "sacctmgr -i modify account where name=old-name cluster=isambard-ai "
        "set GrpTRESMins=gres/gpu=600  # active, charged to airr-00001"
    )


def test_the_limits_give_an_account_that_became_an_allocations_own_that_allocations_limit_only(system, alice):
    allocation = funded_allocation(system, account="airr-00001", hours=10)
    ingest(system, payload(sacct_line(1, account="airr-00002")))
    assign_unmatched_account(system=system, account="airr-00002", allocation=allocation, actor=alice)
    # Later an award gets the same account name: its own allocation wins, as it does when usage is matched. Were
    # the alias listed too, its command would come second and set airr-00001's limit on the new allocation.
    funded_allocation(system, account="airr-00002", hours=20)

    limits = [limit for limit in account_limits(system=system) if limit["account"] == "airr-00002"]
    commands = [line for line in sacctmgr_commands(system=system).splitlines() if "name=airr-00002 " in line]

    assert [(limit["alias_of"], limit["gpu_minutes_limit"]) for limit in limits] == [(None, 1200)]
    assert commands == [
        "sacctmgr -i modify account where name=airr-00002 cluster=isambard-ai set GrpTRESMins=gres/gpu=1200  # active"
    ]


def test_every_job_record_points_at_its_system_and_an_allocation_that_exist(system, alice):
    # JobRecord's system and allocation are not checked by the database (each check cost a big ingest more
    # than its rows): the ingest and the assignment keep them right by construction, which this checks.
    allocation = funded_allocation(system, account="airr-00001")
    dawn = SystemFactory(slug="dawn")
    ingest(system, payload(sacct_line(1), sacct_line(2, account="old-name"), sacct_line(3, account="nobody")))
    ingest(dawn, payload(sacct_line(4, cluster=dawn.cluster_name)))
    assign_unmatched_account(system=system, account="old-name", allocation=allocation, actor=alice)

    records = JobRecord.objects.all()
    assert {(r.job_id, r.system_id, r.allocation_id) for r in records} == {
        ("1", system.pk, allocation.pk),
        ("2", system.pk, allocation.pk),
        ("3", system.pk, None),
        ("4", dawn.pk, None),
    }
    assert not records.exclude(system__in=System.objects.all()).exists()
    assert not records.filter(allocation__isnull=False).exclude(allocation__pool__system=F("system")).exists()


def test_an_assignment_on_a_system_whose_time_zone_is_mistyped_is_refused_and_changes_nothing(system, alice):
    allocation = funded_allocation(system)
    ingest(system, payload(sacct_line(1, account="old-name")))
    System.objects.filter(pk=system.pk).update(time_zone="Europe/Londn")
    system.refresh_from_db()

    with pytest.raises(UsageError, match="'Europe/Londn' is not a known time zone"):
        assign_unmatched_account(system=system, account="old-name", allocation=allocation, actor=alice)

    assert JobRecord.objects.get().allocation is None
    assert not SchedulerAccountAlias.objects.exists()


@pytest.mark.parametrize("end", ["expire", "revoke"])
def test_an_ended_allocation_is_refused_and_the_usage_stays_held(system, alice, end):
    """Its unused hours went back to the pool when it ended: charging it now would spend them twice."""
    allocation = funded_allocation(system, account="airr-00001")
    ingest(system, payload(sacct_line(1, account="old-name")))
    if end == "expire":
        ledger.expire_allocation(allocation=allocation, idempotency_key="end")
    else:
        ledger.revoke_allocation(allocation=allocation, actor=alice, reason="Misuse", idempotency_key="end")

    with pytest.raises(UsageError, match="airr-00001 has ended"):
        assign_unmatched_account(system=system, account="old-name", allocation=allocation, actor=alice)

    assert not SchedulerAccountAlias.objects.exists()
    assert JobRecord.objects.get().allocation is None


def test_the_unmatched_page_offers_no_assignment_on_a_system_whose_allocations_have_all_ended(client, admin, system):
    ended = funded_allocation(system, account="airr-00002")
    ingest(system, payload(sacct_line(1, account="old-name")))
    assert client.get(reverse("usage:unmatched")).context["page"].object_list[0]["assignable"]

    ledger.expire_allocation(allocation=ended, idempotency_key="end")
    response = client.get(reverse("usage:unmatched"))

    assert not response.context["page"].object_list[0]["assignable"]
    assert ">Assign<" not in response.content.decode()


def test_for_a_qos_an_assigned_account_is_told_to_run_under_its_allocations_qos_not_given_one_of_its_own(
    system, alice, capsys
):
    allocation = funded_allocation(system, account="airr-00001", hours=10)
    ingest(system, payload(sacct_line(1, account="old-name")))
    assign_unmatched_account(system=system, account="old-name", allocation=allocation, actor=alice)

    call_command("export_slurm_limits", "--system", "isambard-ai", "--target", "qos")
    commands = capsys.readouterr().out.splitlines()

    # The allocation's QOS is the only one there is: a limit set on a QOS named old-name would change nothing
    # (or another QOS of that name), and old-name's jobs would run unlimited.
    assert commands[1] == "sacctmgr -i modify qos where name=airr-00001 set GrpTRESMins=gres/gpu=600  # active"
    assert commands[2].startswith("# old-name: charged to airr-00001; give it the QOS airr-00001")
    assert not any("name=old-name" in command for command in commands if not command.startswith("#"))


@pytest.mark.parametrize(
    ("refused", "account", "message"),
    [
        ("ended", "old-name", "airr-00001 has ended (expired)"),
        ("owned", "airr-00002", "'airr-00002' is the scheduler account of airr-00002"),
        ("assigned", "old-name", "'old-name' on Isambard-AI was already assigned to airr-00002"),
    ],
)
def test_the_page_never_asks_to_confirm_an_assignment_it_will_refuse(client, admin, system, refused, account, message):
    allocation = funded_allocation(system, account="airr-00001")
    other = funded_allocation(system, account="airr-00002")
    ingest(system, payload(sacct_line(1, account=account)))
    if refused == "ended":
        ledger.expire_allocation(allocation=allocation, idempotency_key="end")
    elif refused == "assigned":
        assign_unmatched_account(system=system, account=account, allocation=other, actor=admin)
    # Held (again), as rows recorded before an assignment or an allocation can be, e.g. by a replay.
    JobRecord.objects.update(allocation=None)

    response = client.post(
        reverse("usage:unmatched-assign", args=[system.slug]),
        {"account": account, "allocation": "airr-00001"},
        follow=True,
    )

    text = html.unescape(response.content.decode())
    assert "Are you sure" not in text and message in text
    assert not SchedulerAccountAlias.objects.filter(allocation=allocation).exists()
