"""The applicant's pages: open calls, the proposal task list and its question pages, team, check answers,
submission, status and history, withdrawal and the answer to an award.

Every page finds proposals through `Proposal.objects.visible_to(user)`, so a guessed id is a 404; changes go
through `programmes.proposals` (and `allocations.awards` for the award), never straight to the models.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import proposals as services
from .models import Call, Proposal, ProposalMember, ResourceRequest, ReviewAssignment
from .proposal_forms import (
    CaseForm,
    DataForm,
    DeclarationsForm,
    DetailsForm,
    MemberForm,
    ReasonForm,
    ResourceForm,
    TimelineForm,
)
from .proposals import ProposalStateError


def posted(request):
    """The form data of a POST (even an empty one, so that it is validated), or None for a GET."""
    return request.POST if request.method == "POST" else None


def visible_proposal(request, pk) -> Proposal:
    return get_object_or_404(Proposal.objects.visible_to(request.user).select_related("call__programme", "pi"), pk=pk)


def editable_proposal(request, pk) -> Proposal:
    proposal = visible_proposal(request, pk)
    if not services.is_team_member(proposal, request.user):
        raise PermissionDenied
    return proposal


def refuse(request, proposal, error: ProposalStateError):
    """A wrong-state action in a page: say why on the proposal's page rather than fail."""
    messages.error(request, error.message)
    return redirect("proposals:proposal-detail", pk=proposal.pk)


def add_errors(form, error: ValidationError) -> None:
    if hasattr(error, "error_dict"):
        for field, messages_ in error.message_dict.items():
            form.add_error(field if field in form.fields else None, messages_)
    else:
        form.add_error(None, error)


# Calls ------------------------------------------------------------------------------------------------------


@require_GET
def call_list(request):
    today = timezone.localdate()
    calls = Call.objects.visible_to(request.user).open_on(today).select_related("programme")
    return render(request, "programmes/call_list.html", {"calls": calls})


@require_GET
def call_detail(request, slug):
    call = get_object_or_404(Call.objects.visible_to(request.user).select_related("programme"), slug=slug)
    return render(
        request,
        "programmes/call_detail.html",
        {
            "call": call,
            "is_open": call.is_open_on(timezone.localdate()),
            "systems": call.systems(),
            "criteria": call.criteria.all(),
        },
    )


@login_required
@require_POST
def proposal_start(request, slug):
    call = get_object_or_404(Call.objects.visible_to(request.user), slug=slug)
    try:
        proposal = services.create_proposal(call=call, pi=request.user)
    except ProposalStateError as error:
        messages.error(request, error.message)
        return redirect("proposals:call-detail", slug=call.slug)
    return redirect("proposals:proposal-tasks", pk=proposal.pk)


# The applicant's proposals ----------------------------------------------------------------------------------


@login_required
@require_GET
def proposal_list(request):
    user = request.user
    own = Proposal.objects.visible_to(user).filter(pk__in=Proposal.objects.editable_by(user)).select_related("call")
    reviews = (
        ReviewAssignment.objects.filter(reviewer=user)
        .exclude(state=ReviewAssignment.State.CONFLICTED)
        .select_related("proposal__call")
    )
    return render(request, "programmes/proposal_list.html", {"proposals": own, "reviews": reviews})


@login_required
@require_GET
def proposal_detail(request, pk):
    from allocations.awards import awarded_systems

    from .review_views import director_context

    proposal = visible_proposal(request, pk)
    is_team = services.is_team_member(proposal, request.user)
    context = {
        "proposal": proposal,
        "is_team": is_team,
        "is_pi": proposal.pi_id == request.user.pk,
        "transitions": proposal.transitions.select_related("actor"),
        "decision": getattr(proposal, "decision", None),
        "awarded": awarded_systems(proposal),
        "requests": proposal.resource_requests.select_related("system"),
        "changes_requested": proposal.transitions.filter(to_state=Proposal.State.CHANGES_REQUESTED).last(),
        # Released to the applicant's team: not to other reviewers, nor to assessors.
        "released_reviews": (
            proposal.review_assignments.filter(released_to_applicant=True).prefetch_related("scores__criterion")
            if is_team
            else []
        ),
        "can_withdraw": proposal.state in services.WITHDRAWABLE,
    }
    # Its own team sees the applicant's page, whatever other roles they hold.
    if not is_team and (services.can_direct(proposal, request.user) or request.user.assessed_systems.exists()):
        context.update(director_context(request, proposal))
    return render(request, "programmes/proposal_detail.html", context)


