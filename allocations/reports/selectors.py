"""Reads for reports: GPU-seconds awarded, used, returned and forfeited, grouped in SQL; job records for the raw
export. Every read takes `as_of` (entries recorded by then) and a scope (the pools the requester may see).

Measures come from the entries on allocation accounts: awards and endings by their transaction's type, usage as
what remains of the accounts' net movement; the window and the time buckets (month, week) use the ledger's
`effective_at`. Grouping by user goes through the job charges (each job
record's part of a usage transaction), because the ledger knows allocations, not the people in them.
"""

import operator
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import reduce

from django.db.models import BigIntegerField, Case, F, Max, OuterRef, Q, Subquery, Sum, When
from django.db.models.functions import TruncMonth, TruncWeek

from allocations.ledger import USAGE_TYPES
from allocations.models import (
    Allocation,
    JobCharge,
    JobRecord,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    ReconciliationRun,
)
from allocations.selectors import end_of, start_of_day
from allocations.usage.reconcile import RECONCILIATION_CAUSE
from programmes.models import FundPool, Programme, System

Type = LedgerTransaction.Type

# The groupings a report may combine, in the order their columns appear in a file.
GROUPINGS = {
    "programme": "Programme",
    "pool": "Fund pool",
    "system": "System",
    "allocation": "Allocation",
    "organisation": "PI organisation",
    "user": "User",
    "month": "Month",
    "week": "Week",
}
TIME_GROUPINGS = ("month", "week")

MEASURES = {
    "awarded": "GPU-hours committed to allocations from pools (awards), effective in the window",
    "used": "GPU-hours charged for usage, less refunds and adjustments, effective in the window",
    "returned": "Unused GPU-hours given back to the pool when an allocation expired or was revoked",
    "forfeited": "Unused GPU-hours forfeited when an allocation expired (pools whose policy is to forfeit)",
}
MANUAL_ADJUSTMENTS = "(manual adjustments: no user)"
NOT_GIVEN = "(not given)"


@dataclass(frozen=True)
class ReportScope:
    """Which pools a report reads: None for every pool (an admin asking for all), else these pool ids."""

    pool_ids: frozenset[int] | None = None

    @classmethod
    def for_user(cls, user, programme_ids: Iterable[int] = ()) -> "ReportScope":
        programme_ids = list(programme_ids)
        if user.is_staff and not programme_ids:
            return cls(None)
        pools = FundPool.objects.visible_to(user)
        if programme_ids:
            pools = pools.filter(programme__in=programme_ids)
        return cls(frozenset(pools.values_list("pk", flat=True)))


@dataclass
class TotalsReport:
    """Rows of labels (one per grouping) and GPU-seconds (one per measure), with their totals."""

    groupings: list[str]
    measures: list[str]
    rows: list[tuple[tuple[str, ...], dict[str, int]]] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, int]:
        return {measure: sum(values[measure] for _, values in self.rows) for measure in self.measures}


def measures_for(groupings: Iterable[str]) -> list[str]:
    """A user holds no award: grouped by user, a report has only what was used."""
    return ["used"] if "user" in groupings else list(MEASURES)


def usage_totals(*, groupings: list[str], start: date, end: date, as_of: datetime, scope: ReportScope) -> TotalsReport:
    """GPU-seconds per group for the window of effective dates [start, end], as recorded by `as_of`."""
    unknown = set(groupings) - set(GROUPINGS)
    if unknown or not groupings:
        raise ValueError(f"unknown or missing groupings: {sorted(unknown) or groupings}")
    window = {"from": start_of_day(start), "to": end_of(end), "as_of": as_of}
    sums: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    if "user" in groupings:
        for key, seconds in _charges_by_user(groupings, window, scope):
            sums[key]["used"] += seconds
        # Refunds and adjustments by hand are typed in by staff against an allocation, not a job: they are nobody's
        # usage, but they are usage, so they get a row of their own and the totals still equal the ledger's. Only
        # reconciliation's charges and refunds are its jobs' (their job charges, above).
        others = [name for name in groupings if name != "user"]
        for key, _, seconds in _entry_sums(others, window, scope, types=list(USAGE_TYPES), by_hand=True):
            values = dict(zip(others, key, strict=True))
            values["user"] = MANUAL_ADJUSTMENTS
            sums[tuple(values[name] for name in groupings)]["used"] -= seconds
    else:
        # Usage is most of the entries on allocation accounts: rather than join each to its transaction for its
        # type, take every allocation's net movement (no join), then the few awards and endings by type; what
        # is left of the net movement is usage. Allocation accounts hold no other kind of movement.
        for key, seconds in _net_movements(groupings, window, scope):
            sums[key]["net"] += seconds
        for key, type_, seconds in _entry_sums(groupings, window, scope, types=list(_NOT_USAGE)):
            measure, sign = _NOT_USAGE[type_]
            sums[key][measure] += sign * seconds
        for values in sums.values():
            values["used"] = values["awarded"] - values["returned"] - values["forfeited"] - values.pop("net")
    measures = measures_for(groupings)
    labels = _Labels(groupings, sums)
    rows = sorted(
        ((labels.of(key), {measure: values.get(measure, 0) for measure in measures}) for key, values in sums.items()),
        key=lambda row: tuple(label.casefold() for label in row[0]),
    )
    return TotalsReport(groupings=list(groupings), measures=measures, rows=rows)


