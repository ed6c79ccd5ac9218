"""Read Slurm accounting output (`sacct`) into the job rows the portal charges.

Reads `sacct --parsable2` and `--parsable` output with any delimiter, with a header line or with the column
names given by the caller, and `sacct --json`. Whatever bytes it is given, it guarantees:

- The only exception it raises is `SacctFormatError`, and only when the payload as a whole cannot be read
  (empty, no header, not JSON although it starts like JSON, required columns missing). It is raised by
  `parse_sacct` / `iter_sacct` themselves, before any row is produced.
- Every non-blank line after the header ends up exactly once as a `JobRow`, a `RejectedRow` (1-based line
  number and a reason an operator can act on), a skipped step row or a skipped pending array range. One bad
  line never stops the good ones.
- Values are exact: aware UTC datetimes, whole seconds and whole GPUs as `int`, text without NUL characters.

Nothing here imports Django: the ingest service stores the raw payload, iterates the rows and records them.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import string
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import BinaryIO

RECOMMENDED_FORMAT = "JobID,JobIDRaw,Cluster,Account,User,State,Submit,Start,End,ElapsedRaw,AllocTRES,JobName"
# "," is detected only to be refused with its reason (see _CHARACTERS_IN_VALUES).
DELIMITER_CANDIDATES = ("|", "\u2603", ";", ",", "\t")
# Slurm counts elapsed seconds in 32 bits, and keeps its two top values as markers ("no value", "infinite"):
# from there on, a figure is no duration.
ELAPSED_SECONDS_LIMIT = 2**32 - 2
GPU_COUNT_LIMIT = 100_000

# Column names as sacct prints them, keyed by their lower-case form (sacct itself ignores case).
_REQUIRED_COLUMNS = {
    "jobid": "JobID",
    "account": "Account",
    "user": "User",
    "state": "State",
    "start": "Start",
    "end": "End",
    "alloctres": "AllocTRES",
}

_ALLOCATION_ID = re.compile(r"[0-9]+(?:_[0-9]+|\+[0-9]+)?")
# Steps: 123.batch, 123.extern, 123.interactive, 123.0, 123_4.batch, 123+1.0, and 123.0+1 (a step of a
# heterogeneous job, printed with its component).
_STEP_ID = re.compile(r"[0-9]+(?:_[0-9]+|_\[[0-9,%:\-]+\]|\+[0-9]+)?\.[A-Za-z0-9_]+(?:\+[0-9]+)?")
_PENDING_ARRAY_RANGE = re.compile(r"[0-9]+_\[[0-9,%:\-]+\]")
_STATE_WORD = re.compile(r"[A-Z][A-Z_]*")
_CANCELLED_BY_USER = re.compile(r"by [0-9]+")
_COMMON_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PENDING",
        "PREEMPTED",
        "RUNNING",
        "REQUEUED",
        "RESIZING",
        "REVOKED",
        "SUSPENDED",
        "TIMEOUT",
    }
)
_NO_TIME = frozenset(("", "None", "Unknown"))
# A line sacct prints is a few kilobytes at most, even with every column (SubmitLine, WorkDir, a Comment). A longer
# one is not sacct's, and read whole it would hold many times its size in memory (a small gzip body can unzip to a
# gigabyte on one line): it is rejected, and only its beginning is read and kept.
MAX_LINE_BYTES = 1 << 20
_TOO_LONG_LINES_BEFORE_THE_FIRST = 10  # in output made with --noheader, before a line that is not too long
_KEPT_OF_A_LONG_LINE = 1000  # characters of an over-long line kept in its rejected row, for an operator to see
NOT_UTF8 = "the line is not valid UTF-8"
HAS_NUL = "the line contains a NUL character"
TOO_LONG = f"the line is longer than {MAX_LINE_BYTES // 2**20} MB, which no sacct line is; only its beginning is kept"
# The rows rejected for these are kept as text that is not the line received: its bad bytes replaced, or only its
# beginning. Read again from that text, they would be recorded as lines the cluster never sent.
KEPT_ALTERED = frozenset((NOT_UTF8, HAS_NUL, TOO_LONG))
# Slurm's NO_VAL and INFINITE for 32-bit fields, which older JSON versions print instead of "not set".
_SLURM_UNSET_NUMBER = 0xFFFFFFFE


class SacctFormatError(ValueError):
    """The payload as a whole cannot be read; the message says why."""


class JsonPayloadTooLarge(SacctFormatError):
    """A sacct --json payload over the reader's `max_json_bytes`: JSON is read whole, unlike text."""


@dataclass(frozen=True)
class JobRow:
    """One allocation row of sacct: the unit that is charged."""

    line_number: int
    job_id: str
    job_id_raw: str
    cluster: str
    account: str
    user: str
    state: str
    submit: datetime | None
    start: datetime | None
    end: datetime | None
    elapsed_seconds: int
    gpus: int
    job_name: str
    raw: str

    @property
    def running(self) -> bool:
        return self.end is None and self.start is not None


@dataclass(frozen=True)
class RejectedRow:
    """A line that could not be read, kept with the reason for an operator to see and replay."""

    line_number: int
    raw: str
    reason: str


# One job row as SacctReader.records() gives it: (line_number, raw text, job_id, job_id_raw, account, user,
# state, submit, start, end, elapsed_seconds, gpus, job_name), times as UTC ISO text or None.
JobRecordFields = tuple[int, str, str, str, str, str, str, str | None, str | None, str | None, int, int, str]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def _fields_of_row(row: JobRow) -> JobRecordFields:
    return (
        row.line_number,
        row.raw,
        row.job_id,
        row.job_id_raw,
        row.account,
        row.user,
        row.state,
        _iso(row.submit),
        _iso(row.start),
        _iso(row.end),
        row.elapsed_seconds,
        row.gpus,
        row.job_name,
    )