@login_required
@require_GET
def proposal_tasks(request, pk):
    proposal = editable_proposal(request, pk)
    statuses = services.section_statuses(proposal)
    sections = [
        {
            "name": services.SECTION_NAMES[key],
            "status": statuses[key],
            "url": reverse(SECTION_URLS[key], args=[proposal.pk]),
        }
        for key in services.SECTION_NAMES
    ]
    completed = sum(1 for s in sections if s["status"] in (services.COMPLETED, services.OPTIONAL))
    return render(
        request,
        "programmes/proposal_tasks.html",
        {"proposal": proposal, "sections": sections, "completed": completed, "total": len(sections)},
    )


SECTION_URLS = {
    "details": "proposals:proposal-details",
    "team": "proposals:proposal-team",
    "resources": "proposals:proposal-resources",
    "timeline": "proposals:proposal-timeline",
    "case": "proposals:proposal-case",
    "data": "proposals:proposal-data",
    "declarations": "proposals:proposal-declarations",
}


def _question_page(request, pk, form_class, *, title, template="programmes/proposal_question.html", hint=""):
    """A question page: show saved answers, save valid ones through the service, go back to the task list."""
    proposal = editable_proposal(request, pk)
    if not proposal.is_editable:
        return refuse(request, proposal, ProposalStateError("This proposal can no longer be changed"))
    files = request.FILES if request.method == "POST" else None
    form = form_class(posted(request), files, instance=proposal)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in form.Meta.fields}
        if "case_for_support_pdf" in fields and not request.FILES.get("case_for_support_pdf"):
            fields.pop("case_for_support_pdf")  # no new file: keep the one already uploaded
        try:
            services.update_proposal(proposal=proposal, actor=request.user, **fields)
        except ValidationError as error:
            add_errors(form, error)
        except ProposalStateError as error:
            return refuse(request, proposal, error)
        else:
            return redirect(_next_page(request, proposal))
    return render(
        request,
        template,
        {"proposal": proposal, "form": form, "title": title, "hint": hint, "multipart": form.is_multipart()},
    )


def _next_page(request, proposal) -> str:
    """Back to check answers when the applicant came from there, else to the task list."""
    if request.GET.get("from") == "check":
        return reverse("proposals:proposal-check", args=[proposal.pk])
    return reverse("proposals:proposal-tasks", args=[proposal.pk])


@login_required
@require_http_methods(["GET", "POST"])
def proposal_details(request, pk):
    return _question_page(request, pk, DetailsForm, title="Project details")


@login_required
@require_http_methods(["GET", "POST"])
def proposal_timeline(request, pk):
    return _question_page(request, pk, TimelineForm, title="Timeline")


@login_required
@require_http_methods(["GET", "POST"])
def proposal_case(request, pk):
    return _question_page(request, pk, CaseForm, title="Case for support")


@login_required
@require_http_methods(["GET", "POST"])
def proposal_data(request, pk):
    return _question_page(request, pk, DataForm, title="Data, ethics and trusted research")


@login_required
@require_http_methods(["GET", "POST"])
def proposal_declarations(request, pk):
    proposal = editable_proposal(request, pk)
    form = DeclarationsForm(posted(request), initial={"accept_terms": bool(proposal.terms_accepted_at)})
    if request.method == "POST" and form.is_valid():
        try:
            services.accept_terms(proposal=proposal, actor=request.user)
        except ProposalStateError as error:
            return refuse(request, proposal, error)
        return redirect(_next_page(request, proposal))
    return render(
        request,
        "programmes/proposal_question.html",
        {"proposal": proposal, "form": form, "title": "Declarations and terms"},
    )


@login_required
@require_http_methods(["GET", "POST"])
def proposal_resources(request, pk):
    """The requests so far, and a form to add (or replace) the request on one system."""
    proposal = editable_proposal(request, pk)
    form = ResourceForm(posted(request), call=proposal.call)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.save_resource_request(
                proposal=proposal,
                actor=request.user,
                system=data["system"],
                method=data["method"],
                runs=data["runs"],
                seconds_per_run=data["hours_per_run"],
                gpus_per_job=data["gpus_per_job"],
                software=data["software"],
            )
        except ValidationError as error:
            add_errors(form, error)
        except ProposalStateError as error:
            return refuse(request, proposal, error)
        else:
            messages.success(request, f"Request on {data['system'].name} saved")
            return redirect("proposals:proposal-resources", pk=proposal.pk)
    return render(
        request,
        "programmes/proposal_resources.html",
        {"proposal": proposal, "form": form, "requests": proposal.resource_requests.select_related("system")},
    )


@login_required
@require_POST
def proposal_resource_remove(request, pk, system):
    proposal = editable_proposal(request, pk)
    resource = get_object_or_404(ResourceRequest, proposal=proposal, system__slug=system)
    try:
        services.remove_resource_request(request=resource, actor=request.user)
    except ProposalStateError as error:
        return refuse(request, proposal, error)
    messages.success(request, f"Request on {resource.system.name} removed")
    return redirect("proposals:proposal-resources", pk=proposal.pk)


