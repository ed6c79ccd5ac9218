"""Report exports: the numbers in the files equal the ledger's, for hand-made data whose totals are known; the
same window exported again as of the first export's time gives the same numbers; scopes and expiry hold."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from allocations import ledger
from allocations.models import JobRecord, LedgerAccount, ReconciliationRun, ReportExport
from allocations.reports.selectors import MANUAL_ADJUSTMENTS, ReportScope, usage_totals
from allocations.reports.services import (
    ReportError,
    ReportParameters,
    build_report_export,
    delete_expired_report_exports,
    request_report_export,
)
from allocations.selectors import account_statement
from allocations.usage.ingest import ingest_sacct
from allocations.usage.reconcile import reconcile_system
from tests.allocations.report_helpers import (
    APRIL,
    MARCH,
    at,
    build_ledger_world,
    export_file,
    hours,
    read_csv,
    read_xlsx,
)
from tests.allocations.usage_helpers import HOUR, given_back_twice, payload, sacct_line
from tests.factories import ProgrammeFactory, UserFactory, give_mfa

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(system, programme):
    return build_ledger_world(system, programme)


@pytest.fixture
def admin(db):
    user = UserFactory(email="reports-admin@example.ac.uk", is_staff=True)
    give_mfa(user)
    return user


def export(user, *, groupings=(), window=MARCH, kind="totals", fmt="csv", programmes=(), as_of=None):
    """Ask for an export and build it, as the page and the worker would."""
    parameters = ReportParameters(
        kind=kind,
        groupings=list(groupings),
        start=window[0],
        end=window[1],
        fmt=fmt,
        programme_ids=[programme.pk for programme in programmes],
        as_of=as_of,
    )
    requested = request_report_export(user=user, parameters=parameters)
    return build_report_export(export_id=requested.pk)


def table(export_row) -> list[list[str]]:
    _, frame = read_csv(export_file(export_row))
    return frame.values.tolist()


def test_a_month_programme_system_report_holds_the_hours_worked_out_by_hand(world, admin):
    made = export(admin, groupings=["month", "system", "programme"], window=(date(2026, 2, 1), APRIL[1]))

    assert made.state == "done" and made.row_count == 5
    notes, frame = read_csv(export_file(made))
    assert list(frame.columns) == [
        "Programme",
        "System",
        "Month",
        "awarded_gpu_hours",
        "used_gpu_hours",
        "returned_gpu_hours",
        "forfeited_gpu_hours",
    ]
    assert frame.values.tolist() == [
        ["AI for Science", "Dawn", "2026-03", "30.00", "3.00", "0.00", "0.00"],
        ["AI for Science", "Dawn", "2026-04", "0.00", "0.00", "0.00", "27.00"],
        ["Open-Source AI Builder Fund", "Isambard-AI", "2026-02", "100.00", "0.00", "0.00", "0.00"],
        ["Open-Source AI Builder Fund", "Isambard-AI", "2026-03", "40.00", "7.50", "0.00", "0.00"],
        ["Open-Source AI Builder Fund", "Isambard-AI", "2026-04", "0.00", "0.00", "39.00", "0.00"],
        ["Total", "", "", "170.00", "10.50", "39.00", "27.00"],
    ]


def test_the_file_says_its_window_as_of_time_grouping_units_and_columns(world, admin):
    made = export(admin, groupings=["programme"])

    notes = "\n".join(read_csv(export_file(made))[0])
    assert "# Window: 1 March 2026 to 31 March 2026, inclusive" in notes
    assert f"({made.as_of.isoformat()})" in notes
    assert "# Grouping: Programme" in notes
    assert "# Units: GPU-hours" in notes
    for column in ("awarded", "used", "returned", "forfeited"):
        assert f"# Column {column}: " in notes


def test_the_totals_equal_each_allocations_ledger_statement_for_the_window(world, admin):
    made = export(admin, groupings=["allocation"], window=(date(2026, 2, 1), APRIL[1]))

    rows = {row[0]: row for row in table(made)}
    for allocation in (world.a1, world.a2, world.b1):
        statement = account_statement(ledger.allocation_account(allocation), start=date(2026, 2, 1), end=APRIL[1])
        _, awarded, used, returned, forfeited = rows[allocation.scheduler_account]
        net = hours(awarded) - hours(used) - hours(returned) - hours(forfeited)
        assert net == ledger.seconds_to_hours(statement.net_change)
    assert rows["Total"][2] == "10.50"


def test_used_hours_by_programme_equal_the_consumed_sinks_movement_in_the_window(world, admin):
    made = export(admin, groupings=["system"])

    used = {row[0]: hours(row[2]) for row in table(made)}
    for system in (world.isambard, world.dawn):
        sink = LedgerAccount.objects.get(system=system, kind="consumed")
        movement = account_statement(sink, start=MARCH[0], end=MARCH[1]).net_change
        assert used[system.name] == ledger.seconds_to_hours(movement)


def test_a_user_report_attributes_usage_to_whoever_ran_each_job_and_has_no_awarded_column(world, admin):
    made = export(admin, groupings=["user"])

    notes, frame = read_csv(export_file(made))
    assert list(frame.columns) == ["User", "used_gpu_hours"]
    assert frame.values.tolist() == [
        [MANUAL_ADJUSTMENTS, "0.50"],
        ["alice", "7.00"],
        ["bob", "1.00"],
        ["carol", "2.00"],
        ["Total", "10.50"],
    ]


def test_a_refund_shows_as_negative_use_in_the_month_it_takes_effect(world, admin):
    made = export(admin, groupings=["user", "month"], window=APRIL)

    assert table(made) == [["alice", "2026-04", "1.00"], ["carol", "2026-04", "-1.00"], ["Total", "", "0.00"]]


def test_pi_organisation_comes_from_the_allocations_holder(world, admin):
    made = export(admin, groupings=["organisation"])

    assert table(made) == [
        ["University of Bristol", "30.00", "9.50", "0.00", "0.00"],
        ["University of Cambridge", "40.00", "1.00", "0.00", "0.00"],
        ["Total", "70.00", "10.50", "0.00", "0.00"],
    ]


def test_an_xlsx_export_holds_the_same_numbers_with_its_notes_on_a_sheet_of_their_own(world, admin):
    csv_export = export(admin, groupings=["programme", "month"], window=(date(2026, 2, 1), APRIL[1]))
    xlsx_export = export(admin, groupings=["programme", "month"], window=(date(2026, 2, 1), APRIL[1]), fmt="xlsx")

    report, notes = read_xlsx(export_file(xlsx_export))
    _, from_csv = read_csv(export_file(csv_export))
    assert list(report.columns) == list(from_csv.columns)
    xlsx_rows, csv_rows = report.values.tolist(), from_csv.values.tolist()
    assert [[str(cell) for cell in row[:2]] for row in xlsx_rows] == [row[:2] for row in csv_rows]
    assert [[hours(cell) for cell in row[2:]] for row in xlsx_rows] == [
        [hours(cell) for cell in row[2:]] for row in csv_rows
    ]
    assert report.values[-1][0] == "Total" and hours(report.values[-1][3]) == Decimal("10.50")
    assert "Window" in list(notes["Item"]) and "As of" in list(notes["Item"])


def test_an_export_as_of_an_earlier_time_is_unchanged_by_usage_recorded_later(world, admin, system):
    """Usage arriving later, and a back-dated charge, change a new export but not one made as of the first time."""
    first = export(admin, groupings=["programme", "month"], as_of=MARCH[1])
    assert table(first)[-1] == ["Total", "", "70.00", "10.00", "0.00", "0.00"]  # the adjustment came in April

    ingest_sacct(
        system=system,
        payload=payload(sacct_line(9, account="airr-00001", user="dave", gpus=8, elapsed=HOUR)),
        source="command",
    )
    reconcile_system(system=system)
    ledger.charge_usage(
        allocation=world.a1,
        seconds=5 * HOUR,
        reason="Back-dated charge for a lost record",
        idempotency_key="late-march-charge",
        effective_at=timezone.make_aware(timezone.datetime(2026, 3, 15, 12)),
    )

    again = export(admin, groupings=["programme", "month"], as_of=first.as_of.date())
    now = export(admin, groupings=["programme", "month"])

    assert table(again) == table(first)
    assert table(now)[-1] == ["Total", "", "70.00", "15.50", "0.00", "0.00"]
    assert read_csv(export_file(again))[1].equals(read_csv(export_file(first))[1])


def test_an_as_of_of_today_is_this_moment_so_the_export_cannot_change_later_today(world, admin):
    made = export(admin, groupings=["programme"], as_of=timezone.localdate())

    assert made.as_of <= timezone.now()
    assert made.as_of >= made.created_at - timedelta(seconds=1)


def test_building_an_export_twice_leaves_the_first_file_as_it_was(world, admin):
    made = export(admin, groupings=["programme"])
    first = export_file(made).read_bytes()

    again = build_report_export(export_id=made.pk)

    assert again.state == "done" and again.finished_at == made.finished_at
    assert export_file(made).read_bytes() == first


def test_an_export_whose_database_stays_unavailable_through_every_retry_is_marked_failed(world, admin, monkeypatch):
    from celery.exceptions import Retry
    from django.db import OperationalError

    from allocations import tasks
    from allocations.reports import services

    parameters = ReportParameters(
        kind="totals", groupings=["programme"], start=MARCH[0], end=MARCH[1], fmt="csv", programme_ids=[]
    )
    monkeypatch.setattr(tasks.report_export_task, "delay_on_commit", lambda *args, **kwargs: None)
    requested = request_report_export(user=admin, parameters=parameters)
    tries = []

    def unavailable(*, export_id):
        tries.append(export_id)
        raise OperationalError("the database went away")

    def retry_later(*args, **kwargs):
        raise Retry()  # as a worker does: the task is sent again, not run again here

    monkeypatch.setattr(services, "build_report_export", unavailable)
    monkeypatch.setattr(tasks.report_export_task, "retry", retry_later)
    tasks.report_export_task.apply(args=[requested.pk], throw=False)
    requested.refresh_from_db()
    assert requested.state == "pending"  # an earlier try leaves it to be tried again

    # The last of its tries, as Celery runs it after the earlier ones failed the same way.
    last = tasks.report_export_task.max_retries
    result = tasks.report_export_task.apply(args=[requested.pk], retries=last, throw=False)

    assert isinstance(result.result, (OperationalError, Retry)) and tries == [requested.pk, requested.pk]
    requested.refresh_from_db()
    assert requested.state == "failed" and "Try again" in requested.error


def test_a_directors_report_holds_only_their_own_programmes(world, system):
    director = UserFactory(email="science-director@example.ac.uk")
    world.science.directors.add(director)
    give_mfa(director)

    made = export(director, groupings=["programme", "system"])

    assert table(made) == [
        ["AI for Science", "Dawn", "30.00", "3.00", "0.00", "0.00"],
        ["Total", "", "30.00", "3.00", "0.00", "0.00"],
    ]
    assert "Fund pools of AI for Science" in "\n".join(read_csv(export_file(made))[0])


def test_a_director_cannot_ask_for_another_programme(world):
    director = UserFactory(email="science-director@example.ac.uk")
    world.science.directors.add(director)

    with pytest.raises(ReportError) as refused:
        export(director, groupings=["programme"], programmes=[world.builder])

    assert refused.value.errors == {"programmes": ["You can only report on programmes you direct"]}
    assert not ReportExport.objects.exists()


def test_an_admin_may_narrow_a_report_to_some_programmes(world, admin):
    made = export(admin, groupings=["programme"], programmes=[world.builder])

    assert [row[0] for row in table(made)] == ["Open-Source AI Builder Fund", "Total"]


def test_a_director_of_no_pools_gets_an_empty_report_not_everyones(world):
    director = UserFactory(email="new-director@example.ac.uk")
    ProgrammeFactory(name="Brand new").directors.add(director)

    made = export(director, groupings=["programme"])

    assert table(made) == [["Total", "0.00", "0.00", "0.00", "0.00"]]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"groupings": []}, "groupings", "Choose at least one way to group the totals"),
        ({"groupings": ["month", "week"]}, "groupings", "Group by month or by week, not both"),
        ({"groupings": ["colour"]}, "groupings", "There is no grouping called colour"),
        ({"window": (date(2026, 3, 31), date(2026, 3, 1))}, "end", "The end date must be on or after the start date"),
        ({"window": (date(2999, 1, 1), date(2999, 1, 2))}, "start", "The start date must be today or in the past"),
        ({"as_of": date(2999, 1, 1)}, "as_of", "The as-of date must be today or in the past"),
        ({"window": (date(1, 1, 1), date(2026, 3, 1))}, "start", "The start date must be in 2000 or later"),
        ({"as_of": date(1999, 12, 31)}, "as_of", "The as-of date must be in 2000 or later"),
        ({"window": (date(2026, 3, 1), date(9999, 12, 31))}, "end", "The end date must be within ten years"),
        ({"kind": "jobs", "fmt": "xlsx"}, "format", "The export of every job is CSV only"),
    ],
)
def test_parameters_that_make_no_report_are_refused_with_a_reason(admin, changes, field, message):
    arguments = {"groupings": ["programme"], **changes}

    with pytest.raises(ReportError) as refused:
        export(admin, **arguments)

    assert any(text.startswith(message) for text in refused.value.errors[field])


def test_the_raw_export_has_a_row_per_charged_job_with_what_the_ledger_charged_by_the_as_of_time(world, admin):
    made = export(admin, kind="jobs", window=MARCH)

    notes, frame = read_csv(export_file(made))
    assert made.row_count == 4
    assert list(frame.columns)[:3] == ["system", "programme", "pool"]
    rows = {row["job_id"]: row for row in frame.to_dict("records")}
    assert {job: row["charged_gpu_hours"] for job, row in rows.items()} == {
        "1": "4.00",
        "2": "1.00",  # re-reported shorter in April: charged 2, refunded 1
        "3": "1.00",
        "4": "3.00",
    }
    assert rows["4"]["system"] == "dawn" and rows["4"]["scheduler_account"] == "airr-00003"
    assert rows["1"]["start"] == "2026-03-01 10:00:00+00" and rows["1"]["user"] == "alice"
    assert rows["2"]["gpus"] == "1" and rows["2"]["elapsed_seconds"] == str(HOUR)


def test_the_raw_export_as_of_an_earlier_day_shows_the_charges_known_then(world, admin):
    made = export(admin, kind="jobs", window=MARCH, as_of=MARCH[1])

    charged = {row["job_id"]: row["charged_gpu_hours"] for row in read_csv(export_file(made))[1].to_dict("records")}
    assert charged["2"] == "2.00"  # the refund was recorded on 3 April


def test_the_raw_export_leaves_out_jobs_the_ledger_had_not_charged_by_the_as_of_time(world, admin, system):
    with at(timezone.now() - timedelta(days=1)):
        made = export(admin, kind="jobs", window=(date(2026, 3, 1), date(2026, 3, 31)))
    ingest_sacct(system=system, payload=payload(sacct_line(77, account="airr-00001")), source="command")
    reconcile_system(system=system)

    again = export(admin, kind="jobs", window=MARCH, as_of=made.as_of.date())
    assert again.row_count == made.row_count
    assert "77" not in list(read_csv(export_file(again))[1]["job_id"])


def test_the_raw_export_counts_a_run_under_way_at_the_as_of_time_by_when_it_recorded_its_charges(world, admin, system):
    """A run still going at the as-of time counts if its transactions were recorded by then, and not if later."""
    day = date(2026, 11, 10)

    def moment(days: int, hour: int):
        return timezone.make_aware(timezone.datetime(day.year, day.month, day.day + days, hour))

    def reconcile(job, when):
        ingest_sacct(system=system, payload=payload(sacct_line(job, account="airr-00001")), source="command")
        with at(when):
            return reconcile_system(system=system)

    recorded_in_time = reconcile(88, moment(0, 12))
    recorded_too_late = reconcile(89, moment(1, 9))
    # Both runs were going at midnight, the as-of time of an export as of that day; the second had started then
    # but recorded its transactions only the next morning.
    ReconciliationRun.objects.filter(pk=recorded_too_late.pk).update(started_at=moment(0, 13))
    ReconciliationRun.objects.filter(pk__in=[recorded_in_time.pk, recorded_too_late.pk]).update(
        finished_at=moment(2, 0)
    )

    made = export(admin, kind="jobs", window=MARCH, as_of=day)

    jobs = list(read_csv(export_file(made))[1]["job_id"])
    assert "88" in jobs and "89" not in jobs


def test_a_directors_raw_export_holds_only_their_programmes_jobs(world):
    director = UserFactory(email="science-director@example.ac.uk")
    world.science.directors.add(director)

    made = export(director, kind="jobs", window=MARCH)

    assert list(read_csv(export_file(made))[1]["job_id"]) == ["4"]


def test_expired_exports_lose_their_files_but_keep_their_rows(world, admin):
    made = export(admin, groupings=["programme"])
    kept = export(admin, groupings=["system"])
    ReportExport.objects.filter(pk=made.pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    assert delete_expired_report_exports() == 1

    made.refresh_from_db()
    assert made.file_path == "" and made.has_expired()
    assert not (export_file(kept).parent / f"{made.pk}.csv").exists()
    assert export_file(kept).exists()


def test_an_expired_export_is_not_built(world, admin):
    requested = request_report_export(
        user=admin,
        parameters=ReportParameters(
            kind="totals", groupings=["programme"], start=MARCH[0], end=MARCH[1], fmt="csv", programme_ids=[]
        ),
    )
    ReportExport.objects.filter(pk=requested.pk).update(
        state="pending", expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert build_report_export(export_id=requested.pk).state == "pending"


def test_grouped_totals_are_read_in_a_fixed_number_of_queries(world, django_assert_max_num_queries):
    with django_assert_max_num_queries(6):
        usage_totals(
            groupings=["programme", "pool", "system", "allocation", "organisation", "month"],
            start=MARCH[0],
            end=MARCH[1],
            as_of=timezone.now(),
            scope=ReportScope(None),
        )


def test_every_charge_in_the_raw_export_equals_the_sum_of_the_jobs_charges_in_the_ledger(world, admin, system):
    """The export reads an unchanged record's charge from the record itself: it must equal the job charges."""
    ingest_sacct(
        system=system,
        payload=payload(sacct_line(30, account="airr-00001", end="Unknown", state="RUNNING", elapsed=HOUR)),
        source="command",
    )
    reconcile_system(system=system)  # a running job, charged provisionally

    made = export(admin, kind="jobs", window=(MARCH[0], APRIL[1]))

    exported = {
        row["job_id"]: hours(row["charged_gpu_hours"]) for row in read_csv(export_file(made))[1].to_dict("records")
    }
    ledger_view = {
        record.job_id: ledger.seconds_to_hours(record.charged_seconds)
        for record in JobRecord.objects.with_charged_seconds().filter(charged_seconds__gt=0)
    }
    assert exported == ledger_view and "30" in exported


