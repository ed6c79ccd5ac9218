"""A ledger account's statement as CSV, in GPU-hours: what was asked for, the opening balance, each movement
with its running balance, and the closing balance. Built with the csv module, one row at a time, so a long
statement streams instead of sitting in memory."""

import csv
from collections.abc import Iterator

from django.utils import timezone

from .downloads import Echo, spreadsheet_safe
from .ledger import seconds_to_hours
from .selectors import Statement

HEADER = ["Effective", "Recorded", "Movement", "Reason", "By", "Change (GPU-hours)", "Balance (GPU-hours)"]


def _window_rows(statement: Statement) -> list[list[str]]:
    as_of = statement.as_of
    return [
        ["Account", spreadsheet_safe(str(statement.account))],
        ["From", statement.start.isoformat() if statement.start else "the first movement"],
        ["To", statement.end.isoformat() if statement.end else "the last movement"],
        ["As recorded by", as_of.isoformat() if as_of else "the time of download"],
        ["Unit", "GPU-hours (1 GPU-hour = 3,600 GPU-seconds), rounded to two decimals"],
        [],
    ]


def statement_csv_rows(statement: Statement) -> Iterator[str]:
    writer = csv.writer(Echo())
    for row in _window_rows(statement):
        yield writer.writerow(row)
    yield writer.writerow(HEADER)
    yield writer.writerow(["", "", "Opening balance", "", "", "", seconds_to_hours(statement.opening_balance)])
    for entry in statement.movements.iterator(chunk_size=2000):
        txn = entry.transaction
        yield writer.writerow(
            [
                timezone.localtime(entry.effective_at).isoformat(),
                timezone.localtime(entry.recorded_at).isoformat(),
                txn.get_type_display(),
                spreadsheet_safe(txn.reason),
                spreadsheet_safe(txn.actor.email) if txn.actor else "The portal",
                seconds_to_hours(entry.amount),
                seconds_to_hours(entry.running_balance),
            ]
        )
    yield writer.writerow(["", "", "Closing balance", "", "", "", seconds_to_hours(statement.closing_balance)])


def statement_csv_filename(statement: Statement) -> str:
    account = statement.account
    name = account.allocation.scheduler_account if account.allocation_id else f"account-{account.pk}"
    window = "-".join(day.isoformat() for day in (statement.start, statement.end) if day)
    return f"statement-{name}{'-' + window if window else ''}.csv"
