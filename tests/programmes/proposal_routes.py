"""Expected statuses for the call and proposal pages, for every role.

The world: the applicant leads a draft, a proposal in review (with a PDF, assessed on the world's system and
assigned to the reviewer persona, who has declared no conflict on it), another in review to which the reviewer is
invited but has not yet declared (they may not read it), an awarded one and a submitted one; someone else leads
another submitted proposal, which the applicant tries by guessing its id (404, as if it did not exist).
"""

from datetime import date

from django.core.files.base import ContentFile
from django.urls import reverse

from allocations import awards, ledger
from programmes import proposals as services
from programmes.models import Proposal
from tests.factories import HOUR, CallFactory, FundPoolFactory, UserFactory, make_proposal
from tests.routes import FORBIDDEN, NOT_FOUND, OK, REDIRECT, UNAUTHORISED, Route, everyone, signed_in

CREATED = 201

State = Proposal.State


def _statuses(anonymous=REDIRECT, applicant=OK, reviewer=OK, assessor=OK, director=OK, admin=OK):
    return {
        "anonymous": anonymous,
        "applicant": applicant,
        "reviewer": reviewer,
        "assessor": assessor,
        "director": director,
        "admin": admin,
    }


def proposal_routes(world):
    users, system = world.users, world.system
    applicant, director = users["applicant"], users["director"]
    today = date.today()
    pool = FundPoolFactory(
        programme=world.programme,
        system=system,
        name="Proposal routes pool",
        valid_from=today.replace(month=1, day=1),
        valid_until=today.replace(year=today.year + 2),
    )
    ledger.deposit_to_pool(
        pool=pool,
        seconds=100_000 * HOUR,
        actor=None,
        reason="Budget",
        idempotency_key=f"proposal-routes-{pool.pk}",
    )
    call = CallFactory(programme=world.programme, pools=[pool], slug="routes-call")
    draft = make_proposal(call=call, pi=applicant, system=system)
    removable = make_proposal(call=call, pi=applicant, system=system)
    in_review = make_proposal(call=call, pi=applicant, system=system, state=State.IN_REVIEW)
    in_review.case_for_support_pdf.save("case.pdf", ContentFile(b"%PDF-1.4\n%routes\n"), save=True)
    withdrawable = make_proposal(call=call, pi=applicant, system=system, state=State.SUBMITTED)
    awarded = make_proposal(call=call, pi=applicant, system=system, state=State.IN_REVIEW)
    awards.award_proposal(
        proposal=awarded,
        parts=[awards.AwardPart(pool=pool, seconds=100 * HOUR, start=awarded.start_date, end=awarded.start_date)],
        rationale="Routes",
        actor=director,
    )
    others = make_proposal(call=call, pi=UserFactory(), system=system, state=State.SUBMITTED)
    assignment = services.assign_reviewer(proposal=in_review, email=users["reviewer"].email, actor=director)
    services.declare_conflict(assignment=assignment, actor=users["reviewer"], has_conflict=False)
    undeclared = make_proposal(call=call, pi=applicant, system=system, state=State.IN_REVIEW)
    invited = services.assign_reviewer(proposal=undeclared, email=users["reviewer"].email, actor=director)
    member = services.invite_member(proposal=draft, email="co.investigator@example.ac.uk", actor=applicant)

    def url(name, *args):
        return reverse(f"proposals:{name}", args=args)

    team_only = _statuses(reviewer=NOT_FOUND, assessor=NOT_FOUND, director=NOT_FOUND, admin=FORBIDDEN)
    team_redirect = {**team_only, "applicant": REDIRECT}
    directors = _statuses(applicant=FORBIDDEN, reviewer=FORBIDDEN, assessor=FORBIDDEN)
    guessed = _statuses(applicant=NOT_FOUND, reviewer=NOT_FOUND, assessor=FORBIDDEN)
    details = {"title": "Routes", "summary": "S", "research_field": "F", "keywords": "K"}

    routes = [
        Route("proposals:call-list", url("call-list"), everyone(OK)),
        Route("proposals:call-detail", url("call-detail", call.slug), everyone(OK)),
        Route("proposals:proposal-start", url("proposal-start", call.slug), signed_in(REDIRECT), method="post"),
        Route("proposals:proposal-list", url("proposal-list"), signed_in(OK)),
        Route("proposals:proposal-queue", url("proposal-queue"), {**directors, "assessor": OK}),
        Route("proposals:proposal-detail", url("proposal-detail", in_review.pk), _statuses()),
        Route("proposals:proposal-detail", url("proposal-detail", undeclared.pk), _statuses(reviewer=NOT_FOUND)),
        Route(
            "proposals:proposal-detail",
            url("proposal-detail", others.pk),
            _statuses(applicant=NOT_FOUND, reviewer=NOT_FOUND),
        ),
        Route("proposals:proposal-detail", url("proposal-detail", draft.pk), {**team_only, "admin": OK}),
        Route("proposals:proposal-submitted", url("proposal-submitted", in_review.pk), _statuses()),
        Route("proposals:proposal-pdf", url("proposal-pdf", in_review.pk), _statuses()),
        Route(
            "proposals:proposal-pdf",
            url("proposal-pdf", others.pk),
            _statuses(
                applicant=NOT_FOUND,
                reviewer=NOT_FOUND,
                assessor=NOT_FOUND,
                director=NOT_FOUND,
                admin=NOT_FOUND,
            ),
        ),
        Route(
            "proposals:proposal-withdraw",
            url("proposal-withdraw", in_review.pk),
            _statuses(reviewer=FORBIDDEN, assessor=FORBIDDEN, director=FORBIDDEN, admin=FORBIDDEN),
        ),
        Route(
            "proposals:proposal-withdraw",
            url("proposal-withdraw", others.pk),
            _statuses(
                applicant=NOT_FOUND,
                reviewer=NOT_FOUND,
                assessor=FORBIDDEN,
                director=FORBIDDEN,
                admin=FORBIDDEN,
            ),
        ),
        Route(
            "proposals:proposal-respond",
            url("proposal-respond", awarded.pk),
            _statuses(reviewer=NOT_FOUND, assessor=FORBIDDEN, director=FORBIDDEN, admin=FORBIDDEN),
        ),
        Route("proposals:member-accept", url("member-accept", member.token), signed_in(OK)),
        Route("proposals:member-accept", url("member-accept", "not-a-token"), signed_in(NOT_FOUND)),
        Route("proposals:proposal-request-changes", url("proposal-request-changes", others.pk), guessed),
        Route(
            "proposals:proposal-assess",
            url("proposal-assess", others.pk, system.slug),
            _statuses(applicant=NOT_FOUND, reviewer=NOT_FOUND, director=FORBIDDEN),
        ),
        Route("proposals:proposal-reviewers", url("proposal-reviewers", in_review.pk), directors),
        Route("proposals:proposal-reviewers", url("proposal-reviewers", others.pk), guessed),
        Route("proposals:proposal-decide", url("proposal-decide", in_review.pk), directors),
        Route("proposals:proposal-decide", url("proposal-decide", others.pk), guessed),
        Route(
            "proposals:call-decisions",
            url("call-decisions", call.slug),
            _statuses(applicant=NOT_FOUND, reviewer=NOT_FOUND, assessor=NOT_FOUND),
        ),
        Route(
            "proposals:review-detail",
            url("review-detail", assignment.pk),
            _statuses(applicant=NOT_FOUND, assessor=NOT_FOUND, director=NOT_FOUND, admin=NOT_FOUND),
        ),
        Route("proposals:review-claim", url("review-claim", assignment.token), signed_in(OK)),
        Route(
            "proposals:review-release",
            url("review-release", assignment.pk),
            _statuses(applicant=FORBIDDEN, reviewer=FORBIDDEN, assessor=FORBIDDEN, director=REDIRECT, admin=REDIRECT),
            method="post",
        ),
    ]
    # The applicant's question pages: the team only; admins see the proposal but may not edit it.
    for name in [
        "proposal-tasks",
        "proposal-details",
        "proposal-team",
        "proposal-resources",
        "proposal-timeline",
        "proposal-case",
        "proposal-data",
        "proposal-declarations",
        "proposal-check",
    ]:
        routes.append(Route(f"proposals:{name}", url(name, draft.pk), team_only))
        routes.append(
            Route(
                f"proposals:{name}",
                url(name, others.pk),
                _statuses(
                    applicant=NOT_FOUND,
                    reviewer=NOT_FOUND,
                    assessor=FORBIDDEN,
                    director=FORBIDDEN,
                    admin=FORBIDDEN,
                ),
            )
        )
    routes += [
        Route(
            "proposals:proposal-details",
            url("proposal-details", draft.pk),
            team_redirect,
            method="post",
            data=details,
        ),
        Route(
            "proposals:proposal-resource-remove",
            url("proposal-resource-remove", removable.pk, system.slug),
            team_redirect,
            method="post",
        ),
        Route("proposals:proposal-submit", url("proposal-submit", draft.pk), team_redirect, method="post"),
        # State changes last: each role's run builds a fresh world, but within a run the order matters.
        Route(
            "proposals:proposal-eligible",
            url("proposal-eligible", others.pk),
            _statuses(applicant=NOT_FOUND, reviewer=NOT_FOUND, assessor=FORBIDDEN, director=REDIRECT, admin=REDIRECT),
            method="post",
        ),
        Route(
            "proposals:proposal-withdraw",
            url("proposal-withdraw", withdrawable.pk),
            _statuses(
                applicant=REDIRECT,
                reviewer=NOT_FOUND,
                assessor=FORBIDDEN,
                director=FORBIDDEN,
                admin=FORBIDDEN,
            ),
            method="post",
        ),
    ]
    return routes + api_routes(
        world, call=call, pool=pool, in_review=in_review, assignment=assignment, undeclared=undeclared, invited=invited
    )


