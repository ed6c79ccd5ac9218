"""Usage pages: operators manage ingest tokens, upload, see batches (and mark those no task will read again as dealt
with), rejected rows and unmatched usage, and replay; admins also assign unmatched usage. PIs (and the programme's
directors) see an allocation's usage over time, per member and per job, and download its statement; its
co-investigators see the same, but of the jobs their own share (team.py). Views parse, call a service or selector,
render.

Operators are admins and, for their own systems, the systems' technical assessors (system staff).
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.paginator import Paginator
from django.db.models import Case, Max, Sum, When
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from airr_portal import roles
from allocations import ledger
from allocations.dashboards import allocation_report, usage_per_member
from allocations.forms import StatementFilterForm
from allocations.models import Allocation, IngestBatch, IngestToken, JobRecord, LedgerTransaction, UsageReport
from allocations.querystrings import query_without
from allocations.selectors import account_statement
from allocations.statements import statement_csv_filename, statement_csv_rows
from programmes.models import System

from .forms import (
    AssignAccountForm,
    DealtWithForm,
    IngestTokenForm,
    MemberUsernamesForm,
    UploadForm,
    fields_too_large,
    file_too_large,
    too_many_fields,
    too_many_files,
)
from .ingest import declared_size, receive_payload, reopen_failed_batch
from .reconcile import RECONCILIATION_CAUSE, failing_reconciliations
from .services import (
    UsageError,
    assign_unmatched_account,
    assignment_refusal,
    create_ingest_token,
    dealt_with_refusal,
    enqueue_ingest,
    mark_batch_dealt_with,
    needing_attention,
    needs_attention,
    replay_rejected_rows,
    revoke_ingest_token,
    stall_of,
    unmatched_accounts,
)
from .team import co_investigators, own_usernames, records_usernames, set_member_usernames, usernames_by_member

PAGE_SIZE = 50


def _operated_systems(user):
    """The systems the user operates: every system for an admin, their own for a system's staff (its technical
    assessors); PermissionDenied for everyone else. Operators make their systems' ingest tokens, upload, read
    batches and replay rejected rows; assigning unmatched usage to an allocation is for admins alone."""
    if roles.is_admin(user):
        return System.objects.all()
    if roles.is_technical_assessor(user):
        return System.objects.filter(assessors=user)
    raise PermissionDenied


def _operated_batches(user):
    """The ingest batches of the systems the user operates (PermissionDenied for a user who operates none)."""
    return IngestBatch.objects.filter(system__in=_operated_systems(user)).select_related("system")


def _count(number: int, thing: str) -> str:
    return f"{number:,} {thing}{'' if number == 1 else 's'}"


def _require_admin(user) -> None:
    if not roles.is_admin(user):
        raise PermissionDenied


@login_required
@require_GET
def token_list(request):
    """The operated systems' tokens, paged: the active ones first (a system may have thousands revoked), each group
    newest first."""
    systems = _operated_systems(request.user)
    tokens = (
        IngestToken.objects.filter(system__in=systems)
        .select_related("system", "created_by")
        .order_by(Case(When(revoked_at__isnull=True, then=0), default=1), "-created_at", "-pk")
    )
    page = Paginator(tokens, PAGE_SIZE).get_page(request.GET.get("page"))
    active = tokens.filter(revoked_at__isnull=True).count()
    return render(request, "allocations/usage/token_list.html", {"page": page, "active": active})


@never_cache  # its answer shows the key, once
@login_required
@require_http_methods(["GET", "POST"])
def token_create(request):
    form = IngestTokenForm(request.POST or None, systems=_operated_systems(request.user))
    if request.method == "POST" and form.is_valid():
        try:
            token, key = create_ingest_token(
                system=form.cleaned_data["system"], name=form.cleaned_data["name"], actor=request.user
            )
        except UsageError as error:
            form.add_error("name", str(error))
        else:
            # Shown on this response only: the portal keeps just its hash.
            return render(request, "allocations/usage/token_created.html", {"token": token, "key": key})
    return render(request, "allocations/usage/token_form.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def token_revoke(request, pk):
    """GET asks to confirm (a cluster using the token stops reporting usage at once); POST revokes."""
    operated = IngestToken.objects.filter(system__in=_operated_systems(request.user))
    token = get_object_or_404(operated.select_related("system"), pk=pk)
    if request.method == "GET":
        if token.is_revoked:
            messages.success(request, f"The token '{token.name}' was revoked already")
            return redirect("usage:token-list")
        return render(request, "allocations/usage/token_revoke.html", {"token": token})
    revoke_ingest_token(token=token, actor=request.user)
    messages.success(request, f"The token '{token.name}' has been revoked: it no longer works")
    return redirect("usage:token-list")


@login_required
@require_GET
def batch_list(request):
    """Every batch, newest first, or (`?attention=yes`) only those waiting for an operator, which the page counts
    whichever is shown: among a cluster's hundreds of batches a day, one the beat gave up on is easily missed.
    Above them, each operated system whose reconciliation is failing: its batches are read, but not charged."""
    batches = _operated_batches(request.user)
    waiting = needing_attention(batches)
    attention_only = request.GET.get("attention") == "yes"
    page = Paginator(waiting if attention_only else batches, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "allocations/usage/batch_list.html",
        {
            "page": page,
            "failing": list(failing_reconciliations(_operated_systems(request.user))),
            "waiting": waiting.count(),
            "attention_only": attention_only,
            "query": "attention=yes" if attention_only else "",
            "given_up": {batch.pk for batch in page if stall_of(batch) == "given up"},
            "waiting_here": set(waiting.filter(pk__in=[batch.pk for batch in page]).values_list("pk", flat=True)),
        },
    )


@login_required
@require_GET
def variance(request):
    """Each account's latest usage report from its cluster against the ledger, flagged ones first."""
    reports = UsageReport.objects.filter(system__in=_operated_systems(request.user))
    latest = reports.values("system", "account").annotate(latest=Max("pk")).values("latest")
    shown = UsageReport.objects.filter(pk__in=latest)
    flagged_only = request.GET.get("flagged") == "yes"
    if flagged_only:
        shown = shown.filter(is_flagged=True)
    shown = shown.select_related("system", "allocation").order_by("-is_flagged", "system__name", "account")
    page = Paginator(shown, PAGE_SIZE).get_page(request.GET.get("page"))
    # A system's staff operate its usage without seeing its allocations' pages: their rows name the allocation
    # but link only to the pages they may open, never to a 404.
    openable = Allocation.objects.visible_to(request.user).filter(
        pk__in=[report.allocation_id for report in page if report.allocation_id]
    )
    return render(
        request,
        "allocations/usage/variance.html",
        {
            "page": page,
            "openable": set(openable.values_list("pk", flat=True)),
            "flagged_only": flagged_only,
            "query": "flagged=yes" if flagged_only else "",
            "tolerance": settings.USAGE_VARIANCE_TOLERANCE_PERCENT,
        },
    )