@dataclass
class ParseResult:
    """Everything read from one payload; format is "parsable2", "parsable" or "json"."""

    jobs: list[JobRow]
    rejected: list[RejectedRow]
    skipped_steps: int
    skipped_pending: int
    format: str


def _new_job_row(values: dict[str, object]) -> JobRow:
    """The JobRow with these field values, built without the frozen dataclass's __init__.

    That __init__ sets each field through object.__setattr__, about 2 µs a row, the largest cost of reading a
    row; handing over the attribute dictionary builds an equal object three times faster. The tests check that
    both ways build the same row, with every field.
    """
    row = object.__new__(JobRow)
    object.__setattr__(row, "__dict__", values)
    return row


class _RowError(ValueError):
    """One row cannot be read; becomes a RejectedRow with this message as its reason."""


class _RowKind:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


_ALLOCATION = _RowKind("allocation")
_STEP = _RowKind("step")
_PENDING = _RowKind("pending array range")


def parse_sacct(
    data: bytes | BinaryIO,
    *,
    tz: tzinfo = UTC,
    delimiter: str | None = None,
    columns: list[str] | None = None,
    cluster: str | None = None,
) -> ParseResult:
    """Read a whole payload into lists; see `iter_sacct` for the arguments and the rules."""
    reader = iter_sacct(data, tz=tz, delimiter=delimiter, columns=columns, cluster=cluster)
    jobs: list[JobRow] = []
    rejected: list[RejectedRow] = []
    for row in reader:
        if type(row) is JobRow:
            jobs.append(row)
        else:
            rejected.append(row)
    return ParseResult(jobs, rejected, reader.skipped_steps, reader.skipped_pending, reader.format)


def iter_sacct(
    data: bytes | BinaryIO,
    *,
    tz: tzinfo = UTC,
    delimiter: str | None = None,
    columns: list[str] | None = None,
    cluster: str | None = None,
    max_json_bytes: int | None = None,
) -> SacctReader:
    """Read a payload row by row, so that memory stays bounded however long a text payload is.

    `data` is the payload as bytes or a binary file (a gzip file works). Timestamps without an offset are
    read in `tz`; in the hour a daylight-saving change repeats, the first occurrence is taken (hence the
    advice to run `TZ=UTC sacct`), except for an End that would then come before its Start. The delimiter is
    detected among `DELIMITER_CANDIDATES` unless given.

    Output made with `--noheader` needs `columns`. Account is then optional and reads as "" when absent:
    archives such as Habrok's lack it, and downstream such rows stay unmatched. A header sent by a cluster
    must name Account, because usage without it could never be charged.

    With `cluster` (the system's cluster name), a row whose Cluster names another cluster is rejected: `sacct -M
    all`, or a token used for the wrong cluster, must not charge one system for another's jobs (an award's
    account name is the same on every system it runs on). Case is ignored, and a row without a Cluster is read.

    A JSON payload is read whole, and Python holds a JSON document in some 25 times its size (a small gzip body
    can expand to a gigabyte of `{},`): over `max_json_bytes` it is refused with JsonPayloadTooLarge.
    """
    return SacctReader(
        data, tz=tz, delimiter=delimiter, columns=columns, cluster=cluster, max_json_bytes=max_json_bytes
    )