def api_routes(world, *, call, pool, in_review, assignment, undeclared, invited):
    """The API: the same rules, answered 401 (anonymous), 403 (may see, may not act) or 404 (may not see)."""
    users, system, director = world.users, world.system, world.users["director"]
    applicant, outsider = users["applicant"], UserFactory()

    def fresh(state, pi=outsider):
        return make_proposal(call=call, pi=pi, system=system, state=state)

    draft = fresh(State.DRAFT, applicant)
    others = fresh(State.SUBMITTED)
    awarded, declinable = fresh(State.IN_REVIEW, applicant), fresh(State.IN_REVIEW, applicant)
    for proposal in (awarded, declinable):
        awards.award_proposal(
            proposal=proposal,
            parts=[awards.AwardPart(pool=pool, seconds=100 * HOUR, start=proposal.start_date, end=proposal.start_date)],
            rationale="Routes",
            actor=director,
        )

    def url(name, *args):
        return reverse(name, args=args)

    def api(**statuses):
        return {**_statuses(anonymous=UNAUTHORISED), **statuses}

    hidden_from_applicant = {"applicant": NOT_FOUND, "reviewer": NOT_FOUND}
    team_only = api(reviewer=NOT_FOUND, assessor=NOT_FOUND, director=NOT_FOUND, admin=FORBIDDEN)
    directing = api(**hidden_from_applicant, assessor=FORBIDDEN)
    pi_only = api(reviewer=NOT_FOUND, assessor=FORBIDDEN, director=FORBIDDEN, admin=FORBIDDEN)
    reviewer_only = api(applicant=NOT_FOUND, assessor=NOT_FOUND, director=NOT_FOUND, admin=NOT_FOUND)
    scores = {"scores": [{"criterion": c.pk, "score": 4, "comment": "Sound"} for c in call.criteria.all()]}
    award = {
        "systems": [
            {
                "system": system.slug,
                "hours": "500",
                "start": str(others.start_date),
                "end": str(others.start_date),
            }
        ],
        "rationale": "Strong",
    }
    resource = {"system": system.slug, "method": "M", "runs": 10, "hours_per_run": "20", "gpus_per_job": 8}
    return [
        Route("call-list", url("call-list"), everyone(OK), api=True),
        Route("call-detail", url("call-detail", call.slug), everyone(OK), api=True),
        Route("proposal-list", url("proposal-list"), signed_in(OK, anonymous=UNAUTHORISED), api=True),
        Route(
            "proposal-list",
            url("proposal-list"),
            signed_in(CREATED, anonymous=UNAUTHORISED),
            method="post",
            data={"call": call.slug, "title": "By script"},
            api=True,
        ),
        Route("proposal-detail", url("proposal-detail", in_review.pk), api(), api=True),
        Route("proposal-detail", url("proposal-detail", undeclared.pk), api(reviewer=NOT_FOUND), api=True),
        Route("proposal-detail", url("proposal-detail", others.pk), api(**hidden_from_applicant), api=True),
        Route("proposal-detail", url("proposal-detail", draft.pk), {**team_only, "admin": OK}, api=True),
        Route(
            "proposal-detail",
            url("proposal-detail", draft.pk),
            team_only,
            method="patch",
            data={"title": "Patched"},
            api=True,
        ),
        Route(
            "proposal-resources",
            url("proposal-resources", draft.pk),
            {**team_only, "applicant": CREATED},
            method="post",
            data=resource,
            api=True,
        ),
        Route(
            "proposal-accept-terms",
            url("proposal-accept-terms", draft.pk),
            team_only,
            method="post",
            api=True,
        ),
        Route(
            "proposal-assess",
            url("proposal-assess", others.pk),
            api(**hidden_from_applicant, director=FORBIDDEN),
            method="post",
            data={"system": system.slug, "outcome": "feasible"},
            api=True,
        ),
        Route(
            "proposal-reviewers",
            url("proposal-reviewers", in_review.pk),
            api(applicant=FORBIDDEN, reviewer=FORBIDDEN, assessor=FORBIDDEN, director=CREATED, admin=CREATED),
            method="post",
            data={"email": "script.reviewer@example.org"},
            api=True,
        ),
        Route("review-list", url("review-list"), signed_in(OK, anonymous=UNAUTHORISED), api=True),
        Route("review-detail", url("review-detail", assignment.pk), reviewer_only, api=True),
        Route(
            "review-declare-conflict",
            url("review-declare-conflict", invited.pk),
            reviewer_only,
            method="post",
            data={"has_conflict": False},
            api=True,
        ),
        Route(
            "review-submit",
            url("review-submit", assignment.pk),
            reviewer_only,
            method="post",
            data=scores,
            api=True,
        ),
        # Transitions, each on a proposal of its own so that one role's run never trips over another action.
        Route("proposal-submit", url("proposal-submit", draft.pk), team_only, method="post", api=True),
        Route(
            "proposal-withdraw",
            url("proposal-withdraw", fresh(State.SUBMITTED, applicant).pk),
            pi_only,
            method="post",
            api=True,
        ),
        Route("proposal-eligible", url("proposal-eligible", others.pk), directing, method="post", api=True),
        Route(
            "proposal-request-changes",
            url("proposal-request-changes", fresh(State.SUBMITTED).pk),
            directing,
            method="post",
            data={"message": "More detail"},
            api=True,
        ),
        Route(
            "proposal-reject",
            url("proposal-reject", fresh(State.IN_REVIEW).pk),
            directing,
            method="post",
            data={"rationale": "Out of scope"},
            api=True,
        ),
        Route(
            "proposal-award",
            url("proposal-award", fresh(State.IN_REVIEW).pk),
            directing,
            method="post",
            data=award,
            api=True,
        ),
        Route("proposal-accept", url("proposal-accept", awarded.pk), pi_only, method="post", api=True),
        Route("proposal-decline", url("proposal-decline", declinable.pk), pi_only, method="post", api=True),
    ]
