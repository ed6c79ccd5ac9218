"""Reads for reports: GPU-seconds awarded, used, returned and forfeited, grouped in SQL; job records for the raw
export. Every read takes `as_of` (entries recorded by then) and a scope (the pools the requester may see).

Measures come from the entries on allocation accounts, by their transaction's type; the window and the time
buckets (month, week) use the ledger's `effective_at`. Grouping by user goes through the job charges (each job
record's part of a usage transaction), because the ledger knows allocations, not the people in them.
"""

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime

from django.db.models import F, Sum
from django.db.models.functions import TruncMonth, TruncWeek

from allocations.models import Allocation, JobCharge, JobRecord, LedgerAccount, LedgerEntry, LedgerTransaction
from allocations.selectors import end_of, start_of_day
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
        # Adjustments are typed in by staff against an allocation, not a job: they are nobody's usage, but they
        # are usage, so they get a row of their own and the totals still equal the ledger's.
        others = [name for name in groupings if name != "user"]
        for key, _, seconds in _entry_sums(others, window, scope, types=[Type.ADJUST]):
            values = dict(zip(others, key, strict=True))
            values["user"] = MANUAL_ADJUSTMENTS
            sums[tuple(values[name] for name in groupings)]["used"] -= seconds
    else:
        for key, type_, seconds in _entry_sums(groupings, window, scope):
            measure, sign = _MEASURE_OF_TYPE[type_]
            sums[key][measure] += sign * seconds
    measures = measures_for(groupings)
    labels = _Labels(groupings, sums)
    rows = sorted(
        ((labels.of(key), {measure: values.get(measure, 0) for measure in measures}) for key, values in sums.items()),
        key=lambda row: tuple(label.casefold() for label in row[0]),
    )
    return TotalsReport(groupings=list(groupings), measures=measures, rows=rows)


# How each transaction type on an allocation account counts: (measure, sign applied to the entry's amount).
_MEASURE_OF_TYPE = {
    Type.COMMIT: ("awarded", 1),
    Type.CHARGE: ("used", -1),
    Type.REFUND: ("used", -1),
    Type.ADJUST: ("used", -1),
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


def _entry_sums(groupings, window, scope: ReportScope, types=None) -> Iterator[tuple[tuple, str, int]]:
    """(group key, transaction type, summed amount) over the entries on allocation accounts."""
    entries = LedgerEntry.objects.filter(
        account__kind=LedgerAccount.Kind.ALLOCATION,
        effective_at__gte=window["from"],
        effective_at__lte=window["to"],
        recorded_at__lte=window["as_of"],
    )
    if types is not None:
        entries = entries.filter(transaction__type__in=types)
    if scope.pool_ids is not None:
        entries = entries.filter(account__allocation__pool__in=scope.pool_ids)
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

JOB_COLUMNS = [
    "system",
    "programme",
    "pool",
    "scheduler_account",
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
]


def allocations_in_scope(scope: ReportScope) -> list[int]:
    allocations = Allocation.objects.order_by("pk")
    if scope.pool_ids is not None:
        allocations = allocations.filter(pool__in=scope.pool_ids)
    return list(allocations.values_list("pk", flat=True))


def job_records_charged(*, allocation_ids: list[int], start: date, end: date, as_of: datetime):
    """Job records of these allocations that started in [start, end] and had been charged by `as_of`, each with
    what the ledger had charged for it by then, in (allocation, start) order.

    One grouped join (records → their job charges → the charges' transactions, filtered by `recorded_at`): a
    record with no charge recorded by `as_of` has no row, so the rows, like the figures, are those the ledger
    knew then. The (allocation, start) index finds the records; the job charges' index on the record joins them.
    """
    return (
        JobRecord.objects.filter(
            allocation__in=allocation_ids,
            start__gte=start_of_day(start),
            start__lte=end_of(end),
            charges__transaction__recorded_at__lte=as_of,
        )
        .values("pk")
        .annotate(charged_gpu_seconds=Sum("charges__seconds"))
        .order_by("allocation_id", "start", "pk")
        .values_list(
            "system__slug",
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