class SacctReader:
    """Iterator over the JobRow and RejectedRow of one payload; the skip counters grow as it is consumed."""

    def __init__(
        self,
        data: bytes | BinaryIO,
        *,
        tz: tzinfo,
        delimiter: str | None,
        columns: list[str] | None,
        cluster: str | None = None,
        max_json_bytes: int | None = None,
    ):
        self.cluster = cluster.lower() if cluster else None
        self.skipped_steps = 0
        self.skipped_pending = 0
        stream = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
        lines = _numbered_lines(stream)
        first_line_number, first_line = _first_non_blank_line(lines)
        if first_line.lstrip().startswith(b"{"):
            self.format = "json"
            content = first_line  # the blank lines before it are whitespace JSON ignores
            room = None if max_json_bytes is None else max(0, max_json_bytes + 1 - len(content))
            content += stream.read(room)
            if max_json_bytes is not None and len(content) > max_json_bytes:
                raise JsonPayloadTooLarge(
                    f"a sacct --json payload is read whole, and this one is over {max_json_bytes // 2**20} MB "
                    "unzipped: post shorter windows, or --parsable2 output, which is read line by line"
                )
            jobs = _json_jobs(content)
            self._rows = self._json_rows(jobs)
            return
        layout, data_lines = _text_layout(first_line_number, first_line, lines, delimiter, columns)
        self.format = "parsable" if layout.has_trailing_delimiter else "parsable2"
        row_reader = _TextRowReader(layout, tz, self.cluster)
        self._rows = self._text_rows(data_lines, row_reader.read)
        self._records = self._fast_text_records(data_lines, row_reader)

    def __iter__(self) -> SacctReader:
        return self

    def __next__(self) -> JobRow | RejectedRow:
        return next(self._rows)

    def records(self) -> Iterator[JobRecordFields | RejectedRow]:
        """The rows as plain tuples instead of JobRow objects: the ingest's fast path (use one or the other).

        Each is a `JobRecordFields`; its times are UTC in ISO 8601 text (`2026-01-01T09:00:00+00:00`), or None,
        which is what a COPY to the database needs, and spares building three datetimes and printing them back.
        """
        if self.format == "json":
            return (_fields_of_row(row) if type(row) is JobRow else row for row in self._rows)
        return self._records

    def _text_rows(self, lines: Iterable[tuple[int, bytes]], read) -> Iterator:
        for line_number, line in lines:
            if _is_too_long(line):  # before the blank test: only its beginning is here, and it may be all spaces
                yield _too_long_row(line_number, line)
                continue
            if not line or line.isspace():
                continue
            try:
                text = line.decode()
            except UnicodeDecodeError:
                yield RejectedRow(line_number, _printable(line), NOT_UTF8)
                continue
            outcome = read(line_number, text.rstrip("\r\n"))
            if outcome is _STEP:
                self.skipped_steps += 1
            elif outcome is _PENDING:
                self.skipped_pending += 1
            else:
                yield outcome

    def _fast_text_records(self, lines: Iterable[tuple[int, bytes]], row_reader: _TextRowReader) -> Iterator:
        """`_text_rows` with `_TextRowReader.record`, with the common line read inline.

        A million-row payload spends most of its time here, so the line sacct prints for an ordinary job on a
        UTC cluster (a numeric JobID, a common state, times in sacct's own format, a plain gres/gpu=N entry)
        is read without a call per field. Anything else, or anything that fails a check here, goes to
        `record`, which applies every rule and gives the reason; so a line reads the same either way, which
        tests/allocations/test_sacct_parser.py checks on every sample.
        """
        record = row_reader.record
        if row_reader.tz is not UTC or row_reader.has_trailing_delimiter:
            yield from self._text_rows(lines, record)
            return
        delimiter, field_count = row_reader.delimiter, row_reader.field_count
        job_id_at, job_id_raw_at = row_reader.job_id_at, row_reader.job_id_raw_at
        account_at, user_at, state_at = row_reader.account_at, row_reader.user_at, row_reader.state_at
        submit_at, start_at, end_at = row_reader.submit_at, row_reader.start_at, row_reader.end_at
        elapsed_at, tres_at, name_at = row_reader.elapsed_raw_at, row_reader.tres_at, row_reader.job_name_at
        # A row naming the system's cluster (Slurm prints it in lower case) is read here; any other, or one without
        # a cluster, goes to the full rules, which say why it is rejected or read it.
        cluster_at, cluster = row_reader.cluster_at, row_reader.cluster
        if elapsed_at is None:
            yield from self._text_rows(lines, record)
            return
        states, no_time, parse_time = _COMMON_STATES, _NO_TIME, datetime.fromisoformat
        elapsed_digits = len(str(ELAPSED_SECONDS_LIMIT))
        gpu_digits = len(str(GPU_COUNT_LIMIT))

        def moment(value: str) -> str | None | bool:
            """UTC ISO text or None; False when the value needs the full rules."""
            if value in no_time:
                return None
            # YYYY-MM-DDTHH:MM:SS and nothing else that fromisoformat reads (week dates, basic format).
            if (
                len(value) != 19
                or value[10] != "T"
                or value[4] != "-"
                or value[7] != "-"
                or value[13] != ":"
                or value[16] != ":"
            ):
                return False
            try:
                parse_time(value)
            except ValueError:
                return False
            return value + "+00:00"

        for line_number, line in lines:
            try:
                text = line.decode().rstrip("\r\n")
            except UnicodeDecodeError:
                text = None
            if not text or "\x00" in text or text.isspace() or len(line) > MAX_LINE_BYTES:
                # Blank, not UTF-8, with a NUL or too long: the full rules skip it or say why it is rejected.
                yield from self._text_rows(((line_number, line),), record)
                continue
            fields = text.split(delimiter)
            if len(fields) == field_count:
                fields.append("")
                job_id = fields[job_id_at]
                job_id_raw = job_id if job_id_raw_at is None else fields[job_id_raw_at]
                state = fields[state_at]
                elapsed = fields[elapsed_at]
                tres = fields[tres_at]
                if (
                    job_id.isdigit()
                    and job_id.isascii()
                    and job_id_raw.isdigit()
                    and job_id_raw.isascii()
                    and state in states
                    and elapsed.isdigit()
                    and elapsed.isascii()
                    and len(elapsed) < elapsed_digits
                    and (cluster is None or fields[cluster_at] == cluster)
                    and (submit := moment(fields[submit_at])) is not False
                    and (start := moment(fields[start_at])) is not False
                    and (end := moment(fields[end_at])) is not False
                ):
                    at = tres.find("gres/gpu=")
                    if at < 0:
                        # No untyped count: typed or gpumem entries (0 GPUs), or a count-less one (rejected).
                        gpus = -1 if "gres/gpu" in tres else 0
                    # One untyped count and no count-less untyped entry beside it; anything else (a second
                    # untyped entry, `gres/gpu,gres/gpu=2`) goes to the full rules, which reject it.
                    elif (
                        (at == 0 or tres[at - 1] == ",")
                        and tres.find("gres/gpu=", at + 1) < 0
                        and "gres/gpu," not in tres
                        and not tres.endswith("gres/gpu")
                    ):
                        after = tres.find(",", at)
                        count = tres[at + 9 :] if after < 0 else tres[at + 9 : after]
                        gpus = int(count) if count.isdigit() and count.isascii() and len(count) < gpu_digits else -1
                    else:
                        gpus = -1
                    if gpus >= 0:
                        yield (
                            line_number,
                            text,
                            job_id,
                            job_id_raw,
                            fields[account_at],
                            fields[user_at],
                            state,
                            submit,
                            start,
                            end,
                            int(elapsed),
                            gpus,
                            fields[name_at],
                        )
                        continue
            outcome = record(line_number, text)
            if outcome is _STEP:
                self.skipped_steps += 1
            elif outcome is _PENDING:
                self.skipped_pending += 1
            else:
                yield outcome

    def _json_rows(self, jobs: list) -> Iterator[JobRow | RejectedRow]:
        for index, job in enumerate(jobs):
            raw = _json_text(job)
            try:
                outcome = _json_job_row(index + 1, job, raw)
                if type(outcome) is JobRow:
                    _check_cluster(outcome.cluster, self.cluster)
            except _RowError as problem:
                yield RejectedRow(index + 1, raw, str(problem))
                continue
            steps = job.get("steps")
            if isinstance(steps, list):
                self.skipped_steps += len(steps)
            if outcome is _PENDING:
                self.skipped_pending += 1
            else:
                yield outcome


