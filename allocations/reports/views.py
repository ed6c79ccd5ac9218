"""Report pages: the builder (form and the user's recent exports), an export's status page with its progress bar,
and the download. Admins and programme directors only; an export is seen and downloaded by whoever asked for it
(and admins), its file served through this check, never from static."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from allocations.models import ReportExport

from .forms import ReportForm
from .selectors import GROUPINGS
from .services import can_build_reports, export_file_response, is_gone, request_report_export

RECENT_EXPORTS = 10


def _require_report_builder(user) -> None:
    if not can_build_reports(user):
        raise PermissionDenied


def _export_for(request, pk) -> ReportExport:
    _require_report_builder(request.user)
    return get_object_or_404(ReportExport.objects.visible_to(request.user).select_related("requested_by"), pk=pk)


@login_required
@require_http_methods(["GET", "POST"])
def report_builder(request):
    _require_report_builder(request.user)
    form = ReportForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        export = request_report_export(user=request.user, parameters=form.parameters())
        return redirect("reports:export-detail", pk=export.pk)
    recent = ReportExport.objects.filter(requested_by=request.user)[:RECENT_EXPORTS]
    return render(
        request,
        "allocations/reports/builder.html",
        {"form": form, "recent": recent, "grouping_names": GROUPINGS},
    )


def _export_page(request, export: ReportExport, *, gone: bool):
    return render(
        request,
        "allocations/reports/export_detail.html",
        {"export": export, "expired": gone, "groupings": [GROUPINGS[name] for name in export.groupings]},
        status=410 if gone else 200,
    )


@login_required
@require_GET
def export_detail(request, pk):
    export = _export_for(request, pk)
    return _export_page(request, export, gone=is_gone(export))


@login_required
@require_GET
def export_download(request, pk):
    export = _export_for(request, pk)
    if is_gone(export):
        return _export_page(request, export, gone=True)
    if not export.is_ready:
        return redirect("reports:export-detail", pk=export.pk)
    return export_file_response(export)