@login_required
@require_GET
def batch_detail(request, pk):
    batch = get_object_or_404(_operated_batches(request.user), pk=pk)
    return _batch_page(request, batch, DealtWithForm())


def _batch_page(request, batch: IngestBatch, dealt_with_form: DealtWithForm):
    rejected = Paginator(batch.rejected_rows.all(), PAGE_SIZE).get_page(request.GET.get("page"))
    stall = stall_of(batch)
    return render(
        request,
        "allocations/usage/batch_detail.html",
        {
            "batch": batch,
            "rejected": rejected,
            "can_replay": batch.rejected_rows.filter(replayed_at__isnull=True).exists(),
            "is_stalled": stall is not None and request.GET.get("queued") != "yes",
            "no_run_used_a_gpu": batch.without_gpus
            and batch.without_gpus == batch.new + batch.updated + batch.unchanged,
            "is_given_up": stall == "given up",
            "can_read": stall is not None,
            "can_read_again": batch.status == IngestBatch.Status.FAILED,
            "can_mark_dealt_with": request.GET.get("queued") != "yes" and needs_attention(batch),
            # Named `form` so that the page's error summary lists its errors.
            "form": dealt_with_form,
        },
    )


@login_required
@require_POST
def batch_read(request, pk):
    """Queue a batch to be read again: one whose reading was lost (the beat does it for a day, then leaves it
    here), or one that failed, after its system's settings or the size limit were changed."""
    batch = get_object_or_404(_operated_batches(request.user), pk=pk)
    reopen_failed_batch(batch, delimiter=batch.delimiter, columns=batch.columns)  # a failed one: received again
    if batch.status != IngestBatch.Status.RECEIVED:
        messages.error(request, "This batch has been read already: nothing was queued")
        return redirect("usage:batch-detail", pk=batch.pk)
    enqueue_ingest(batch)
    messages.success(request, "Batch queued to be read again: refresh this page to see its counts")
    # Until it is read, its page would still call its reading lost: not on the page that says it is queued.
    return redirect(reverse("usage:batch-detail", args=[batch.pk]) + "?queued=yes")