# --- Finding the layout of a text payload ---------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    delimiter: str
    column_positions: dict[str, int]
    has_trailing_delimiter: bool

    @property
    def field_count(self) -> int:
        return len(self.column_positions)

    @property
    def job_name_is_last(self) -> bool:
        return self.column_positions.get("jobname") == self.field_count - 1


def _numbered_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """The stream's lines, numbered from 1. A line over MAX_LINE_BYTES (not counting its end, "\n" or "\r\n")
    comes as its beginning (`_is_too_long`); the rest of it is skipped when the next line is asked for, unkept, so
    a JSON document on one line can still be read on from the stream after its first line."""
    readline, limit, number = stream.readline, MAX_LINE_BYTES + 2, 0  # room for a longest line and "\r\n"
    while line := readline(limit):
        number += 1
        yield number, line
        if len(line) == limit and line[-1] != 10:  # 10: b"\n"
            while (rest := readline(limit)) and rest[-1] != 10:
                pass


def _is_too_long(line: bytes) -> bool:
    """Whether a line of `_numbered_lines` is over MAX_LINE_BYTES, not counting its end ("\n" or "\r\n")."""
    if len(line) <= MAX_LINE_BYTES:
        return False
    ending = 2 if line.endswith(b"\r\n") else 1 if line.endswith(b"\n") else 0
    return len(line) - ending > MAX_LINE_BYTES


def _too_long_row(line_number: int, line: bytes) -> RejectedRow:
    return RejectedRow(
        line_number,
        _printable(line[:_KEPT_OF_A_LONG_LINE]) + "\u2026",
        TOO_LONG,
    )


def _first_non_blank_line(lines: Iterator[tuple[int, bytes]]) -> tuple[int, bytes]:
    """The number and text of the first line that is not blank; the blank ones before it are dropped as they are
    read, since a small gzip body can hold a gigabyte of them, and a list of them would take fifty times that."""
    for line_number, line in lines:
        if line_number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]  # a byte-order mark, as editors on Windows add to uploaded files
        if (line and not line.isspace()) or _is_too_long(line):  # a long line's beginning may be all spaces
            return line_number, line
    raise SacctFormatError("the payload is empty")


# Characters that sacct's own values hold: AllocTRES `billing=8,gres/gpu:h100=4`, times `2026-03-01T10:00:00`,
# job ids `123_[1-9%2]` and `45+1`, states `CANCELLED by 0`. sacct does not escape its delimiter, so a delimiter
# made of any of them splits values apart: with `,` a job's AllocTRES loses its GPUs without an error.
_CHARACTERS_IN_VALUES = frozenset(string.ascii_letters + string.digits + ",=/:-_.+[]%() ")


def _text_layout(
    first_line_number: int,
    first_line: bytes,
    lines: Iterator[tuple[int, bytes]],
    delimiter: str | None,
    columns: list[str] | None,
) -> tuple[_Layout, Iterable[tuple[int, bytes]]]:
    layout, data_lines = _detected_layout(first_line_number, first_line, lines, delimiter, columns)
    if any(character in _CHARACTERS_IN_VALUES for character in layout.delimiter):
        raise SacctFormatError(
            f"{layout.delimiter!r} cannot be the delimiter: sacct does not escape it, and it occurs inside sacct's "
            "values (AllocTRES holds ',' and '=', times ':' and '-'), so they would be split apart; run sacct with "
            "--parsable2 (its delimiter is '|') or give --delimiter a character such as '|' or '\u2603'"
        )
    return layout, data_lines


def _detected_layout(
    first_line_number: int,
    first_line: bytes,
    lines: Iterator[tuple[int, bytes]],
    delimiter: str | None,
    columns: list[str] | None,
) -> tuple[_Layout, Iterable[tuple[int, bytes]]]:
    if delimiter == "":
        raise SacctFormatError("the delimiter must not be empty")
    if _is_too_long(first_line):
        too_long = SacctFormatError(
            f"line {first_line_number}, the first line, is longer than {MAX_LINE_BYTES // 2**20} MB: it is not a "
            "sacct header or job line"
        )
        if columns is None:
            raise too_long
        # Output made with --noheader: the first line is a job's, rejected as any other too long one is, and the
        # layout is read from the first line that is not, so that the jobs after it are still read. A loop, not a
        # call for each: a gigabyte payload holds a thousand such lines, more than Python's recursion allows. Each
        # is held (a megabyte) until the layout is known, so a payload opening with more than a few is refused.
        held = []
        while _is_too_long(first_line):
            if len(held) == _TOO_LONG_LINES_BEFORE_THE_FIRST:
                raise SacctFormatError(
                    f"the first {len(held) + 1} lines are all longer than {MAX_LINE_BYTES // 2**20} MB: this is not "
                    "sacct output"
                )
            held.append((first_line_number, first_line))
            try:
                first_line_number, first_line = _first_non_blank_line(lines)
            except SacctFormatError:
                raise too_long from None
        layout, data_lines = _detected_layout(first_line_number, first_line, lines, delimiter, columns)
        return layout, itertools.chain(held, data_lines)
    try:
        first_text = first_line.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise SacctFormatError(f"line {first_line_number}, the first line, is not valid UTF-8") from None
    if columns is None:
        delimiter = delimiter or _delimiter_of_header(first_text)
        names = first_text.split(delimiter)
        has_trailing_delimiter = len(names) > 1 and names[-1] == ""
        if has_trailing_delimiter:
            names.pop()
        if "jobid" not in (name.strip().lower() for name in names):
            raise _no_header_error()
        positions = _column_positions(names, account_is_required=True)
        return _Layout(delimiter, positions, has_trailing_delimiter), lines
    positions = _column_positions(columns, account_is_required=False)
    header_delimiter = _delimiter_of_header_for(first_text, columns, delimiter)
    if header_delimiter:
        has_trailing_delimiter = first_text.count(header_delimiter) == len(columns)
        return _Layout(header_delimiter, positions, has_trailing_delimiter), lines
    delimiter = delimiter or _delimiter_of_data_line(first_text, columns)
    layout = _Layout(delimiter, positions, _ends_with_extra_delimiter(first_text, delimiter, len(columns)))
    return layout, itertools.chain([(first_line_number, first_line)], lines)


