"""Report exports: ask for one (checked, recorded, queued after commit), build it (in the `reports` worker), and
delete the files of expired ones. Pages, the API and the tasks all call these.

Who: admins report on everything; programme directors on their own programmes' pools only; nobody else.
An export is read as of its creation (or an earlier moment the requester gives), so building it again, today or
next year, writes the same numbers.
"""

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import OperationalError, transaction
from django.http import FileResponse
from django.utils import timezone

from airr_portal import roles
from airr_portal.queuing import queue_after_commit
from airr_portal.validators import EARLIEST_DATE
from allocations.models import ReportExport
from allocations.selectors import end_of
from programmes.models import Programme

from . import exports
from .selectors import GROUPINGS, TIME_GROUPINGS, ReportScope, usage_totals

logger = logging.getLogger(__name__)

EXPORT_FOLDER = "reports"


class ReportError(ValueError):
    """Parameters a report cannot be built from; `errors` maps each field to messages for the person."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(message for messages in errors.values() for message in messages))
        self.errors = errors


def can_build_reports(user) -> bool:
    return roles.manages_programmes(user)


def reportable_programmes(user):
    """The programmes a user may choose from: all for admins, their own for directors."""
    return Programme.objects.visible_to(user).order_by("name")


@dataclass(frozen=True)
class ReportParameters:
    kind: str
    groupings: list[str]
    start: date
    end: date
    fmt: str
    programme_ids: list[int]
    as_of: date | datetime | None = None

    @property
    def ordered_groupings(self) -> list[str]:
        """The groupings in the report's own order (GROUPINGS), whatever order they were asked for in."""
        return [name for name in GROUPINGS if name in self.groupings]


