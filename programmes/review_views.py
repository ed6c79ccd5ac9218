"""The director's, assessor's and reviewer's pages: the queue, eligibility, changes requested, technical
assessment, reviewers and their reviews, and the decision page of a call with its calibrated ranking.

Directors and assessors must have MFA (the middleware sees to it); every proposal is found through
`Proposal.objects.visible_to(user)`, and every change goes through the services.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.core.validators import slug_re
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from airr_portal import roles

from . import proposals as services
from .models import Call, FundPool, Proposal, ReviewAssignment, System, TechnicalAssessment
from .proposal_forms import (
    AssessmentForm,
    AssignReviewerForm,
    ConflictForm,
    DecisionForm,
    RequestChangesForm,
    ReviewForm,
)
from .proposal_views import add_errors, posted, refuse, visible_proposal
from .proposals import ProposalStateError
from .selectors import QUEUE_SORTS, call_ranking, director_queue, pool_lines

QUEUE_PAGE_SIZE = 50
DECISION_PAGE_SIZE = 100


def _directed_proposal(request, pk) -> Proposal:
    proposal = visible_proposal(request, pk)
    if not services.can_direct(proposal, request.user):
        raise PermissionDenied
    return proposal


def director_context(request, proposal) -> dict:
    """What a director or assessor sees on a proposal's page besides what its team sees."""
    user = request.user
    requests = list(proposal.resource_requests.select_related("system"))
    assessments = {a.system_id: a for a in TechnicalAssessment.objects.filter(proposal=proposal)}
    assessable = [r.system for r in requests if services.can_assess(proposal, r.system, user)]
    can_direct = services.can_direct(proposal, user)
    return {
        "can_direct": can_direct,
        "assessments": [(r.system, assessments.get(r.system_id)) for r in requests],
        "assessable_systems": assessable,
        "reviews": (
            proposal.review_assignments.select_related("reviewer").prefetch_related("scores__criterion")
            if can_direct
            else []
        ),
    }


@login_required
@require_GET
def proposal_queue(request):
    user = request.user
    if not roles.works_on_proposals(user):
        raise PermissionDenied
    calls = Call.objects.managed_by(user).select_related("programme")
    # A value that is no slug (a NUL character, which PostgreSQL refuses to compare) matches nothing: no filter.
    call_slug, system_slug = (request.GET.get(name, "") for name in ("call", "system"))
    call = calls.filter(slug=call_slug).first() if slug_re.match(call_slug) else None
    system = System.objects.filter(slug=system_slug).first() if slug_re.match(system_slug) else None
    state = request.GET.get("state") if request.GET.get("state") in Proposal.State.values else None
    sort = request.GET.get("sort") if request.GET.get("sort") in QUEUE_SORTS else "-submitted"
    proposals = director_queue(user, call=call, state=state, system=system, sort=sort)
    page = Paginator(proposals, QUEUE_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "programmes/proposal_queue.html",
        {
            "page": page,
            "calls": calls,
            "systems": System.objects.all(),
            "states": [choice for choice in Proposal.State.choices if choice[0] != Proposal.State.DRAFT],
            "selected": {"call": call, "system": system, "state": state, "sort": sort},
            "query": request.GET.copy(),
        },
    )


@login_required
@require_POST
def proposal_eligible(request, pk):
    proposal = _directed_proposal(request, pk)
    try:
        services.confirm_eligibility(proposal=proposal, actor=request.user)
    except ProposalStateError as error:
        return refuse(request, proposal, error)
    messages.success(request, f"{proposal.reference} is eligible and now in review")
    return redirect("proposals:proposal-detail", pk=proposal.pk)