def _delimiter_of_header(header: str) -> str:
    for candidate in DELIMITER_CANDIDATES:
        if "jobid" in (name.strip().lower() for name in header.split(candidate)):
            return candidate
    raise _no_header_error()


def _no_header_error() -> SacctFormatError:
    return SacctFormatError(
        "the first line is not a sacct header with a JobID column; send the output of "
        f"`sacct --parsable2 --format={RECOMMENDED_FORMAT}`, or pass the column names for output made "
        "with --noheader"
    )


def _delimiter_of_header_for(text: str, columns: list[str], delimiter: str | None) -> str | None:
    """The delimiter when the first line is a header naming exactly `columns`, else None (a data line)."""
    expected = [name.strip().lower() for name in columns]
    for candidate in (delimiter,) if delimiter else DELIMITER_CANDIDATES:
        names = [name.strip().lower() for name in text.split(candidate)]
        if names == expected or (names[-1] == "" and names[:-1] == expected):
            return candidate
    return None


def _delimiter_of_data_line(text: str, columns: list[str]) -> str:
    column_count = len(columns)
    job_name_is_last = columns[-1].strip().lower() == "jobname"
    for candidate in DELIMITER_CANDIDATES:
        found = text.count(candidate)
        if found in (column_count - 1, column_count) or (job_name_is_last and found > column_count):
            return candidate
    raise SacctFormatError(
        f"cannot tell which delimiter separates the {column_count} columns of the first line; pass the delimiter"
    )


def _ends_with_extra_delimiter(text: str, delimiter: str, column_count: int) -> bool:
    # --parsable ends every line with the delimiter, so a full line has one more (empty) field than columns.
    return text.endswith(delimiter) and text.count(delimiter) >= column_count


def _column_positions(names: list[str], *, account_is_required: bool) -> dict[str, int]:
    keys = [name.strip().lower() for name in names]
    if "" in keys:
        raise SacctFormatError(f"column {keys.index('') + 1} of the header has no name")
    # Counted once: a header can hold hundreds of thousands of names, and counting each among all the others
    # would take hours.
    uses = Counter(keys)
    repeated = sorted({name for name, key in zip(names, keys, strict=True) if uses[key] > 1})
    if repeated:
        raise SacctFormatError(f"the header names a column more than once: {', '.join(repeated)}")
    missing = [
        printed
        for key, printed in _REQUIRED_COLUMNS.items()
        if key not in keys and (account_is_required or key != "account")
    ]
    if "elapsedraw" not in keys and "elapsed" not in keys:
        missing.append("ElapsedRaw (or Elapsed)")
    if missing:
        raise SacctFormatError(
            f"the sacct output lacks required columns: {', '.join(missing)}; "
            f"run sacct with --parsable2 --format={RECOMMENDED_FORMAT}"
        )
    return {key: position for position, key in enumerate(keys)}


# --- Reading one text row -------------------------------------------------------------------------------


def _check_cluster(value: str, cluster: str | None) -> None:
    """Refuse a row of another cluster than the system's (`cluster`, lower case; None checks nothing)."""
    if cluster is not None and value and value.lower() != cluster:
        raise _RowError(
            f"Cluster {value!r} is not this system's cluster ({cluster!r}): post each cluster's usage with its "
            "own system's token, or correct the system's cluster name and replay the row"
        )