def check_report_parameters(user, parameters: ReportParameters) -> dict[str, list[str]]:
    """Every reason the parameters cannot make a report, by field; empty when they can."""
    errors: dict[str, list[str]] = {}

    def refuse(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    today = timezone.localdate()
    if parameters.kind not in ReportExport.Kind.values:
        refuse("kind", "Choose what the report holds")
    if parameters.fmt not in ReportExport.Format.values:
        refuse("format", "Choose CSV or XLSX")
    if parameters.kind == ReportExport.Kind.TOTALS:
        if not parameters.groupings:
            refuse("groupings", "Choose at least one way to group the totals")
        elif unknown := [name for name in parameters.groupings if name not in GROUPINGS]:
            refuse("groupings", f"There is no grouping called {', '.join(unknown)}")
        elif all(name in parameters.groupings for name in TIME_GROUPINGS):
            refuse("groupings", "Group by month or by week, not both")
    if parameters.kind == ReportExport.Kind.JOBS and parameters.fmt == ReportExport.Format.XLSX:
        refuse("format", "The export of every job is CSV only: it can hold more rows than a spreadsheet")
    if parameters.start and parameters.end and parameters.end < parameters.start:
        refuse("end", "The end date must be on or after the start date")
    if parameters.start and parameters.start > today:
        refuse("start", "The start date must be today or in the past")
    if parameters.start and parameters.start < EARLIEST_DATE:
        refuse("start", f"The start date must be in {EARLIEST_DATE.year} or later")
    if parameters.end and parameters.end > today + timedelta(days=366 * 10):
        refuse("end", "The end date must be within ten years from today")
    as_of = parameters.as_of
    as_of_day = as_of.date() if isinstance(as_of, datetime) else as_of
    if as_of_day is not None and as_of_day > today:
        refuse("as_of", "The as-of date must be today or in the past")
    if as_of_day is not None and as_of_day < EARLIEST_DATE:
        refuse("as_of", f"The as-of date must be in {EARLIEST_DATE.year} or later")
    if parameters.programme_ids:
        allowed = set(reportable_programmes(user).values_list("pk", flat=True))
        if not set(parameters.programme_ids) <= allowed:
            refuse("programmes", "You can only report on programmes you direct")
    return errors


def read_as_of(as_of: date | datetime | None, *, now: datetime) -> datetime:
    """The moment a report reads the ledger as of: the end of the given day, but never later than now (an as-of
    of today means this moment, or hours charged later today would change an export said to be reproducible)."""
    return now if as_of is None else min(end_of(as_of), now)


def request_report_export(*, user, parameters: ReportParameters) -> ReportExport:
    """Record an export and queue its building once the transaction commits; raises ReportError if it cannot."""
    if errors := check_report_parameters(user, parameters):
        raise ReportError(errors)
    from allocations.tasks import report_export_task

    now = timezone.now()
    as_of = read_as_of(parameters.as_of, now=now)
    groupings = parameters.ordered_groupings if parameters.kind == ReportExport.Kind.TOTALS else []
    with transaction.atomic():
        export = ReportExport.objects.create(
            requested_by=user,
            kind=parameters.kind,
            groupings=groupings,
            start_date=parameters.start,
            end_date=parameters.end,
            programme_ids=sorted(set(parameters.programme_ids)),
            format=parameters.fmt,
            as_of=as_of,
            created_at=now,
            expires_at=now + timedelta(days=settings.REPORT_EXPORT_EXPIRY_DAYS),
        )

        def fail() -> None:
            # Nothing would ever build it: it fails now, saying so, rather than waiting for ever.
            ReportExport.objects.filter(pk=export.pk, state=ReportExport.State.PENDING).update(
                state=ReportExport.State.FAILED,
                finished_at=timezone.now(),
                error="It could not be queued: the task queue is unavailable. Ask for it again in a few minutes.",
            )

        queue_after_commit(report_export_task, export.pk, if_not_queued=fail)
    if transaction.get_autocommit():
        export.refresh_from_db()  # queued, or failed to be
    return export


def export_path(export: ReportExport) -> Path:
    return Path(settings.MEDIA_ROOT) / export.file_path


_CONTENT_TYPES = {
    ReportExport.Format.CSV: "text/csv; charset=utf-8",
    ReportExport.Format.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def export_file_response(export: ReportExport) -> FileResponse:
    """The built file as a download; CSV said to be UTF-8, so that a pool named with a dash reads right."""
    return FileResponse(
        open(export_path(export), "rb"),  # noqa: SIM115 (the response closes it)
        as_attachment=True,
        filename=export.filename,
        content_type=_CONTENT_TYPES.get(export.format),
    )


def is_gone(export: ReportExport) -> bool:
    """Nothing to download any more: expired, or built but its file lost (the beat deleted it, a disk was wiped)."""
    return export.has_expired() or (export.is_ready and not export_path(export).exists())


def build_report_export(*, export_id: int) -> ReportExport:
    """Build the export's file; safe to run twice (a finished export is left alone, a half-built one rebuilt).

    The file is written beside its final name and renamed when complete, so a download never sees half a file.
    """
    export = ReportExport.objects.select_related("requested_by").get(pk=export_id)
    if export.is_finished or export.has_expired():
        return export
    _update(export, state=ReportExport.State.RUNNING, progress=0)
    relative = Path(EXPORT_FOLDER) / f"{export.pk}.{export.format}"
    final = Path(settings.MEDIA_ROOT) / relative
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".part")
    scope = ReportScope.for_user(export.requested_by, export.programme_ids)
    file_notes = exports.notes(export, _scope_text(scope, export))
    try:
        if export.kind == ReportExport.Kind.JOBS:
            rows = exports.write_jobs(
                export,
                scope,
                partial,
                file_notes=file_notes,
                progress=lambda percent: _update(export, progress=min(percent, 99)),
            )
        else:
            report = usage_totals(
                groupings=export.groupings,
                start=export.start_date,
                end=export.end_date,
                as_of=export.as_of,
                scope=scope,
            )
            _update(export, progress=70)
            rows = exports.write_totals(report, partial, fmt=export.format, file_notes=file_notes)
        partial.replace(final)
    except OperationalError:
        partial.unlink(missing_ok=True)
        raise  # transient: the task retries it
    except Exception:
        partial.unlink(missing_ok=True)
        logger.exception("report export %s failed", export.pk)
        _update(
            export,
            state=ReportExport.State.FAILED,
            error="The report could not be built. Try again, or contact support with its number.",
            finished_at=timezone.now(),
        )
        return export
    _update(
        export,
        state=ReportExport.State.DONE,
        progress=100,
        row_count=rows,
        file_path=str(relative),
        finished_at=timezone.now(),
    )
    return export


def give_up_report_export(*, export_id: int) -> None:
    """Mark an export that could not be built after its retries as failed (a finished one is left alone)."""
    ReportExport.objects.filter(pk=export_id).exclude(
        state__in=[ReportExport.State.DONE, ReportExport.State.FAILED]
    ).update(
        state=ReportExport.State.FAILED,
        error="The report could not be built: the database was unavailable. Try again later.",
        finished_at=timezone.now(),
    )


def _update(export: ReportExport, **changes) -> None:
    # Written at once (no surrounding transaction), so the status page sees the progress as it moves.
    ReportExport.objects.filter(pk=export.pk).update(**changes)
    for name, value in changes.items():
        setattr(export, name, value)


def _scope_text(scope: ReportScope, export: ReportExport) -> str:
    if scope.pool_ids is None:
        return "Every programme, pool and system"
    names = list(
        Programme.objects.filter(pools__in=scope.pool_ids).distinct().order_by("name").values_list("name", flat=True)
    )
    if not names:
        return "No fund pools: the requester may see none"
    return "Fund pools of " + ", ".join(names)


def delete_expired_report_exports(*, now: datetime | None = None) -> int:
    """Delete the files of exports past their expiry (the rows stay, so their pages say "expired")."""
    now = now or timezone.now()
    deleted = 0
    for export in ReportExport.objects.filter(expires_at__lte=now).exclude(file_path=""):
        export_path(export).unlink(missing_ok=True)
        ReportExport.objects.filter(pk=export.pk).update(file_path="")
        deleted += 1
    return deleted
