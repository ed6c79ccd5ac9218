"""Pages for fund pools: figures and statements for directors and admins; deposits, withdrawals and transfers
for admins; each programme's dashboard for its directors. Every movement goes through `allocations.ledger`;
these views only parse, call and render."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from airr_portal import roles
from programmes.models import FundPool, Programme

from . import ledger
from .dashboards import FORECAST_WINDOW_DAYS
from .dashboards import programme_dashboard as dashboard_of
from .forms import PoolMovementForm, StatementFilterForm, TransferForm
from .querystrings import query_without
from .selectors import account_statement, figures_for_allocations, figures_for_pools, pool_figures

STATEMENT_PAGE_SIZE = 50


def _require_director_or_admin(user) -> None:
    if not roles.manages_programmes(user):
        raise PermissionDenied


@login_required
@require_GET
def pool_list(request):
    _require_director_or_admin(request.user)
    pools = list(FundPool.objects.visible_to(request.user).select_related("programme", "system"))
    figures = figures_for_pools(pools)
    rows = [(pool, figures[pool.pk]) for pool in pools]
    return render(request, "allocations/pool_list.html", {"rows": rows})


@login_required
@require_GET
def pool_detail(request, pk):
    _require_director_or_admin(request.user)
    pool = get_object_or_404(FundPool.objects.visible_to(request.user).select_related("programme", "system"), pk=pk)
    form = StatementFilterForm(request.GET or None)
    window = form.cleaned_data if form.is_bound and form.is_valid() else {}
    statement = account_statement(
        ledger.pool_account(pool), start=window.get("start"), end=window.get("end"), as_of=window.get("as_of")
    )
    page = Paginator(statement.movements, STATEMENT_PAGE_SIZE).get_page(request.GET.get("page"))
    # The allocations behind its committed, consumed, returned and forfeited hours, each linked to its own page
    # (which the pool's directors and admins may open). Each pager keeps the other's page.
    allocations = pool.allocations.select_related("holder").order_by("scheduler_account", "pk")
    allocation_page = Paginator(allocations, STATEMENT_PAGE_SIZE).get_page(request.GET.get("allocation_page"))
    return render(
        request,
        "allocations/pool_detail.html",
        {
            "pool": pool,
            "figures": pool_figures(pool, as_of=window.get("as_of")),
            "form": form,
            "statement": statement,
            "page": page,
            "allocation_page": allocation_page,
            "allocation_figures": figures_for_allocations(allocation_page.object_list, as_of=window.get("as_of")),
            "query": query_without(request, "page"),
            "allocation_query": query_without(request, "allocation_page"),
            "can_manage": roles.is_admin(request.user),
        },
    )


def _pool_movement(request, pk, *, form_class, title, button, perform, success):
    """The shared shape of deposit, withdraw and transfer: a form, one service call, a message, a redirect."""
    if not roles.is_admin(request.user):
        raise PermissionDenied
    pool = get_object_or_404(FundPool.objects.visible_to(request.user).select_related("programme", "system"), pk=pk)
    extra = {"source": pool} if form_class is TransferForm else {}
    form = form_class(request.POST or None, **extra)
    if request.method == "POST" and form.is_valid():
        try:
            txn = perform(pool, form)
        except ledger.LedgerError as error:
            form.add_ledger_error(error)
        else:
            messages.success(request, success(form.cleaned_data["hours"], txn))
            return redirect("allocations:pool-detail", pk=pool.pk)
    return render(
        request,
        "allocations/pool_movement_form.html",
        {
            "pool": pool,
            "form": form,
            "title": title,
            "button": button,
            "available": pool_figures(pool).available,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def pool_deposit(request, pk):
    return _pool_movement(
        request,
        pk,
        form_class=PoolMovementForm,
        title="Deposit GPU-hours",
        button="Deposit",
        perform=lambda pool, form: ledger.deposit_to_pool(
            pool=pool,
            seconds=form.cleaned_data["hours"],
            actor=request.user,
            reason=form.cleaned_data["reason"],
            idempotency_key=form.cleaned_data["idempotency_key"],
            effective_at=form.effective_at,
        ),
        success=lambda seconds, txn: f"{ledger.format_gpu_hours(seconds)} GPU-hours deposited",
    )


@login_required
@require_http_methods(["GET", "POST"])
def pool_withdraw(request, pk):
    return _pool_movement(
        request,
        pk,
        form_class=PoolMovementForm,
        title="Withdraw unused GPU-hours",
        button="Withdraw",
        perform=lambda pool, form: ledger.withdraw_from_pool(
            pool=pool,
            seconds=form.cleaned_data["hours"],
            actor=request.user,
            reason=form.cleaned_data["reason"],
            idempotency_key=form.cleaned_data["idempotency_key"],
            effective_at=form.effective_at,
        ),
        success=lambda seconds, txn: f"{ledger.format_gpu_hours(seconds)} GPU-hours withdrawn",
    )


@login_required
@require_http_methods(["GET", "POST"])
def pool_transfer(request, pk):
    return _pool_movement(
        request,
        pk,
        form_class=TransferForm,
        title="Transfer GPU-hours to another pool",
        button="Transfer",
        perform=lambda pool, form: ledger.transfer_between_pools(
            source=pool,
            destination=form.cleaned_data["destination"],
            seconds=form.cleaned_data["hours"],
            actor=request.user,
            reason=form.cleaned_data["reason"],
            idempotency_key=form.cleaned_data["idempotency_key"],
            effective_at=form.effective_at,
        ),
        success=lambda seconds, txn: f"{ledger.format_gpu_hours(seconds)} GPU-hours transferred",
    )


@login_required
@require_GET
def programme_dashboard(request, pk):
    """Per pool: figures, burn-down and run-out forecast; per call: awards and proposals by state."""
    _require_director_or_admin(request.user)
    programme = get_object_or_404(Programme.objects.visible_to(request.user), pk=pk)
    return render(
        request,
        "allocations/programme_dashboard.html",
        {"dashboard": dashboard_of(programme), "forecast_window_days": FORECAST_WINDOW_DAYS},
    )