class _TextRowReader:
    """Reads the fields of one line; the positions are looked up once, as this runs for every line."""

    def __init__(self, layout: _Layout, tz: tzinfo, cluster: str | None = None):
        positions = layout.column_positions
        self.delimiter = layout.delimiter
        self.field_count = layout.field_count
        self.has_trailing_delimiter = layout.has_trailing_delimiter
        self.job_name_is_last = layout.job_name_is_last
        self.tz = tz
        self.cluster = cluster
        # Absent optional columns point at -1: every row gets an empty field appended to read them from.
        self.job_id_at = positions["jobid"]
        self.job_id_raw_at = positions.get("jobidraw")
        self.cluster_at = positions.get("cluster", -1)
        self.account_at = positions.get("account", -1)
        self.user_at = positions["user"]
        self.state_at = positions["state"]
        self.submit_at = positions.get("submit", -1)
        self.start_at = positions["start"]
        self.end_at = positions["end"]
        self.elapsed_raw_at = positions.get("elapsedraw")
        self.elapsed_at = positions.get("elapsed")
        self.tres_at = positions["alloctres"]
        self.job_name_at = positions.get("jobname", -1)

    def read(self, line_number: int, text: str) -> JobRow | RejectedRow | _RowKind:
        try:
            if "\x00" in text:
                raise _RowError(HAS_NUL)
            fields = self._fields(text)
            job_id = fields[self.job_id_at]
            kind = _kind_of_job_id(job_id)
            if kind is not _ALLOCATION:
                return kind
            return self._job_row(line_number, text, fields, job_id)
        except _RowError as problem:
            return RejectedRow(line_number, text.replace("\x00", "\ufffd"), str(problem))

    def record(self, line_number: int, text: str) -> JobRecordFields | RejectedRow | _RowKind:
        """As `read`, with the same checks in the same order, as a plain tuple (see SacctReader.records)."""
        try:
            if "\x00" in text:
                raise _RowError(HAS_NUL)
            fields = self._fields(text)
            job_id = fields[self.job_id_at]
            if not (job_id.isascii() and job_id.isdigit()):
                kind = _kind_of_job_id(job_id)
                if kind is not _ALLOCATION:
                    return kind
            fields.append("")
            _check_cluster(fields[self.cluster_at], self.cluster)
            job_id_raw = self._job_id_raw(fields, job_id)
            account = fields[self.account_at]
            user = fields[self.user_at]
            state = fields[self.state_at]
            if state not in _COMMON_STATES:
                state = _state(state)
            time_text = self._time_text
            return (
                line_number,
                text,
                job_id,
                job_id_raw,
                account,
                user,
                state,
                time_text("Submit", fields[self.submit_at]),
                (start := time_text("Start", fields[self.start_at])),
                self._end_text(fields[self.end_at], start),
                self._elapsed_seconds(fields),
                _gpus_from_tres(fields[self.tres_at]),
                fields[self.job_name_at],
            )
        except _RowError as problem:
            return RejectedRow(line_number, text.replace("\x00", "\ufffd"), str(problem))

    def _time_text(self, name: str, value: str) -> str | None:
        """`_time` as UTC ISO text; sacct's own format on a UTC cluster is checked and passed through."""
        if (
            self.tz is UTC
            and len(value) == 19
            and value[10] == "T"
            and value[4] == "-"
            and value[7] == "-"
            and value[13] == ":"
            and value[16] == ":"
        ):
            text = value + "+00:00"
            try:
                datetime.fromisoformat(text)
            except ValueError:
                pass
            else:
                return text
        moment = self._time(name, value)
        return None if moment is None else moment.isoformat()

    def _fields(self, text: str) -> list[str]:
        delimiter = self.delimiter
        if self.has_trailing_delimiter:
            if not text.endswith(delimiter):
                raise _RowError(
                    f"the line does not end with the delimiter {delimiter!r} as --parsable output does, "
                    "so it may be truncated"
                )
            text = text[: -len(delimiter)]
        fields = text.split(delimiter)
        expected, found = self.field_count, len(fields)
        if found == expected:
            return fields
        if found > expected and self.job_name_is_last:
            # sacct does not escape the delimiter inside JobName, so the surplus belongs to the name.
            return [*fields[: expected - 1], delimiter.join(fields[expected - 1 :])]
        if found < expected:
            raise _RowError(f"expected {expected} fields, found {found}: the line may be truncated")
        raise _RowError(
            f"expected {expected} fields, found {found}: a field contains the delimiter {delimiter!r} "
            "(only a JobName in the last column can)"
        )

    def _job_row(self, line_number: int, text: str, fields: list[str], job_id: str) -> JobRow:
        fields.append("")
        _check_cluster(fields[self.cluster_at], self.cluster)
        return _new_job_row(
            {
                "line_number": line_number,
                "job_id": job_id,
                "job_id_raw": self._job_id_raw(fields, job_id),
                "cluster": fields[self.cluster_at],
                "account": fields[self.account_at],
                "user": fields[self.user_at],
                "state": _state(fields[self.state_at]),
                "submit": self._time("Submit", fields[self.submit_at]),
                "start": (start := self._time("Start", fields[self.start_at])),
                "end": self._end_time(fields[self.end_at], start),
                "elapsed_seconds": self._elapsed_seconds(fields),
                "gpus": _gpus_from_tres(fields[self.tres_at]),
                "job_name": fields[self.job_name_at],
                "raw": text,
            }
        )

    def _job_id_raw(self, fields: list[str], job_id: str) -> str:
        if self.job_id_raw_at is None:
            return job_id
        value = fields[self.job_id_raw_at]
        if not (value.isascii() and value.isdigit()):
            raise _RowError(f"JobIDRaw {value!r} is not a job number")
        return value

    def _time(self, name: str, value: str) -> datetime | None:
        if value in _NO_TIME:
            return None
        if self.tz is UTC and len(value) == 19 and value[10] == "T":
            # sacct's own format on a UTC cluster: appending the offset parses about seven times faster
            # than datetime.replace(tzinfo=...), and this runs three times on every row.
            try:
                return datetime.fromisoformat(value + "+00:00")
            except ValueError:
                pass
        return _timestamp(name, value, self.tz)

    def _end_time(self, value: str, start: datetime | None) -> datetime | None:
        """End, read as its second occurrence when it falls in the hour a daylight-saving change repeats and its
        first would put it before Start: a job that started in the first of the two hours and ended in the
        second, which sacct prints as local times without an offset."""
        end = self._time("End", value)
        if end is not None and start is not None and end < start and self.tz is not UTC:
            second = _timestamp("End", value, self.tz, fold=1)
            if second >= start:
                return second
        return end

    def _end_text(self, value: str, start: str | None) -> str | None:
        """`_end_time` as UTC ISO text, after `_time_text` read Start."""
        if self.tz is UTC:
            return self._time_text("End", value)
        end = self._end_time(value, None if start is None else datetime.fromisoformat(start))
        return None if end is None else end.isoformat()

    def _elapsed_seconds(self, fields: list[str]) -> int:
        if self.elapsed_raw_at is not None:
            return _elapsed_raw(fields[self.elapsed_raw_at])
        return _elapsed_from_clock(fields[self.elapsed_at])


