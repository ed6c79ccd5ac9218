"""Calibrated scores: each reviewer's scores standardised against their own mean and spread in the call."""

import pytest

from programmes import proposals as services
from programmes.models import Proposal
from programmes.selectors import calibrate, call_ranking, pool_lines
from tests.factories import HOUR, UserFactory, make_proposal

HARSH, LENIENT = 1, 2


def test_a_harsh_reviewers_best_score_outranks_a_lenient_reviewers_worst_though_its_raw_mean_is_lower():
    scores = [
        (HARSH, "x", 3), (HARSH, "p2", 1), (HARSH, "p3", 1),
        (LENIENT, "y", 4), (LENIENT, "p5", 5), (LENIENT, "p6", 5),
    ]  # fmt: skip
    figures = calibrate(scores)
    raw_x, calibrated_x, _ = figures["x"]
    raw_y, calibrated_y, _ = figures["y"]
    assert raw_x < raw_y
    assert calibrated_x > calibrated_y
    assert calibrated_x == pytest.approx(1.414, abs=0.001)


def test_a_reviewer_who_gives_every_proposal_the_same_score_moves_no_calibrated_score():
    figures = calibrate([(HARSH, "a", 5), (HARSH, "b", 5), (LENIENT, "a", 2), (LENIENT, "b", 4)])
    assert figures["a"][1] == pytest.approx(-0.5)  # (0 from the flat reviewer + -1 from the other) / 2
    assert figures["b"][1] == pytest.approx(0.5)


def test_a_single_score_has_no_spread_and_counts_as_average():
    assert calibrate([(HARSH, "a", 2)])["a"] == (2, 0.0, 1)


@pytest.mark.django_db
def test_the_decision_page_ranking_differs_from_the_raw_mean_when_one_reviewer_is_harsh(call, pool, system, director):
    harsh, lenient = UserFactory(), UserFactory()

    def reviewed(reviewer, value):
        proposal = make_proposal(call=call, pi=UserFactory(), system=system, state=Proposal.State.IN_REVIEW)
        assignment = services.assign_reviewer(proposal=proposal, email=reviewer.email, actor=director)
        services.declare_conflict(assignment=assignment, actor=reviewer, has_conflict=False)
        services.submit_review(
            assignment=assignment, actor=reviewer, scores={c.pk: (value, "ok") for c in call.criteria.all()}
        )
        return proposal

    best_of_harsh = reviewed(harsh, 3)
    reviewed(harsh, 1)
    reviewed(harsh, 1)
    worst_of_lenient = reviewed(lenient, 4)
    reviewed(lenient, 5)
    reviewed(lenient, 5)
    rows = call_ranking(call, pool=pool)
    order = [row.proposal.pk for row in rows]
    assert order.index(best_of_harsh.pk) < order.index(worst_of_lenient.pk)
    by_pk = {row.proposal.pk: row for row in rows}
    assert by_pk[best_of_harsh.pk].raw_mean < by_pk[worst_of_lenient.pk].raw_mean
    # Each asks for 1,000 GPU-hours: two fit in 2,500, the third crosses the cut-off line.
    [line] = pool_lines(rows, [pool], {pool.pk: 2500 * HOUR})
    assert line.cut_off_rank == 3