@login_required
@require_POST
def batch_dealt_with(request, pk):
    """Mark a batch no task will read again as needing nothing more, with the operator's note of why: it stops
    counting as needing attention, so that the count keeps meaning something. Nothing of it is deleted."""
    batch = get_object_or_404(_operated_batches(request.user), pk=pk)
    form = DealtWithForm(request.POST)
    if not form.is_valid():
        # Marked, or read, since the page was opened: it no longer shows the form, so no error could point at it.
        if (refusal := dealt_with_refusal(batch)) is not None:
            messages.error(request, refusal)
            return redirect("usage:batch-detail", pk=batch.pk)
        return _batch_page(request, batch, form)
    try:
        mark_batch_dealt_with(batch=batch, note=form.cleaned_data["note"], actor=request.user)
    except UsageError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, "Batch marked as dealt with: it no longer counts as needing attention")
    return redirect("usage:batch-detail", pk=batch.pk)


@login_required
@require_POST
def batch_replay(request, pk):
    batch = get_object_or_404(_operated_batches(request.user), pk=pk)
    try:
        recorded, still = replay_rejected_rows(batch=batch, actor=request.user)
    except UsageError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{_count(recorded, 'row')} recorded; {still} still rejected")
    return redirect("usage:batch-detail", pk=batch.pk)


# What a multipart body holds beside the file: its boundaries and headers, and a few short fields.
UPLOAD_FIELDS_ALLOWANCE = 64 * 1024


# The CSRF check reads the whole body to find its token, so _receive_upload makes it once the size is known to be
# within the limit; a refusal changes nothing, and needs none.
@csrf_exempt
@login_required
@require_http_methods(["GET", "POST"])
def upload(request):
    """The upload form; a body declared over the limit is refused (413, as the API answers) before it is read, and
    one with more fields or files than Django reads is refused (400) with the form too."""
    systems = _operated_systems(request.user)
    if request.method == "POST" and declared_size(request) > settings.INGEST_MAX_BYTES + UPLOAD_FIELDS_ALLOWANCE:
        return _upload_refused(request, UploadForm.refusing(file_too_large(), field="file", systems=systems))
    # Each of these is raised while the body is read, by the CSRF check or the form, before anything is stored:
    # Django's answer would be a bare 400 page.
    try:
        return _receive_upload(request, systems)
    except RequestDataTooBig:
        # Fields other than the file over DATA_UPLOAD_MAX_MEMORY_SIZE, as when a script sends the file as a field.
        return _upload_refused(request, UploadForm.refusing(fields_too_large(), field=None, systems=systems))
    except TooManyFieldsSent:
        refusal = UploadForm.refusing(too_many_fields(), field=None, systems=systems)
        return _upload_refused(request, refusal, status=400)
    except TooManyFilesSent:
        refusal = UploadForm.refusing(too_many_files(), field=None, systems=systems)
        return _upload_refused(request, refusal, status=400)


def _upload_refused(request, form: UploadForm, *, status: int = 413):
    return render(request, "allocations/usage/upload.html", {"form": form}, status=status)


