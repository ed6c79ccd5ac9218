"""Reads of proposals that take more than one query: the director's queue and a call's calibrated ranking.

Both issue a fixed number of queries whatever the number of proposals (tests assert it with 10 and 500).
"""

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Avg, Case, Count, F, Prefetch, Q, QuerySet, Value, When

from .models import Call, Proposal, ResourceRequest, Score

QUEUE_SORTS = {
    "score": "-raw_mean",
    "-score": "raw_mean",
    "submitted": "submitted_at",
    "-submitted": "-submitted_at",
    "reference": "reference",
}


def director_queue(user, *, call=None, state=None, system=None, sort="-submitted") -> QuerySet:
    """The submitted proposals a user directs or assesses, with their raw mean score, filtered and sorted."""
    proposals = Proposal.objects.visible_to(user)
    # Scores are for those who decide: admins and the call's directors, not assessors.
    scored, shows_scores = Q(review_assignments__state="submitted"), Value(True)
    if not user.is_staff:
        # Visible is wider than the queue: a director or assessor may also review, or lead a proposal.
        managed = Call.objects.managed_by(user)
        assessed = ResourceRequest.objects.filter(system__assessors=user).values("proposal_id")
        proposals = proposals.filter(Q(call__in=managed) | Q(pk__in=assessed))
        scored &= Q(call__in=managed)
        shows_scores = Case(When(call__in=managed, then=Value(True)), default=Value(False))
    proposals = (
        # Not the user's own proposals: nobody decides or assesses their own.
        proposals.filter(submitted_at__isnull=False)
        .exclude(pk__in=Proposal.objects.editable_by(user).values("pk"))
        .select_related("call", "pi")
        .prefetch_related(Prefetch("resource_requests", queryset=ResourceRequest.objects.select_related("system")))
        .annotate(
            raw_mean=Avg("review_assignments__scores__value", filter=scored),
            review_count=Count("review_assignments", filter=scored, distinct=True),
            shows_scores=shows_scores,
        )
    )
    if call is not None:
        proposals = proposals.filter(call=call)
    if state:
        proposals = proposals.filter(state=state)
    if system is not None:
        proposals = proposals.filter(pk__in=ResourceRequest.objects.filter(system=system).values("proposal_id"))
    order = QUEUE_SORTS.get(sort, "-submitted_at")
    nulls_last = order.lstrip("-") == "raw_mean"
    expression = F(order.lstrip("-"))
    expression = expression.desc(nulls_last=True) if order.startswith("-") else expression.asc(nulls_last=nulls_last)
    return proposals.order_by(expression, "pk")


@dataclass
class RankedProposal:
    proposal: Proposal
    requested: int  # GPU-seconds asked for on the pool's system
    raw_mean: float | None
    calibrated: float | None
    review_count: int
    running_total: int = 0
    requested_by_system: dict = field(default_factory=dict)  # system id → GPU-seconds asked for


@dataclass(frozen=True)
class PoolLine:
    """One of a call's pools on its decision page: what is left in it, what the proposals still in review
    ask of its system, and the rank of the first that no longer fits (None when they all do)."""

    pool: object
    available: int
    requested: int
    cut_off_rank: int | None


def calibrate(scores: list[tuple[int, int, int]]) -> dict[int, tuple[float, float, int]]:
    """From (reviewer, proposal, score) triples, each proposal's (raw mean, calibrated score, reviewers).

    Each score is standardised against its reviewer's own scores across the call: z = (score − mean) / spread,
    so a harsh reviewer's 3 counts for more than a lenient one's. A reviewer who gave one score, or the same
    score every time, tells proposals apart not at all: their z-scores are 0. The calibrated score of a
    proposal is the mean of its scores' z-scores.
    """
    by_reviewer = defaultdict(list)
    for reviewer, _, value in scores:
        by_reviewer[reviewer].append(value)
    spread = {}
    for reviewer, values in by_reviewer.items():
        mean = statistics.fmean(values)
        deviation = statistics.pstdev(values) if len(values) > 1 else 0.0
        spread[reviewer] = (mean, deviation)
    raw, standard, reviewers = defaultdict(list), defaultdict(list), defaultdict(set)
    for reviewer, proposal, value in scores:
        mean, deviation = spread[reviewer]
        raw[proposal].append(value)
        standard[proposal].append((value - mean) / deviation if deviation else 0.0)
        reviewers[proposal].add(reviewer)
    return {
        proposal: (
            statistics.fmean(raw[proposal]),
            statistics.fmean(standard[proposal]),
            len(reviewers[proposal]),
        )
        for proposal in raw
    }


def call_ranking(call: Call, *, pool) -> list[RankedProposal]:
    """The call's proposals in review (and those decided), best calibrated score first, with the running total
    of hours asked for on the pool's system.

    Each row also carries what it asks for on every system (`requested_by_system`), for `pool_lines`, which
    says where each pool's cut-off line falls."""
    # Only the columns the page shows, and the hours asked for per system read as bare tuples: the page
    # lists every proposal of the call, so per-row objects are what its time goes on.
    states = [
        Proposal.State.IN_REVIEW,
        Proposal.State.AWARDED,
        Proposal.State.ACCEPTED,
        Proposal.State.REJECTED,
    ]
    proposals = list(
        Proposal.objects.filter(call=call, state__in=states).only("pk", "reference", "title", "state", "submitted_at")
    )
    requested = defaultdict(dict)
    for proposal_id, system_id, seconds in (
        ResourceRequest.objects.filter(proposal__call=call, proposal__state__in=states)
        .annotate(total=F("runs") * F("seconds_per_run"))
        .values_list("proposal_id", "system_id", "total")
    ):
        requested[proposal_id][system_id] = seconds
    triples = list(
        Score.objects.filter(assignment__proposal__call=call, assignment__state="submitted").values_list(
            "assignment__reviewer_id", "assignment__proposal_id", "value"
        )
    )
    figures = calibrate(triples)
    rows = []
    for proposal in proposals:
        raw_mean, calibrated, count = figures.get(proposal.pk, (None, None, 0))
        asks = requested[proposal.pk]
        rows.append(
            RankedProposal(proposal, asks.get(pool.system_id, 0), raw_mean, calibrated, count, requested_by_system=asks)
        )
    # Unreviewed proposals go last; ties go to the earlier submission.
    rows.sort(
        key=lambda row: (
            row.calibrated is None,
            -(row.calibrated or 0),
            row.proposal.submitted_at or 0,
            row.proposal.pk,
        )
    )
    total = 0
    for row in rows:
        if row.proposal.state in (Proposal.State.IN_REVIEW,):
            total += row.requested
        row.running_total = total
    return rows


def pool_lines(rows: list[RankedProposal], pools, available: dict[int, int]) -> list[PoolLine]:
    """For each pool, the running total of the ranked proposals still in review on its system against its
    available hours, and the rank of the first proposal that no longer fits (no queries)."""
    lines = []
    for pool in pools:
        total, cut_off = 0, None
        for rank, row in enumerate(rows, start=1):
            if row.proposal.state != Proposal.State.IN_REVIEW:
                continue
            total += row.requested_by_system.get(pool.system_id, 0)
            if cut_off is None and total > available[pool.pk]:
                cut_off = rank
        lines.append(PoolLine(pool, available[pool.pk], total, cut_off))
    return lines