@login_required
@require_http_methods(["GET", "POST"])
def proposal_request_changes(request, pk):
    proposal = _directed_proposal(request, pk)
    form = RequestChangesForm(posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.request_changes(proposal=proposal, actor=request.user, message=form.cleaned_data["message"])
        except ProposalStateError as error:
            return refuse(request, proposal, error)
        messages.success(request, f"Changes requested from the applicant of {proposal.reference}")
        return redirect("proposals:proposal-detail", pk=proposal.pk)
    return render(
        request,
        "programmes/director_form.html",
        {"proposal": proposal, "form": form, "title": "Request changes", "button": "Send to the applicant"},
    )


@login_required
@require_http_methods(["GET", "POST"])
def proposal_assess(request, pk, system):
    proposal = visible_proposal(request, pk)
    system = get_object_or_404(System, slug=system)
    if not services.can_assess(proposal, system, request.user):
        raise PermissionDenied
    existing = TechnicalAssessment.objects.filter(proposal=proposal, system=system).first()
    initial = {"outcome": existing.outcome, "notes": existing.notes} if existing else None
    form = AssessmentForm(posted(request), initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.record_assessment(proposal=proposal, system=system, actor=request.user, **form.cleaned_data)
        except ValidationError as error:
            add_errors(form, error)
        except ProposalStateError as error:
            return refuse(request, proposal, error)
        else:
            messages.success(request, f"Technical assessment for {system.name} saved")
            return redirect("proposals:proposal-detail", pk=proposal.pk)
    return render(
        request,
        "programmes/director_form.html",
        {
            "proposal": proposal,
            "form": form,
            "title": f"Technical assessment: {system.name}",
            "button": "Save assessment",
            "requests": proposal.resource_requests.filter(system=system),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def proposal_reviewers(request, pk):
    proposal = _directed_proposal(request, pk)
    form = AssignReviewerForm(posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            assignment = services.assign_reviewer(
                proposal=proposal, email=form.cleaned_data["email"], actor=request.user
            )
        except ValidationError as error:
            add_errors(form, error)
        except ProposalStateError as error:
            return refuse(request, proposal, error)
        else:
            messages.success(request, f"{assignment.email} has been asked to review {proposal.reference}")
            return redirect("proposals:proposal-detail", pk=proposal.pk)
    return render(
        request,
        "programmes/director_form.html",
        {"proposal": proposal, "form": form, "title": "Assign a reviewer", "button": "Assign reviewer"},
    )


@login_required
@require_POST
def review_release(request, pk):
    assignment = get_object_or_404(
        ReviewAssignment.objects.filter(proposal__in=Proposal.objects.visible_to(request.user)), pk=pk
    )
    if not services.can_direct(assignment.proposal, request.user):
        raise PermissionDenied
    try:
        services.release_review(
            assignment=assignment, actor=request.user, released=request.POST.get("released") != "no"
        )
    except ProposalStateError as error:
        return refuse(request, assignment.proposal, error)
    messages.success(request, "The applicant can now read the review's comments")
    return redirect("proposals:proposal-detail", pk=assignment.proposal_id)


@login_required
@require_http_methods(["GET", "POST"])
def review_claim(request, token):
    assignment = get_object_or_404(ReviewAssignment, token=token)
    if request.method == "POST":
        services.claim_review_invitation(token=token, user=request.user)
        return redirect("proposals:review-detail", pk=assignment.pk)
    return render(request, "programmes/review_claim.html", {"assignment": assignment})


@login_required
@require_http_methods(["GET", "POST"])
def review_detail(request, pk):
    """The reviewer's page: first the conflict declaration, then the scores (one form for each step)."""
    assignment = get_object_or_404(
        ReviewAssignment.objects.select_related("proposal__call", "proposal__pi"),
        pk=pk,
        reviewer=request.user,
    )
    proposal = assignment.proposal
    State = ReviewAssignment.State
    if assignment.state == State.INVITED:
        form = ConflictForm(posted(request))
        if request.method == "POST" and form.is_valid():
            try:
                services.declare_conflict(assignment=assignment, actor=request.user, **form.cleaned_data)
            except ProposalStateError as error:
                messages.error(request, error.message)
                return redirect("proposals:proposal-list")
            if form.cleaned_data["has_conflict"]:
                messages.success(request, "Thank you. You have been taken off this proposal")
                return redirect("proposals:proposal-list")
            return redirect("proposals:review-detail", pk=assignment.pk)
    elif assignment.state == State.READY:
        form = ReviewForm(posted(request), criteria=proposal.call.criteria.all())
        if request.method == "POST" and form.is_valid():
            try:
                services.submit_review(
                    assignment=assignment,
                    actor=request.user,
                    scores=form.scores(),
                    comment_for_applicant=form.cleaned_data["comment_for_applicant"],
                )
            except ValidationError as error:
                add_errors(form, error)
            except ProposalStateError as error:
                messages.error(request, error.message)
                return redirect("proposals:proposal-list")
            else:
                messages.success(request, f"Your review of {proposal.reference} has been submitted")
                return redirect("proposals:proposal-list")
    else:
        form = None
    return render(
        request,
        "programmes/review_detail.html",
        {
            "assignment": assignment,
            "proposal": proposal,
            "form": form,
            "requests": proposal.resource_requests.select_related("system"),
            "scores": assignment.scores.select_related("criterion"),
            # Who else is on it, for a reviewer to judge a conflict by before reading it.
            "team": proposal.members.filter(accepted_at__isnull=False, user__isnull=False).select_related("user"),
        },
    )


def _pool_choice(request, call):
    pools = list(call.pools.select_related("system"))
    chosen = next((p for p in pools if str(p.pk) == request.GET.get("pool")), pools[0] if pools else None)
    return pools, chosen


@login_required
@require_GET
def call_decisions(request, slug):
    """A call's proposals ranked by calibrated score, with the running total against a pool's hours."""
    from allocations.selectors import figures_for_pools

    call = get_object_or_404(Call.objects.managed_by(request.user), slug=slug)
    pools, pool = _pool_choice(request, call)
    available_by_pool = {pk: figures.available for pk, figures in figures_for_pools(pools).items()}
    available = available_by_pool[pool.pk] if pool else 0
    rows = call_ranking(call, pool=pool) if pool else []
    lines = pool_lines(rows, pools, available_by_pool)
    # The chosen pool's cut-off line, as an index into the ranking (its rank counts from 1).
    cut_off_rank = next((line.cut_off_rank for line in lines if line.pool == pool), None)
    cut_off = cut_off_rank - 1 if cut_off_rank is not None else None
    # The ranking and running totals cover the whole call; the page shows them a hundred at a time.
    page = Paginator(rows, DECISION_PAGE_SIZE).get_page(request.GET.get("page"))
    first = (page.number - 1) * DECISION_PAGE_SIZE
    on_this_page = cut_off is not None and first <= cut_off < first + len(page)
    return render(
        request,
        "programmes/call_decisions.html",
        {
            "call": call,
            "pools": pools,
            "pool": pool,
            "available": available,
            "pool_lines": lines,
            "page": page,
            "first_rank": first + 1,
            "cut_off_here": cut_off - first if on_this_page else None,
            "cut_off_page": cut_off // DECISION_PAGE_SIZE + 1 if cut_off is not None else None,
            "query": request.GET.copy(),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def proposal_decide(request, pk):
    """Award in full, in part (on each system: fewer hours, a shorter window or nothing) or reject, always
    with a rationale."""
    from allocations import awards

    proposal = _directed_proposal(request, pk)
    pools = list(FundPool.objects.filter(calls=proposal.call).select_related("system"))
    requests = list(proposal.resource_requests.select_related("system"))
    requested_end = services.add_months(proposal.start_date, proposal.duration_months) if proposal.start_date else None
    form = DecisionForm(posted(request), requests=requests, pools=pools)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            if data["outcome"] == "reject":
                services.reject_proposal(proposal=proposal, actor=request.user, rationale=data["rationale"])
            else:
                awards.award_proposal(
                    proposal=proposal,
                    parts=form.award_parts(start=proposal.start_date, end=requested_end),
                    rationale=data["rationale"],
                    actor=request.user,
                )
        except ValidationError as error:
            add_errors(form, error)
        except ProposalStateError as error:
            return refuse(request, proposal, error)
        else:
            messages.success(request, f"Decision on {proposal.reference} recorded")
            return redirect("proposals:call-decisions", slug=proposal.call.slug)
    return render(
        request,
        "programmes/proposal_decide.html",
        {"proposal": proposal, "form": form, "requests": requests, "requested_end": requested_end},
    )
