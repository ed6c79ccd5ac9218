"""Reads for the directors' programme dashboard and the PI's allocation page: each pool's figures, burn-down and
run-out forecast, awards and proposals per call, an allocation's usage over time.

Every figure comes from ledger entries grouped by the day they take effect (in the portal's time zone), so the
cost of a dashboard follows the number of pools, calls and days shown, never the number of entries: each
function here is a fixed number of grouped queries, whatever the history.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db.models import BigIntegerField, Count, ExpressionWrapper, F, Q, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from programmes.models import Call, Decision, FundPool, Programme, Proposal, ResourceRequest

from .ledger import USAGE_TYPES
from .models import Allocation, JobRecord, LedgerEntry, LedgerTransaction, ThresholdNotice
from .reports.selectors import MANUAL_ADJUSTMENTS
from .selectors import PoolFigures, figures_for_pools
from .usage.reconcile import RECONCILIATION_CAUSE
from .usage.thresholds import THRESHOLDS, percent_used

Type = LedgerTransaction.Type

# The forecast's rule, stated on the page: consumption over the last FORECAST_WINDOW_DAYS days (today included),
# as a daily rate, projected forward.
FORECAST_WINDOW_DAYS = 28
# Spans up to this many days are shown day by day; longer ones week by week, so a table stays readable.
DAILY_UP_TO_DAYS = 92
CAPACITY_TYPES = (Type.DEPOSIT, Type.WITHDRAW, Type.TRANSFER)
AWARD_OUTCOMES = (Decision.Outcome.AWARD_FULL, Decision.Outcome.AWARD_PART)


def _effective_day():
    return TruncDate("effective_at", tzinfo=timezone.get_current_timezone())


@dataclass(frozen=True)
class Bucket:
    """A run of days, first to last inclusive: one point of a chart and one row of its table."""

    first: date
    last: date

    @property
    def is_one_day(self) -> bool:
        return self.first == self.last


def buckets_between(first: date, last: date) -> list[Bucket]:
    """Days from `first` to `last`, one bucket per day, or per seven days when the span is long."""
    if last < first:
        return []
    step = 1 if (last - first).days < DAILY_UP_TO_DAYS else 7
    buckets, start = [], first
    while start <= last:
        buckets.append(Bucket(start, min(start + timedelta(days=step - 1), last)))
        start += timedelta(days=step)
    return buckets


def _sum_per_bucket(changes: dict[date, int], buckets: list[Bucket]) -> list[int]:
    totals = [0] * len(buckets)
    index = 0
    for day in sorted(changes):
        while index < len(buckets) and buckets[index].last < day:
            index += 1
        if index == len(buckets):
            break
        if day >= buckets[index].first:
            totals[index] += changes[day]
    return totals


def _running_totals(changes: dict[date, int], buckets: list[Bucket]) -> list[int]:
    """The sum of every change up to the end of each bucket, including those before the first."""
    opening = sum(amount for day, amount in changes.items() if buckets and day < buckets[0].first)
    running, totals = opening, []
    for amount in _sum_per_bucket(changes, buckets):
        running += amount
        totals.append(running)
    return totals


# Pools: burn-down and forecast ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BurnDownPoint:
    """A pool's hours at the end of `bucket.last`, in GPU-seconds: remaining = capacity − consumed."""

    bucket: Bucket
    capacity: int
    consumed: int

    @property
    def remaining(self) -> int:
        return self.capacity - self.consumed


@dataclass(frozen=True)
class Forecast:
    """When a pool runs out if it keeps being consumed at the rate of the last FORECAST_WINDOW_DAYS days.

    `outcome` is one of: "no usage" (nothing consumed yet), "runs out" (on `runs_out_on`, on or before the
    pool closes), "lasts" (the pool closes first, with about `left_at_close` GPU-seconds unused), "closed"
    (the pool's window is over) or "not open" (its window has not begun).
    """

    outcome: str
    today: date
    window_first: date
    rate_window_consumed: int  # GPU-seconds consumed in the window
    remaining: int
    closes_on: date
    runs_out_on: date | None = None
    left_at_close: int | None = None

    @property
    def seconds_per_day(self) -> int:
        return self.rate_window_consumed // FORECAST_WINDOW_DAYS