# The movements on an allocation account that are not usage (charges, refunds and adjustments), and how each
# counts: (measure, sign applied to the entry's amount).
_NOT_USAGE = {
    Type.COMMIT: ("awarded", 1),
    Type.EXPIRE: ("returned", -1),
    Type.REVOKE: ("returned", -1),
    Type.FORFEIT: ("forfeited", -1),
}


def _expressions(groupings: list[str], *, allocation: str, moment: str) -> dict[str, object]:
    """The SQL expression of each grouping, from a model that reaches an allocation through `allocation`."""
    paths = {
        "programme": F(f"{allocation}__pool__programme"),
        "pool": F(f"{allocation}__pool"),
        "system": F(f"{allocation}__pool__system"),
        "allocation": F(allocation),
        "organisation": F(f"{allocation}__holder__organisation"),
        "user": F("job_record__user"),
        "month": TruncMonth(moment),
        "week": TruncWeek(moment),
    }
    return {f"group_{name}": paths[name] for name in groupings}


def _allocation_entries(window, scope: ReportScope):
    entries = LedgerEntry.objects.filter(
        account__kind=LedgerAccount.Kind.ALLOCATION,
        effective_at__gte=window["from"],
        effective_at__lte=window["to"],
        recorded_at__lte=window["as_of"],
    )
    if scope.pool_ids is not None:
        entries = entries.filter(account__allocation__pool__in=scope.pool_ids)
    return entries


def _net_movements(groupings, window, scope: ReportScope) -> Iterator[tuple[tuple, int]]:
    """(group key, summed amount) over every entry on allocation accounts."""
    expressions = _expressions(groupings, allocation="account__allocation", moment="effective_at")
    rows = (
        _allocation_entries(window, scope)
        .annotate(**expressions)
        .values(*expressions)
        .annotate(total=Sum("amount"))
        .order_by()
        .values_list(*expressions, "total")
    )
    for *key, total in rows:
        yield tuple(key), total


def _entry_sums(groupings, window, scope: ReportScope, types, by_hand=False) -> Iterator[tuple[tuple, str, int]]:
    """(group key, transaction type, summed amount) over the entries on allocation accounts of these types (with
    `by_hand`, of those not made by a reconciliation run)."""
    entries = _allocation_entries(window, scope).filter(transaction__type__in=types)
    if by_hand:
        entries = entries.exclude(transaction__cause_type=RECONCILIATION_CAUSE)
    expressions = _expressions(groupings, allocation="account__allocation", moment="effective_at")
    rows = (
        entries.annotate(**expressions)
        .values(*expressions, "transaction__type")
        .annotate(total=Sum("amount"))
        .order_by()
        .values_list(*expressions, "transaction__type", "total")
    )
    for *key, type_, total in rows:
        yield tuple(key), type_, total


def _charges_by_user(groupings, window, scope: ReportScope) -> Iterator[tuple[tuple, int]]:
    charges = JobCharge.objects.filter(
        transaction__effective_at__gte=window["from"],
        transaction__effective_at__lte=window["to"],
        transaction__recorded_at__lte=window["as_of"],
    )
    if scope.pool_ids is not None:
        charges = charges.filter(job_record__allocation__pool__in=scope.pool_ids)
    expressions = _expressions(groupings, allocation="job_record__allocation", moment="transaction__effective_at")
    rows = (
        charges.annotate(**expressions)
        .values(*expressions)
        .annotate(total=Sum("seconds"))
        .order_by()
        .values_list(*expressions, "total")
    )
    for *key, total in rows:
        yield tuple(key), total


