"""Validators shared by the apps' models, forms and API serializers."""

import zoneinfo
from datetime import date
from functools import cache

from django.core.exceptions import ValidationError
from django.utils import timezone

# The years a date in the portal may fall in. Beyond them a date is a slip of the keyboard (9999 for "open
# ended"), and the day after 31 December 9999, which every window's end needs, does not exist.
EARLIEST_DATE, LATEST_DATE = date(2000, 1, 1), date(2099, 12, 31)


def validate_service_date(value: date) -> None:
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise ValidationError("Enter a date from 2000 to 2099", code="date_out_of_range")


def validate_not_future(value: date) -> None:
    """For "as recorded by": what the ledger will hold at the end of a day to come is not known yet."""
    if value > timezone.localdate():
        raise ValidationError("Enter today or an earlier date: what is recorded later is not known yet", code="future")


@cache
def _known_time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(value: str) -> None:
    if value not in _known_time_zones():
        raise ValidationError(
            "Enter a time zone of the IANA database, such as UTC or Europe/London", code="unknown_time_zone"
        )