def forecast_run_out(
    *,
    remaining: int,
    consumed_ever: int,
    consumed_in_window: int,
    today: date,
    opens_on: date,
    closes_on: date,
) -> Forecast:
    """Project the consumption of the last FORECAST_WINDOW_DAYS days forward from today (integer arithmetic:
    the run-out date is the first day on which the projected remaining reaches zero)."""
    common = {
        "today": today,
        "window_first": today - timedelta(days=FORECAST_WINDOW_DAYS - 1),
        "rate_window_consumed": consumed_in_window,
        "remaining": remaining,
        "closes_on": closes_on,
    }
    if today < opens_on:
        return Forecast("not open", **common)
    if today > closes_on:
        return Forecast("closed", left_at_close=remaining, **common)
    if consumed_ever <= 0:
        return Forecast("no usage", **common)
    if remaining <= 0:
        return Forecast("runs out", runs_out_on=today, **common)
    if consumed_in_window <= 0:
        return Forecast("lasts", left_at_close=remaining, **common)
    days_to_empty = -(-remaining * FORECAST_WINDOW_DAYS // consumed_in_window)  # rounded up
    days_left = (closes_on - today).days
    # Compared in days, not as dates: a big pool used a few GPU-seconds a day empties past the last date there is.
    if days_to_empty > days_left:
        left = remaining - consumed_in_window * days_left // FORECAST_WINDOW_DAYS
        return Forecast("lasts", left_at_close=left, **common)
    return Forecast("runs out", runs_out_on=today + timedelta(days=days_to_empty), **common)


@dataclass(frozen=True)
class PoolReport:
    pool: FundPool
    figures: PoolFigures
    burn_down: list[BurnDownPoint]
    forecast: Forecast

    @property
    def chart_id(self) -> str:
        return f"burn-down-{self.pool.pk}"


def pool_reports(pools: list[FundPool], *, today: date | None = None) -> list[PoolReport]:
    """Figures, burn-down (from each pool's first day to today, or its last day if that came first) and
    forecast for many pools, in four grouped queries."""
    today = today or timezone.localdate()
    figures = figures_for_pools(pools)
    pool_ids = [pool.pk for pool in pools]
    capacity_changes: dict[int, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    consumption: dict[int, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    rows = (
        LedgerEntry.objects.filter(account__pool__in=pool_ids, transaction__type__in=CAPACITY_TYPES)
        .annotate(day=_effective_day())
        .values_list("account__pool", "day")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    for pool_id, day, total in rows:
        capacity_changes[pool_id][day] += total
    rows = (
        LedgerEntry.objects.filter(account__allocation__pool__in=pool_ids, transaction__type__in=USAGE_TYPES)
        .annotate(day=_effective_day())
        .values_list("account__allocation__pool", "day")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    for pool_id, day, total in rows:
        # Usage leaves the allocation's account, so its entries there are negative.
        consumption[pool_id][day] -= total

    reports = []
    window_first = today - timedelta(days=FORECAST_WINDOW_DAYS - 1)
    for pool in pools:
        buckets = buckets_between(pool.valid_from, min(today, pool.valid_until))
        capacity = _running_totals(capacity_changes[pool.pk], buckets)
        consumed = _running_totals(consumption[pool.pk], buckets)
        pool_figures = figures[pool.pk]
        days = consumption[pool.pk]
        forecast = forecast_run_out(
            remaining=pool_figures.capacity - pool_figures.consumed,
            consumed_ever=sum(days.values()),
            consumed_in_window=sum(amount for day, amount in days.items() if window_first <= day <= today),
            today=today,
            opens_on=pool.valid_from,
            closes_on=pool.valid_until,
        )
        points = [BurnDownPoint(*values) for values in zip(buckets, capacity, consumed, strict=True)]
        reports.append(PoolReport(pool=pool, figures=pool_figures, burn_down=points, forecast=forecast))
    return reports


# Calls: awards and proposals by state -----------------------------------------------------------------------


@dataclass
class CallReport:
    """A call's proposals (drafts are their authors' own and are not counted) and the awards made from it."""

    call: Call
    by_state: dict[str, int] = field(default_factory=dict)
    requested: int = 0  # GPU-seconds asked for by every submitted proposal
    awards: int = 0  # awards made (in full or in part), including any the PI later declined
    requested_by_awarded: int = 0  # GPU-seconds those awarded proposals asked for
    awarded: int = 0  # GPU-seconds awarded

    @property
    def submitted(self) -> int:
        return sum(self.by_state.values())


def call_reports(programme: Programme) -> list[CallReport]:
    """Per call of the programme: proposals per state, hours requested, awards made and hours awarded."""
    reports = {call.pk: CallReport(call) for call in Call.objects.filter(programme=programme)}
    # Once submitted: a draft withdrawn before it was ever submitted stays its team's (as ProposalQuerySet says).
    submitted = Q(submitted_at__isnull=False)
    for call_id, state, count in (
        Proposal.objects.filter(submitted, call__programme=programme)
        .values_list("call", "state")
        .annotate(count=Count("pk"))
        .order_by()
    ):
        reports[call_id].by_state[state] = count
    seconds = ExpressionWrapper(F("runs") * F("seconds_per_run"), output_field=BigIntegerField())
    awarded = Q(proposal__decision__outcome__in=AWARD_OUTCOMES)
    for call_id, requested, requested_by_awarded in (
        ResourceRequest.objects.filter(proposal__call__programme=programme, proposal__submitted_at__isnull=False)
        .values_list("proposal__call")
        .annotate(requested=Sum(seconds), by_awarded=Sum(seconds, filter=awarded))
        .order_by()
    ):
        reports[call_id].requested = requested or 0
        reports[call_id].requested_by_awarded = requested_by_awarded or 0
    for call_id, awards in (
        Decision.objects.filter(proposal__call__programme=programme, outcome__in=AWARD_OUTCOMES)
        .values_list("proposal__call")
        .annotate(awards=Count("pk"))
        .order_by()
    ):
        reports[call_id].awards = awards
    # Hours awarded are the ledger's: what was committed to the calls' allocations, less what revocation (or a
    # declined award) gave back.
    for call_id, seconds_awarded in (
        LedgerEntry.objects.filter(
            account__allocation__proposal__call__programme=programme,
            transaction__type__in=(Type.COMMIT, Type.REVOKE),
        )
        .values_list("account__allocation__proposal__call")
        .annotate(total=Sum("amount"))
        .order_by()
    ):
        reports[call_id].awarded = seconds_awarded or 0
    return list(reports.values())


def states_in_use(calls: list[CallReport]) -> list[tuple[str, str]]:
    """The proposal states (value, label) any call has a proposal in, in the state machine's order."""
    used = {state for report in calls for state in report.by_state}
    return [(value, label) for value, label in Proposal.State.choices if value in used]


@dataclass(frozen=True)
class ProgrammeDashboard:
    programme: Programme
    today: date
    pools: list[PoolReport]
    calls: list[CallReport]

    @property
    def states(self) -> list[tuple[str, str]]:
        return states_in_use(self.calls)

    @property
    def state_rows(self) -> list[dict]:
        """Per call, its count of proposals in each of `states`, in that order (a table's rows)."""
        states = [value for value, _ in self.states]
        return [
            {"call": report.call, "counts": [report.by_state.get(state, 0) for state in states]}
            for report in self.calls
        ]


def programme_dashboard(programme: Programme, *, today: date | None = None) -> ProgrammeDashboard:
    today = today or timezone.localdate()
    pools = list(programme.pools.select_related("system").order_by("valid_from", "name"))
    return ProgrammeDashboard(
        programme=programme,
        today=today,
        pools=pool_reports(pools, today=today),
        calls=call_reports(programme),
    )


# Allocations: usage over time ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsagePoint:
    """GPU-seconds used in the bucket (charges net of refunds and adjustments) and up to its end."""

    bucket: Bucket
    used: int
    cumulative: int


@dataclass(frozen=True)
class ThresholdPassed:
    """A threshold of percent used that an allocation passed, and when its team was emailed (None: not emailed)."""

    percent: int
    emailed_at: datetime | None


@dataclass(frozen=True)
class AllocationReport:
    allocation: Allocation
    today: date
    committed: int
    used: int
    remaining: int  # the allocation account's balance: committed − used − returned − forfeited
    usage: list[UsagePoint]
    thresholds: list[ThresholdNotice]
    returned: int = 0  # unused hours given back to the pool at its end (expiry or revocation)
    forfeited: int = 0  # unused hours forfeited at its end, by its pool's policy
    used_by_hand: int = 0  # of `used`, what staff refunded or adjusted by hand: no job's, so no member's

    @property
    def has_started(self) -> bool:
        return self.today >= self.allocation.start_date

    @property
    def days_left(self) -> int:
        """Days from today (or the start, if later) to the end date, both counted; 0 once it has ended."""
        if self.allocation.has_ended or self.today > self.allocation.end_date:
            return 0
        return (self.allocation.end_date - max(self.today, self.allocation.start_date)).days + 1

    @property
    def percent_used(self) -> int:
        """Never below 0: usage below zero is none used, as for the scheduler limits."""
        return percent_used(max(0, self.used), self.committed)

    @property
    def given_back_twice(self) -> int:
        """Usage below zero: hours given back both by hand and by reconciliation (ledger.record_usage_in_bulk)."""
        return max(0, -self.used)

    @property
    def remaining_to_run(self) -> int:
        """The balance less what was given back twice, which is no time to run (the scheduler limits count usage
        below zero as none) and does not go back to the pool when the allocation ends."""
        return self.remaining - self.given_back_twice

    @property
    def thresholds_passed(self) -> list[ThresholdPassed]:
        """Each threshold its usage has passed, with its notice's time. Notices are sent only while an allocation is
        open, so usage charged as it ends passes thresholds without one; a notice stays once sent, even where
        refunds have since brought usage back under its threshold."""
        emailed = {notice.percent: notice.sent_at for notice in self.thresholds}
        passed = {threshold for threshold in THRESHOLDS if self.committed > 0 and self.percent_used >= threshold}
        return [ThresholdPassed(percent, emailed.get(percent)) for percent in sorted(passed | emailed.keys())]

    @property
    def chart_id(self) -> str:
        return f"usage-{self.allocation.pk}"


def allocation_report(allocation: Allocation, *, today: date | None = None) -> AllocationReport:
    """An allocation's figures and its usage per day (or week) from its start to today, in two queries.

    Today is its system's (`today_on`), as for its limit and its end: the page says it has ended when its jobs stop.
    """
    from allocations.usage.thresholds import today_on

    today = today or today_on(allocation.system)
    per_day: dict[date, int] = defaultdict(int)
    committed = balance = returned = forfeited = used_by_hand = 0
    rows = (
        LedgerEntry.objects.filter(account__allocation=allocation)
        .annotate(day=_effective_day())
        .values_list("transaction__type", "day", "transaction__cause_type")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    for type_, day, cause_type, total in rows:
        balance += total
        if type_ in USAGE_TYPES:
            per_day[day] -= total
            # Only a reconciliation run's charges and refunds are its jobs' (their job charges).
            if cause_type != RECONCILIATION_CAUSE:
                used_by_hand -= total
        elif type_ == Type.COMMIT:
            committed += total
        elif type_ in (Type.EXPIRE, Type.REVOKE):
            returned -= total
        elif type_ == Type.FORFEIT:
            forfeited -= total
    # The window, stretched to any usage charged before it opened or after it closed, so every hour shows.
    usage_days = [day for day, amount in per_day.items() if amount]
    first = min([allocation.start_date, *usage_days])
    last = max([min(today, allocation.end_date), *usage_days])
    buckets = buckets_between(first, last)
    used = _sum_per_bucket(per_day, buckets)
    cumulative = _running_totals(per_day, buckets)
    return AllocationReport(
        allocation=allocation,
        today=today,
        committed=committed,
        used=sum(per_day.values()),
        remaining=balance,
        usage=[UsagePoint(*values) for values in zip(buckets, used, cumulative, strict=True)],
        thresholds=list(ThresholdNotice.objects.filter(allocation=allocation).order_by("percent")),
        returned=returned,
        forfeited=forfeited,
        used_by_hand=used_by_hand,
    )


def usage_per_member(
    allocation: Allocation, *, usernames: list[str] | None = None, used_by_hand: int = 0
) -> list[dict]:
    """Per scheduler user (of `usernames` only, when given): job runs reported and GPU-seconds charged (the sum of
    their job charges), most used first. Runs not charged yet (reconciliation has not reached them, or they used no
    GPU) count with 0, as on the job list. Usage moved by hand (`used_by_hand`, refunds and adjustments by staff),
    when there is any, follows in a row of its own (`by_hand`, no jobs): it is nobody's, but it is usage, so the rows
    add up to the allocation's."""
    records = JobRecord.objects.filter(allocation=allocation)
    if usernames is not None:
        records = records.filter(user__in=usernames)
    rows = (
        records.values("user")
        .annotate(
            jobs=Count("pk", distinct=True),
            seconds=Coalesce(Sum("charges__seconds"), 0, output_field=BigIntegerField()),
        )
        .order_by()
    )
    members = sorted(rows, key=lambda row: (-row["seconds"], row["user"]))
    if used_by_hand:
        members.append({"user": MANUAL_ADJUSTMENTS, "jobs": None, "seconds": used_by_hand, "by_hand": True})
    return members
