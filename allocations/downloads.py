"""What the portal's CSV and XLSX downloads share: cells a spreadsheet shows but never runs, and csv rows for a
streamed response."""

# A cell starting with one of these is a formula to a spreadsheet (and openpyxl writes it as one).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """Text that starts like a formula gets a leading apostrophe, so it is only ever shown (CSV injection)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class Echo:
    """A file-like object whose `write` returns what it is given, so csv.writer can feed a generator."""

    def write(self, value: str) -> str:
        return value
