"""Report files: the small grouped results shaped with pandas into CSV or XLSX, and every job record streamed to
CSV without holding the result in memory (COPY on PostgreSQL, a server-side cursor elsewhere).

Each file says what it is: a CSV starts with lines beginning `#` (the window, the as-of time, the grouping, the
units and what each column means) before its header row; an XLSX has the table on a `Report` sheet and the same
notes on a `Notes` sheet. Figures are GPU-hours with two decimals, converted once from the ledger's whole
GPU-seconds; the totals row is converted from the exact total, so it may differ by a hundredth per row from the
sum of the rounded rows above it.
"""

import csv
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from django.conf import settings
from django.db import connection
from django.utils import timezone

from allocations.downloads import FORMULA_STARTS, spreadsheet_safe
from allocations.ledger import seconds_to_hours
from allocations.models import ReportExport

from .selectors import (
    GROUPINGS,
    MANUAL_ADJUSTMENTS,
    MEASURES,
    ReportScope,
    TotalsReport,
    allocations_in_scope,
    job_records_charged,
    measures_for,
)

TOTAL = "Total"
JOB_COLUMNS = {
    "system": "The system's slug",
    "programme": "The programme of the allocation's fund pool",
    "pool": "The allocation's fund pool",
    "scheduler_account": "The allocation's scheduler (Slurm) account",
    "allocation_id": "The allocation's number in the portal",
    "user": "The scheduler user who ran the job",
    "job_id": "The job's id as sacct prints it (JobID)",
    "job_id_raw": "JobIDRaw",
    "state": "The job's state as last reported",
    "start": "When the job started (UTC)",
    "end": "When it ended (UTC); empty while it runs",
    "gpus": "GPUs allocated",
    "elapsed_seconds": "Run time in seconds as last reported",
    "charged_gpu_hours": "GPU-hours the ledger had charged for the job by the as-of time",
}
# Allocations per COPY: the export advances its progress bar after each slice.
JOB_SLICES = 20


def _moment(value: datetime) -> str:
    return timezone.localtime(value).strftime("%-d %B %Y %H:%M:%S %Z")


def notes(export: ReportExport, scope_text: str) -> list[tuple[str, str]]:
    """What the file holds, for the `#` lines of a CSV or the Notes sheet of an XLSX."""
    lines = [
        ("Report", f"AIRR Portal: {export.get_kind_display()}"),
        ("Window", f"{export.start_date:%-d %B %Y} to {export.end_date:%-d %B %Y}, inclusive"),
        (
            "As of",
            f"{_moment(export.as_of)} ({export.as_of.astimezone(UTC).isoformat()}): only ledger entries recorded "
            "by then are counted, so this export made again with the same as-of gives the same numbers",
        ),
        ("Scope", scope_text),
        ("Exported by", f"{export.requested_by.email}, export {export.pk}"),
    ]
    if export.kind == ReportExport.Kind.JOBS:
        lines += [
            ("Rows", "One per job record that started in the window and had been charged by the as-of time"),
            ("Units", "charged_gpu_hours in GPU-hours (2 decimals) converted from whole GPU-seconds"),
            *((f"Column {name}", meaning) for name, meaning in JOB_COLUMNS.items()),
        ]
        return lines
    groupings = ", ".join(GROUPINGS[name] for name in export.groupings)
    lines += [
        ("Grouping", groupings),
        (
            "Time",
            "The window and any month or week use the date each movement took effect in the ledger "
            f"({settings.TIME_ZONE}); usage takes effect when it is charged, shortly after the job reports",
        ),
        ("Units", "GPU-hours, 2 decimals, converted once from the ledger's whole GPU-seconds"),
        *((f"Column {measure}", MEASURES[measure]) for measure in measures_for(export.groupings)),
        ("Total", "The last row: each column's exact total, converted once"),
    ]
    if "user" in export.groupings:
        lines.append(
            (
                "Users",
                "Usage is attributed to the scheduler user of each job; refunds and adjustments made by staff belong "
                f"to no job and are shown as '{MANUAL_ADJUSTMENTS}'. A user has no award, so there is no awarded "
                "column",
            )
        )
    return lines


def totals_frame(report: TotalsReport) -> pd.DataFrame:
    """The table as a file shows it: a column per grouping, one per measure in GPU-hours, and a totals row."""
    labels = [GROUPINGS[name] for name in report.groupings]
    records = [
        [*map(spreadsheet_safe, key), *(seconds_to_hours(values[measure]) for measure in report.measures)]
        for key, values in report.rows
    ]
    totals = report.totals
    records.append(
        [TOTAL, *([""] * (len(labels) - 1)), *(seconds_to_hours(totals[measure]) for measure in report.measures)]
    )
    return pd.DataFrame(records, columns=[*labels, *(f"{measure}_gpu_hours" for measure in report.measures)])