class _Labels:
    """Turns the ids and moments a grouped query returns into what a reader recognises, in a few lookups."""

    def __init__(self, groupings: list[str], sums: dict[tuple, dict]):
        self.groupings = groupings
        ids = defaultdict(set)
        for key in sums:
            for name, value in zip(groupings, key, strict=True):
                ids[name].add(value)
        self.names = {
            "programme": dict(Programme.objects.filter(pk__in=ids["programme"]).values_list("pk", "name")),
            "pool": dict(FundPool.objects.filter(pk__in=ids["pool"]).values_list("pk", "name")),
            "system": dict(System.objects.filter(pk__in=ids["system"]).values_list("pk", "name")),
            "allocation": dict(
                Allocation.objects.filter(pk__in=ids["allocation"]).values_list("pk", "scheduler_account")
            ),
        }

    def of(self, key: tuple) -> tuple[str, ...]:
        return tuple(self.label(name, value) for name, value in zip(self.groupings, key, strict=True))

    def label(self, name: str, value) -> str:
        if name in self.names:
            return self.names[name].get(value, NOT_GIVEN)
        if name == "month":
            return f"{value:%Y-%m}"
        if name == "week":
            return (value.date() if isinstance(value, datetime) else value).isoformat()
        return value or NOT_GIVEN


# The raw export ------------------------------------------------------------------------------------------


def allocations_in_scope(scope: ReportScope) -> list[int]:
    allocations = Allocation.objects.order_by("pk")
    if scope.pool_ids is not None:
        allocations = allocations.filter(pool__in=scope.pool_ids)
    return list(allocations.values_list("pk", flat=True))


def _runs_recorded_while_under_way(as_of: datetime) -> list[ReconciliationRun]:
    """Reconciliation runs under way at `as_of` whose ledger transactions had been recorded by then.

    Every charge transaction of a run is recorded at one moment between the run's start and finish, so a run
    finished by `as_of` counts whole and one started after it not at all; only a run under way needs its
    transactions read. The runs are few, the charges millions.
    """
    return [
        run
        for run in ReconciliationRun.objects.filter(started_at__lte=as_of, finished_at__gt=as_of)
        if LedgerTransaction.objects.filter(
            cause_type=RECONCILIATION_CAUSE, cause_id=str(run.pk), recorded_at__lte=as_of
        ).exists()
    ]


def _charges_recorded_by(as_of: datetime, under_way: list[ReconciliationRun]) -> Q:
    """Job charges whose ledger transactions had been recorded by `as_of`, found through their runs, which spares
    the raw export a lookup of a transaction per job."""
    return Q(run__finished_at__lte=as_of) | Q(run__in=under_way)


def _reconciled_through(as_of: datetime, under_way: list[ReconciliationRun]) -> dict[int, int]:
    """Per system, the highest change number its reconciliation had charged by `as_of` (see below)."""
    through = dict(
        ReconciliationRun.objects.filter(finished_at__lte=as_of)
        .values("system")
        .annotate(seq=Max("to_seq"))
        .values_list("system", "seq")
    )
    for run in under_way:
        through[run.system_id] = max(through.get(run.system_id, 0), run.to_seq)
    return through


def job_records_charged(*, allocation_ids: list[int], start: date, end: date, as_of: datetime):
    """Job records of these allocations that started in [start, end], each with what the ledger had charged for
    it by `as_of` (None if nothing: the caller leaves those rows out, so the rows, like the figures, are the ones
    the ledger knew then), in (allocation, start) order, which the (allocation, start) index gives.

    Reconciliation guarantees that once a run has charged a system's records up to change number N, each matched
    record numbered N or below has been charged exactly its `gpu_seconds`. So a record that has not changed since
    the last run recorded by `as_of` was charged its `gpu_seconds` then, read from the row itself; only a record
    changed since (a running job that ended, a late record) has its charges summed, from runs recorded by
    `as_of`. A million rows then cost a million index reads, not a million sums over the job charges.
    """
    under_way = _runs_recorded_while_under_way(as_of)
    exact = Subquery(
        JobCharge.objects.filter(_charges_recorded_by(as_of, under_way), job_record=OuterRef("pk"))
        .order_by()
        .values("job_record")
        .annotate(total=Sum("seconds"))
        .values("total"),
        output_field=BigIntegerField(),
    )
    through = _reconciled_through(as_of, under_way)
    unchanged_since = reduce(
        operator.or_, (Q(system=system, changed_seq__lte=seq) for system, seq in through.items()), Q(pk__in=[])
    )
    charged = Case(When(unchanged_since, then=F("gpu_seconds")), default=exact, output_field=BigIntegerField())
    return (
        JobRecord.objects.filter(allocation__in=allocation_ids, start__gte=start_of_day(start), start__lte=end_of(end))
        .annotate(charged_gpu_seconds=charged)
        .order_by("allocation_id", "start", "pk")
        .values_list(
            # Through the allocation (its pool's system is the record's): joined once per allocation, not per row.
            "allocation__pool__system__slug",
            "allocation__pool__programme__name",
            "allocation__pool__name",
            "allocation__scheduler_account",
            "allocation_id",
            "user",
            "job_id",
            "job_id_raw",
            "state",
            "start",
            "end",
            "gpus",
            "elapsed_seconds",
            "charged_gpu_seconds",
        )
    )
