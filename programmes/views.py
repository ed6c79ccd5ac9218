"""Pages for programme directors and admins: programmes, their directors and their fund pools."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from airr_portal import roles

from . import services
from .forms import DirectorInvitationForm, FundPoolForm
from .models import Programme


def _require_director_or_admin(user) -> None:
    if not roles.manages_programmes(user):
        raise PermissionDenied


def _require_admin(user) -> None:
    if not roles.is_admin(user):
        raise PermissionDenied


@login_required
@require_GET
def programme_list(request):
    _require_director_or_admin(request.user)
    programmes = Programme.objects.visible_to(request.user).prefetch_related("directors")
    return render(request, "programmes/programme_list.html", {"programmes": programmes})


@login_required
@require_GET
def programme_detail(request, slug):
    _require_director_or_admin(request.user)
    programme = get_object_or_404(Programme.objects.visible_to(request.user), slug=slug)
    return render(
        request,
        "programmes/programme_detail.html",
        {
            "programme": programme,
            "directors": programme.directors.all(),
            "pending_invitations": programme.director_invitations.pending(),
            "pools": programme.pools.select_related("system"),
            "can_manage": roles.is_admin(request.user),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def fund_pool_create(request, slug):
    _require_admin(request.user)
    programme = get_object_or_404(Programme.objects.visible_to(request.user), slug=slug)
    form = FundPoolForm(request.POST or None, programme=programme)
    if request.method == "POST" and form.is_valid():
        try:
            pool = services.create_fund_pool(programme=programme, actor=request.user, **form.cleaned_data)
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, f"{pool.name} created. Deposit GPU-hours into it to fund awards.")
            return redirect("allocations:pool-detail", pk=pool.pk)
    return render(request, "programmes/fund_pool_form.html", {"programme": programme, "form": form})


@login_required
@require_http_methods(["GET", "POST"])
def director_invite(request, slug):
    _require_admin(request.user)
    programme = get_object_or_404(Programme.objects.visible_to(request.user), slug=slug)
    form = DirectorInvitationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            invitation = services.invite_director(
                programme=programme, email=form.cleaned_data["email"], actor=request.user
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            if invitation.is_pending:
                messages.success(
                    request,
                    f"Invitation sent to {invitation.email}. They become a director when they confirm that address.",
                )
            else:
                messages.success(request, f"{invitation.email} is now a director of {programme.name}.")
            return redirect("programmes:programme-detail", slug=programme.slug)
    return render(request, "programmes/director_invite.html", {"programme": programme, "form": form})