@login_required
@require_http_methods(["GET", "POST"])
def proposal_team(request, pk):
    proposal = editable_proposal(request, pk)
    form = MemberForm(posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            member = services.invite_member(proposal=proposal, email=form.cleaned_data["email"], actor=request.user)
        except ValidationError as error:
            add_errors(form, error)
        except ProposalStateError as error:
            return refuse(request, proposal, error)
        else:
            messages.success(request, f"Invitation sent to {member.email}")
            return redirect("proposals:proposal-team", pk=proposal.pk)
    return render(
        request,
        "programmes/proposal_team.html",
        {"proposal": proposal, "form": form, "members": proposal.members.all()},
    )


@login_required
@require_http_methods(["GET", "POST"])
def member_accept(request, token):
    member = ProposalMember.objects.select_related("proposal__pi").filter(token=token).first()
    if member is None:
        raise Http404
    if request.method == "POST":
        try:
            services.accept_membership(token=token, user=request.user)
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
            return redirect("proposals:proposal-list")
        messages.success(request, "You have joined the proposal's team")
        return redirect("proposals:proposal-tasks", pk=member.proposal_id)
    return render(request, "programmes/member_accept.html", {"member": member})


@login_required
@require_GET
def proposal_check(request, pk):
    proposal = editable_proposal(request, pk)
    statuses = services.section_statuses(proposal)
    incomplete = [
        services.SECTION_NAMES[k] for k, v in statuses.items() if v in (services.INCOMPLETE, services.NOT_STARTED)
    ]
    return render(
        request,
        "programmes/proposal_check.html",
        {
            "proposal": proposal,
            "requests": proposal.resource_requests.select_related("system"),
            "members": proposal.members.all(),
            "incomplete": incomplete,
            "is_pi": proposal.pi_id == request.user.pk,
        },
    )


@login_required
@require_POST
def proposal_submit(request, pk):
    proposal = editable_proposal(request, pk)
    try:
        services.submit_proposal(proposal=proposal, actor=request.user)
    except ProposalStateError as error:
        return refuse(request, proposal, error)
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("proposals:proposal-check", pk=proposal.pk)
    return redirect("proposals:proposal-submitted", pk=proposal.pk)


@login_required
@require_GET
def proposal_submitted(request, pk):
    proposal = visible_proposal(request, pk)
    return render(request, "programmes/proposal_submitted.html", {"proposal": proposal})


@login_required
@require_http_methods(["GET", "POST"])
def proposal_withdraw(request, pk):
    proposal = visible_proposal(request, pk)
    if proposal.pi_id != request.user.pk:
        raise PermissionDenied
    form = ReasonForm(posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            services.withdraw_proposal(proposal=proposal, actor=request.user, reason=form.cleaned_data["reason"])
        except ProposalStateError as error:
            return refuse(request, proposal, error)
        messages.success(request, f"{proposal.reference} has been withdrawn")
        return redirect("proposals:proposal-detail", pk=proposal.pk)
    return render(request, "programmes/proposal_withdraw.html", {"proposal": proposal, "form": form})


@login_required
@require_http_methods(["GET", "POST"])
def proposal_respond(request, pk):
    """The PI accepts or declines an award."""
    from allocations import awards

    proposal = visible_proposal(request, pk)
    if proposal.pi_id != request.user.pk:
        raise PermissionDenied
    if request.method == "POST":
        try:
            if request.POST.get("answer") == "accept":
                allocations = awards.accept_award(proposal=proposal, actor=request.user)
                systems = ", ".join(allocation.system.name for allocation in allocations)
                messages.success(
                    request,
                    f"Award accepted. Your scheduler account is {awards.scheduler_account_for(proposal)} on {systems}",
                )
            elif request.POST.get("answer") == "decline":
                awards.decline_award(proposal=proposal, actor=request.user)
                messages.success(request, "Award declined. The hours have returned to the programme")
            else:
                raise PermissionDenied
        except ProposalStateError as error:
            return refuse(request, proposal, error)
        return redirect("proposals:proposal-detail", pk=proposal.pk)
    if proposal.state != Proposal.State.AWARDED:
        return refuse(request, proposal, ProposalStateError("There is no award waiting for your answer"))
    return render(
        request,
        "programmes/proposal_respond.html",
        {"proposal": proposal, "decision": proposal.decision, "awarded": awards.awarded_systems(proposal)},
    )


@login_required
@require_GET
def proposal_pdf(request, pk):
    """The case for support PDF, for whoever may see the proposal; never from a public URL."""
    proposal = visible_proposal(request, pk)
    if not proposal.case_for_support_pdf:
        raise Http404
    response = FileResponse(
        proposal.case_for_support_pdf.open("rb"),
        content_type="application/pdf",
        as_attachment=True,
        filename=f"{proposal.reference}-case-for-support.pdf",
    )
    response["X-Content-Type-Options"] = "nosniff"
    return response