@csrf_protect
def _receive_upload(request, systems):
    form = UploadForm(request.POST or None, request.FILES or None, systems=systems)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        columns = [name.strip() for name in data["columns"].split(",") if name.strip()]
        outcome = receive_payload(
            system=data["system"],
            payload=data["file"],
            source=IngestBatch.Source.UPLOAD,
            uploaded_by=request.user,
            delimiter=data["delimiter"] or None,
            columns=columns or None,
        )
        if outcome.batch.status == IngestBatch.Status.RECEIVED:
            # Large files are read by a worker; the batch page shows its counts when it is done. The same bytes
            # still waiting to be read (their reading lost) are queued again: a worker reads a batch once.
            enqueue_ingest(outcome.batch)
            messages.success(request, "File received: its rows are being read")
        else:
            messages.success(request, "This file was already received: nothing changed")
        return redirect("usage:batch-detail", pk=outcome.batch.pk)
    if form.has_error("file", "too_large"):
        return _upload_refused(request, form)
    return render(request, "allocations/usage/upload.html", {"form": form})


@login_required
@require_GET
def unmatched(request):
    systems = _operated_systems(request.user)
    page = Paginator(unmatched_accounts(system_ids=systems), PAGE_SIZE).get_page(request.GET.get("page"))
    # The systems with an allocation still open to an assignment (see assign_unmatched_account).
    assignable = set(
        Allocation.objects.filter(system__in={row["system"] for row in page})
        .exclude(state__in=Allocation.ENDED_STATES)
        .values_list("system", flat=True)
    )
    for row in page:
        row["assignable"] = row["system"] in assignable
    return render(
        request,
        "allocations/usage/unmatched.html",
        {"page": page, "can_assign": roles.is_admin(request.user)},
    )


@login_required
@require_POST
def unmatched_assign(request, slug):
    """The unmatched page's choice first shows what the assignment will do; it is made when that is confirmed."""
    _require_admin(request.user)
    system = get_object_or_404(System, slug=slug)
    form = AssignAccountForm(request.POST, system=system)
    if not form.is_valid():
        if "account" in form.errors:
            messages.error(request, "The scheduler account to assign is missing or longer than 64 characters")
        else:
            messages.error(request, form.errors["allocation"][0])
        return redirect("usage:unmatched")
    account = form.cleaned_data["account"]
    allocation = form.cleaned_data["allocation"]
    if "confirm" not in request.POST:
        held = unmatched_accounts(system_ids=[system.pk]).filter(account=account).first()
        if held is None:
            messages.error(request, f"No usage of '{account}' is held on {system.name}: it may have been assigned")
            return redirect("usage:unmatched")
        # Not asked to confirm what would be refused: an ended allocation, an account another owns or was given.
        if (problem := assignment_refusal(system=system, account=account, allocation=allocation)) is not None:
            messages.error(request, problem)
            return redirect("usage:unmatched")
        context = {"system": system, "account": account, "allocation": allocation, "held": held}
        return render(request, "allocations/usage/unmatched_assign.html", context)
    try:
        moved = assign_unmatched_account(system=system, account=account, allocation=allocation, actor=request.user)
    except UsageError as error:
        messages.error(request, str(error))
    else:
        moved_records = _count(moved, "job record")
        messages.success(request, f"{moved_records} of '{account}' assigned to {allocation.scheduler_account}")
    return redirect("usage:unmatched")


@login_required
@require_GET
def allocation_list(request):
    allocations = Allocation.objects.visible_to(request.user).select_related("pool__system")
    page = Paginator(allocations, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "allocations/usage/allocation_list.html", {"page": page})


def _visible_allocation(user, pk) -> Allocation:
    """The allocation if the user may see it (holder, accepted team member, its directors, admins), else 404."""
    try:
        return Allocation.objects.visible_to(user).select_related("pool__system", "holder").get(pk=pk)
    except Allocation.DoesNotExist:
        raise Http404 from None


def _statement_form(request) -> StatementFilterForm:
    """Bound only when a date was given, so paging through jobs never shows the statement's errors."""
    asked = any(key.startswith(("start_", "end_", "as_of_")) for key in request.GET)
    return StatementFilterForm(request.GET if asked else None)