def test_names_people_type_never_become_spreadsheet_formulas(world, admin, system):
    world.alice.organisation = '=HYPERLINK("https://evil.example","x")'
    world.alice.save()
    ingest_sacct(
        system=system, payload=payload(sacct_line(40, account="airr-00001", user="@SUM(1+1)")), source="command"
    )
    reconcile_system(system=system)

    from_csv = export(admin, groupings=["organisation"], window=(date(2026, 2, 1), APRIL[1]))
    from_xlsx = export(admin, groupings=["organisation"], window=(date(2026, 2, 1), APRIL[1]), fmt="xlsx")
    jobs = export(admin, kind="jobs", window=MARCH)

    assert table(from_csv)[0][0] == """'=HYPERLINK("https://evil.example","x")"""
    assert read_xlsx(export_file(from_xlsx))[0].values.tolist()[0][0] == table(from_csv)[0][0]
    assert "'@SUM(1+1)" in list(read_csv(export_file(jobs))[1]["user"])


def test_a_user_report_counts_a_refund_by_hand_as_a_manual_adjustment_and_still_equals_the_ledger(system):
    """A job's 10 hours given back by hand (ledger.refund_usage, from the shell), then the job reported at 5 hours:
    the allocation's usage is 5 hours below zero. The refund by hand belongs to no job, as an adjustment does."""
    given_back_twice(system)
    window = {"start": date(2026, 1, 1), "end": date(2030, 12, 31), "as_of": timezone.now(), "scope": ReportScope(None)}

    by_user = usage_totals(groupings=["user"], **window)
    by_allocation = usage_totals(groupings=["allocation"], **window)

    assert by_allocation.totals["used"] == -5 * HOUR
    assert by_user.totals["used"] == -5 * HOUR
    assert [(labels, values["used"]) for labels, values in by_user.rows] == [
        ((MANUAL_ADJUSTMENTS,), -10 * HOUR),
        (("alice",), 5 * HOUR),
    ]