def _kind_of_job_id(job_id: str) -> _RowKind:
    if (job_id.isascii() and job_id.isdigit()) or _ALLOCATION_ID.fullmatch(job_id):
        return _ALLOCATION
    if _STEP_ID.fullmatch(job_id):
        return _STEP
    if _PENDING_ARRAY_RANGE.fullmatch(job_id):
        return _PENDING
    raise _RowError(f"JobID {job_id!r} is not a Slurm job id")


def _state(value: str) -> str:
    if value in _COMMON_STATES:
        return value
    # "CANCELLED by 1234" names the uid that cancelled the job; the state is the first word.
    word, _, rest = value.partition(" ")
    if _STATE_WORD.fullmatch(word) and (not rest or _CANCELLED_BY_USER.fullmatch(rest)):
        return word
    raise _RowError(f"State {value!r} is not a Slurm job state")


def _timestamp(name: str, value: str, tz: tzinfo, *, fold: int = 0) -> datetime:
    if len(value) < 19 or value[10] not in "T ":
        raise _RowError(f"{name} {value!r} is not a date and time")
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz, fold=fold)
        return moment.astimezone(UTC)
    except ValueError:
        raise _RowError(f"{name} {value!r} is not a date and time") from None
    except OverflowError:
        raise _RowError(f"{name} {value!r} is out of range") from None


def _elapsed_raw(value: str) -> int:
    if value.isascii() and value.isdigit():
        if len(value) < len(str(ELAPSED_SECONDS_LIMIT)):
            return int(value)
        return _below_limit("ElapsedRaw", value, ELAPSED_SECONDS_LIMIT)
    raise _RowError(f"ElapsedRaw {value!r} is not a whole number of seconds")


def _elapsed_from_clock(value: str) -> int:
    """Seconds in sacct's elapsed format: [D-]HH:MM:SS, MM:SS or MM:SS.mmm (fractions are dropped)."""
    days, has_days, clock = value.rpartition("-")
    parts = clock.split(":")
    if len(parts) == 2 and not has_days:
        parts.insert(0, "0")
    if len(parts) != 3:
        raise _RowError(f"Elapsed {value!r} is not a duration like [D-]HH:MM:SS")
    parts[2], _, fraction = parts[2].partition(".")
    numbers = [days if has_days else "0", *parts, fraction or "0"]
    if not all(number.isascii() and number.isdigit() and len(number) <= 10 for number in numbers):
        raise _RowError(f"Elapsed {value!r} is not a duration like [D-]HH:MM:SS")
    days_count, hours, minutes, seconds = (int(number) for number in numbers[:4])
    if minutes >= 60 or seconds >= 60:
        raise _RowError(f"Elapsed {value!r} is not a duration like [D-]HH:MM:SS")
    total = ((days_count * 24 + hours) * 60 + minutes) * 60 + seconds
    if total >= ELAPSED_SECONDS_LIMIT:
        raise _RowError(f"Elapsed {value!r} is {ELAPSED_SECONDS_LIMIT} seconds or more, which no job reaches")
    return total


def _gpus_from_tres(tres: str) -> int:
    """GPUs of the untyped gres/gpu=N entry; typed gres/gpu:model=N entries are a subset, never added."""
    # Searching for ",gres/gpu=" between commas matches the whole entry name only, so neither the typed
    # entries nor gres/gpumem and gres/gpuutil (NVML/RSMI accounting, not GPUs) are counted.
    entries = f",{tres},"
    start = entries.find(",gres/gpu=")
    if start < 0:
        # Malformed rather than no GPUs: read as 0, a GPU job would be charged nothing without a word.
        if ",gres/gpu," in entries:
            raise _RowError("AllocTRES entry 'gres/gpu' has no count of GPUs")
        return 0
    # A second untyped entry, with a count or without one (`gres/gpu,gres/gpu=2`), leaves the GPUs to a guess.
    if entries.find(",gres/gpu=", start + 1) >= 0 or ",gres/gpu," in entries:
        raise _RowError(f"AllocTRES {tres!r} lists gres/gpu more than once")
    count_starts = start + len(",gres/gpu=")
    count = entries[count_starts : entries.index(",", count_starts)]
    if count.isascii() and count.isdigit():
        if len(count) < len(str(GPU_COUNT_LIMIT)):
            return int(count)
        return _below_limit(f"AllocTRES entry {'gres/gpu=' + count!r}", count, GPU_COUNT_LIMIT)
    if not count:
        raise _RowError("AllocTRES entry 'gres/gpu=' has no count of GPUs")
    raise _RowError(f"AllocTRES entry {'gres/gpu=' + count!r} is not a whole number of GPUs")


def _below_limit(name: str, digits: str, limit: int) -> int:
    # Checking the length first keeps int() away from huge digit strings, which it refuses to convert.
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(limit)) or int(significant) >= limit:
        raise _RowError(f"{name} is {limit} or more, which no job reaches")
    return int(significant)


def _printable(line: bytes) -> str:
    return line.decode(errors="replace").rstrip("\r\n").replace("\x00", "\ufffd")


# --- sacct --json -----------------------------------------------------------------------------------------