def write_totals(report: TotalsReport, path: Path, *, fmt: str, file_notes: list[tuple[str, str]]) -> int:
    """Write the report's table to `path`; returns its row count, the totals row not included."""
    frame = totals_frame(report)
    if fmt == ReportExport.Format.XLSX:
        with pd.ExcelWriter(path, engine="openpyxl") as writer:
            frame.to_excel(writer, sheet_name="Report", index=False)
            pd.DataFrame(file_notes, columns=["Item", "Meaning"]).to_excel(writer, sheet_name="Notes", index=False)
            sheet = writer.sheets["Report"]
            for column in sheet.iter_cols(min_col=len(report.groupings) + 1, min_row=2):
                for cell in column:
                    cell.number_format = "#,##0.00"
    else:
        with open(path, "w", newline="", encoding="utf-8") as file:
            _write_comment_lines(file, file_notes)
            frame.to_csv(file, index=False)
    return len(report.rows)


def _write_comment_lines(file, file_notes) -> None:
    for name, text in file_notes:
        line = f"{name}: {text}".replace("\r", " ").replace("\n", " ")
        file.write(f"# {line}\n")


def write_jobs(
    export: ReportExport, scope: ReportScope, path: Path, *, file_notes, progress: Callable[[int], None]
) -> int:
    """Stream every charged job record of the window into a CSV; returns the number of rows written.

    The allocations in scope are read in slices, each one query in (allocation, start) order, and the progress
    callback hears the percentage after each; memory holds one slice's cursor buffer, never the result.
    """
    allocation_ids = allocations_in_scope(scope)
    size = max(1, -(-len(allocation_ids) // JOB_SLICES))
    slices = [allocation_ids[i : i + size] for i in range(0, len(allocation_ids), size)]
    rows = 0
    with open(path, "w", newline="", encoding="utf-8") as file, _without_jit():
        _write_comment_lines(file, file_notes)
        file.write(",".join(JOB_COLUMNS) + "\n")
        for done, ids in enumerate(slices, start=1):
            records = job_records_charged(
                allocation_ids=ids, start=export.start_date, end=export.end_date, as_of=export.as_of
            )
            if connection.vendor == "postgresql":
                rows += _copy_jobs(records, file)
            else:
                rows += _write_jobs(records, file)
            progress(round(100 * done / len(slices)))
    return rows


@contextmanager
def _without_jit():
    """PostgreSQL compiles a query it expects to be big (JIT), which costs more than each slice's index walk."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET jit = off")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET jit")


# The inner query's order is kept by the plain scan over it; the user (a name a cluster sends) is kept from being
# read as a formula, as `spreadsheet_safe` does; the charge is converted to hours here, once, as the other exports do
# (half away from zero, as seconds_to_hours rounds the positive values).
# Written as chr(n), from FORMULA_STARTS itself, so that the two guards cannot drift apart.
_FORMULA_STARTS_SQL = ", ".join(f"chr({ord(start)})" for start in FORMULA_STARTS)
_COPY_JOBS = (
    "COPY (SELECT q.c1, q.c2, q.c3, q.c4, q.c5, "  # noqa: S608 (chr(n) of constants; values are parameters)
    f"CASE WHEN left(q.c6, 1) IN ({_FORMULA_STARTS_SQL}) THEN '''' || q.c6 ELSE q.c6 END, "
    "q.c7, q.c8, q.c9, q.c10, q.c11, q.c12, q.c13, "
    "round(q.c14 / 3600.0, 2) FROM (JOBS_QUERY) AS q(c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14) "
    "WHERE q.c14 IS NOT NULL) TO STDOUT WITH (FORMAT csv)"
)


def _copy_jobs(records, file) -> int:
    """COPY the query's rows into the file: PostgreSQL formats the CSV, psycopg2 streams it in chunks."""
    sql, params = records.query.sql_with_params()
    with connection.cursor() as cursor:
        inner = cursor.mogrify(sql, params).decode()
        # The inner query is Django's, its parameters quoted by mogrify.
        copy = _COPY_JOBS.replace("JOBS_QUERY", inner, 1)
        cursor.cursor.copy_expert(copy, file)
        return cursor.cursor.rowcount


def _timestamp(value: datetime | None) -> str:
    # The text PostgreSQL's COPY writes for a timestamptz in UTC, so both databases give the same file.
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")


def _write_jobs(records, file) -> int:
    writer = csv.writer(file, lineterminator="\n")
    rows = 0
    for row in records.iterator(chunk_size=5000):
        *fields, charged = row
        if charged is None:
            continue
        fields[5] = spreadsheet_safe(fields[5])
        fields[9], fields[10] = _timestamp(fields[9]), _timestamp(fields[10])
        writer.writerow([*fields, seconds_to_hours(charged)])
        rows += 1
    return rows