def _statement(allocation: Allocation, form: StatementFilterForm):
    window = form.cleaned_data if form.is_bound and form.is_valid() else {}
    return account_statement(
        ledger.allocation_account(allocation),
        start=window.get("start"),
        end=window.get("end"),
        as_of=window.get("as_of"),
    )


def _usage_movement(allocation: Allocation, transaction_id: str | None) -> LedgerTransaction | None:
    """The allocation's usage transaction of that id (made by a reconciliation run), or None."""
    # ASCII digits, and few enough for a bigint: int() refuses other digits (²) and over 4,300 of them.
    if not (transaction_id and transaction_id.isascii() and transaction_id.isdigit() and len(transaction_id) <= 18):
        return None
    return LedgerTransaction.objects.filter(
        pk=transaction_id, cause_type=RECONCILIATION_CAUSE, entries__account__allocation=allocation
    ).first()


@login_required
@require_GET
def allocation_usage(request, pk):
    allocation = _visible_allocation(request.user, pk)
    # A co-investigator sees the allocation's figures, and of its jobs their own.
    usernames = own_usernames(request.user, allocation)
    jobs = JobRecord.objects.filter(allocation=allocation).order_by("-start", "job_id_raw")
    if usernames is not None:
        jobs = jobs.filter(user__in=usernames)
    # A usage movement of the statement leads here: its jobs, each with its part of it (their JobCharge rows).
    movement = _usage_movement(allocation, request.GET.get("transaction"))
    if movement is not None:
        jobs = jobs.filter(charges__transaction=movement).annotate(movement_seconds=Sum("charges__seconds"))
    form = _statement_form(request)
    statement = _statement(allocation, form)
    report = allocation_report(allocation)
    # Each pager keeps the other's page; the statement's CSV link needs neither. A movement's link, and the way
    # back to every job, keep the statement as it is shown and open the jobs at their first page.
    return render(
        request,
        "allocations/usage/allocation_usage.html",
        {
            "allocation": allocation,
            "report": report,
            # Refunds and adjustments by hand are no member's share: only those who see every member see them.
            "per_member": usage_per_member(
                allocation, usernames=usernames, used_by_hand=report.used_by_hand if usernames is None else 0
            ),
            "own_usernames": usernames,
            "records_usernames": records_usernames(request.user, allocation),
            "page": Paginator(jobs.with_charged_seconds(), PAGE_SIZE).get_page(request.GET.get("page")),
            "movement": movement,
            "form": form,
            "statement": statement,
            "statement_page": Paginator(statement.movements, PAGE_SIZE).get_page(request.GET.get("statement_page")),
            "query": query_without(request, "page", "statement_page"),
            "jobs_query": query_without(request, "page"),
            "statement_query": query_without(request, "statement_page"),
            "movement_query": query_without(request, "page", "transaction"),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def allocation_members(request, pk):
    """The PI records which scheduler usernames are whose, so that each co-investigator sees their own jobs."""
    allocation = _visible_allocation(request.user, pk)
    if not records_usernames(request.user, allocation):
        raise PermissionDenied
    members = co_investigators(allocation)
    form = MemberUsernamesForm(
        request.POST if request.method == "POST" else None,
        allocation=allocation,
        members=members,
        recorded=usernames_by_member(allocation),
    )
    if request.method == "POST" and form.is_valid():
        set_member_usernames(allocation=allocation, usernames=form.usernames)
        messages.success(request, "The team's scheduler usernames are saved")
        return redirect("usage:allocation-usage", pk=allocation.pk)
    context = {"allocation": allocation, "form": form, "members": members}
    return render(request, "allocations/usage/allocation_members.html", context)


@login_required
@require_GET
def allocation_statement(request, pk):
    """The allocation's statement for the window asked for, as CSV in GPU-hours: the page's figures, row by row."""
    allocation = _visible_allocation(request.user, pk)
    form = _statement_form(request)
    if form.is_bound and not form.is_valid():
        # The page shows what is wrong with the dates, in its error summary.
        return redirect(f"{reverse('usage:allocation-usage', args=[allocation.pk])}?{request.GET.urlencode()}")
    statement = _statement(allocation, form)
    response = StreamingHttpResponse(statement_csv_rows(statement), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{statement_csv_filename(statement)}"'
    return response