def _json_jobs(content: bytes) -> list:
    try:
        document = json.loads(content.decode())
    except UnicodeDecodeError:
        raise SacctFormatError("the payload starts like JSON but is not valid UTF-8") from None
    except (ValueError, RecursionError) as problem:
        raise SacctFormatError(f"the payload starts like JSON but is not valid JSON: {problem}") from None
    jobs = document.get("jobs") if isinstance(document, dict) else None
    if not isinstance(jobs, list):
        raise SacctFormatError('the JSON payload has no "jobs" list, as `sacct --json` output has')
    return jobs


def _json_text(value: object) -> str:
    try:
        return json.dumps(value, separators=(",", ":"))
    except (ValueError, RecursionError):
        return "(an entry too deeply nested to show)"


def _json_job_row(number: int, job: object, raw: str) -> JobRow | _RowKind:
    """One entry of `jobs` in sacct --json (data_parser v0.0.38 to v0.0.42); its steps are not charged."""
    if not isinstance(job, dict):
        raise _RowError("the job entry is not a JSON object")
    job_id_raw = _json_number(job, "job_id")
    if job_id_raw is None:
        raise _RowError("job_id is missing")
    array = _json_object(job, "array")
    array_job_id = _json_number(array, "job_id", "array.job_id")
    task_id = _json_index(array, "task_id", "array.task_id")
    if array_job_id and task_id is None and _json_string(array, "task", "array.task"):
        return _PENDING  # a pending array range: array.task holds the range, e.g. "5-9"
    times = _json_object(job, "time")
    elapsed = _json_number(times, "elapsed", "time.elapsed")
    if elapsed is None:
        raise _RowError("time.elapsed is missing")
    if elapsed >= ELAPSED_SECONDS_LIMIT:
        raise _RowError(f"time.elapsed is {ELAPSED_SECONDS_LIMIT} or more, which no job reaches")
    # Every version prints time.start (0 when the job never ran) and, for a job that ran, tres.allocated: one
    # missing is a shape this reader does not know, and read as absent it would charge nothing without a word.
    if "start" not in times:
        raise _RowError("time.start is missing")
    start = _epoch(times, "start")
    tres = _json_object(job, "tres")
    if start is not None and "allocated" not in tres:
        raise _RowError("tres.allocated is missing")
    return JobRow(
        number,
        _json_display_job_id(job_id_raw, array_job_id, task_id, _json_object(job, "het")),
        str(job_id_raw),
        _json_string(job, "cluster"),
        _json_string(job, "account"),
        _json_string(job, "user"),
        _state(_json_state(job.get("state"))),
        _epoch(times, "submission"),
        start,
        _epoch(times, "end"),
        elapsed,
        _json_gpus(tres),
        _json_string(job, "name"),
        raw,
    )


def _json_display_job_id(job_id: int, array_job_id: int | None, task_id: int | None, het: dict) -> str:
    if array_job_id and task_id is not None:
        return f"{array_job_id}_{task_id}"
    het_job_id = _json_number(het, "job_id", "het.job_id")
    het_offset = _json_index(het, "job_offset", "het.job_offset")
    if het_job_id and het_offset is not None:
        return f"{het_job_id}+{het_offset}"
    return str(job_id)


def _json_object(parent: dict, key: str) -> dict:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _RowError(f"{key} is not a JSON object")
    return value


def _json_string(parent: dict, key: str, path: str | None = None) -> str:
    value = parent.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _RowError(f"{path or key} is not text")
    if "\x00" in value or _has_lone_surrogate(value):
        raise _RowError(f"{path or key} contains a NUL character or a lone surrogate")
    return value


def _has_lone_surrogate(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return True
    return False


def _json_number(parent: dict, key: str, path: str | None = None) -> int | None:
    """A whole number, or None when absent or unset; v0.0.40+ wraps some as {"set", "infinite", "number"}."""
    value = parent.get(key)
    if isinstance(value, dict):
        if value.get("set") is not True or value.get("infinite") is True:
            return None
        value = value.get("number")
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise _RowError(f"{path or key} is not a whole number")
    return value


def _json_index(parent: dict, key: str, path: str) -> int | None:
    """An array task id or het offset; older versions print Slurm's NO_VAL for "not set"."""
    value = _json_number(parent, key, path)
    return None if value is not None and value >= _SLURM_UNSET_NUMBER else value


def _json_state(state: object) -> str:
    if isinstance(state, dict):
        state = state.get("current")
    if isinstance(state, list) and state:
        state = state[0]  # the base state; flags such as REQUEUED may follow it
    if not isinstance(state, str):
        raise _RowError("state is not a Slurm job state")
    return state


def _epoch(times: dict, key: str) -> datetime | None:
    seconds = _json_number(times, key, f"time.{key}")
    if not seconds:
        return None  # 0 is how sacct --json says "not yet": never started, or still running
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise _RowError(f"time.{key} {seconds} is out of range") from None


def _json_gpus(tres: dict) -> int:
    allocated = tres.get("allocated")
    if allocated is None:
        return 0
    if not isinstance(allocated, list):
        raise _RowError("tres.allocated is not a list")
    gpus = None
    for entry in allocated:
        if not isinstance(entry, dict):
            raise _RowError("an entry of tres.allocated is not a JSON object")
        if entry.get("type") == "gres" and entry.get("name") == "gpu":
            if gpus is not None:
                raise _RowError("tres.allocated lists gres/gpu more than once")
            gpus = _json_number(entry, "count", "the gres/gpu count of tres.allocated")
            # Malformed rather than no GPUs (as the text's `gres/gpu=` is): read as 0, a GPU job would be charged
            # nothing without a word.
            if gpus is None:
                raise _RowError("the gres/gpu entry of tres.allocated has no count of GPUs")
    if gpus is not None and gpus >= GPU_COUNT_LIMIT:
        raise _RowError(f"the gres/gpu count of tres.allocated is {GPU_COUNT_LIMIT} or more")
    return gpus or 0
