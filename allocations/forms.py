"""Forms for the ledger pages: hours typed in GPU-hours, checked to a GPU-second before a service runs."""

import uuid

from django import forms

from airr_portal.forms import GovukDateInput
from airr_portal.validators import validate_not_future, validate_service_date
from programmes.models import FundPool, Programme, System

from . import ledger
from .selectors import start_of_day


class PoolMovementForm(forms.Form):
    """Deposit into or withdraw from a pool; the hidden key makes a double submit move hours only once."""

    hours = forms.CharField(
        label="GPU-hours",
        help_text="For example, 160000 or 12.5",
        widget=forms.TextInput(attrs={"class": "govuk-input--width-10", "inputmode": "decimal", "spellcheck": "false"}),
    )
    effective_date = forms.DateField(
        label="Date it takes effect",
        required=False,
        widget=GovukDateInput,
        help_text="Leave blank for today. For example, 1 4 2026",
        validators=[validate_service_date],
    )
    reason = forms.CharField(
        label="Reason",
        max_length=2000,
        help_text="This appears on the pool's statement",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=200)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("initial", {}).setdefault("idempotency_key", uuid.uuid4().hex)
        super().__init__(*args, **kwargs)

    def clean_hours(self) -> int:
        """Cleaned as whole GPU-seconds."""
        try:
            return ledger.hours_to_seconds(self.cleaned_data["hours"])
        except ledger.InvalidAmount as error:
            raise forms.ValidationError(error.message) from None

    @property
    def effective_at(self):
        day = self.cleaned_data.get("effective_date")
        return start_of_day(day) if day else None

    def add_ledger_error(self, error: ledger.LedgerError) -> None:
        self.add_error(error.field if error.field in self.fields else None, error.message)


class TransferForm(PoolMovementForm):
    destination = forms.ModelChoiceField(
        queryset=FundPool.objects.none(),
        label="Pool to transfer to",
        empty_label="Choose a pool",
        help_text="Only pools on the same system can receive these hours",
    )
    field_order = ["destination", "hours", "effective_date", "reason"]

    def __init__(self, *args, source: FundPool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["destination"].queryset = (
            FundPool.objects.filter(system=source.system).exclude(pk=source.pk).select_related("programme")
        )
        self.fields["destination"].label_from_instance = lambda pool: f"{pool.name} ({pool.programme.name})"


def _statement_date(label: str, example: str, *, validators=(), **options) -> forms.DateField:
    """An optional date of a statement's window, whose error names it."""
    return forms.DateField(
        label=label,
        required=False,
        widget=GovukDateInput,
        validators=[validate_service_date, *validators],
        error_messages={"invalid": f"The {label} date must be a real date, for example {example}"},
        **options,
    )


class StatementFilterForm(forms.Form):
    """Which part of a statement to show: a window of effective dates, as the ledger stood on a day."""

    start = _statement_date("From", "1 4 2026")
    end = _statement_date("To", "30 6 2026")
    as_of = _statement_date(
        "As recorded by",
        "1 4 2026",
        validators=[validate_not_future],
        help_text="Leave blank for now. Give a past date to see the statement exactly as it was on that day",
    )

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end and end < start:
            self.add_error("end", "The end date must be on or after the start date")
        return cleaned


class RegisterFilterForm(forms.Form):
    """The public register's search and filters, read from the query string; every choice is checked."""

    q = forms.CharField(
        label="Search",
        required=False,
        max_length=200,
        help_text="Words from the title or summary, an organisation, or a reference like AIRR-2026-00042",
        error_messages={"max_length": "Search must be 200 characters or fewer"},
    )
    programme = forms.ModelChoiceField(
        queryset=Programme.objects.all(),
        to_field_name="slug",
        required=False,
        empty_label="All programmes",
        error_messages={"invalid_choice": "Select a programme from the list"},
    )
    system = forms.ModelChoiceField(
        queryset=System.objects.all(),
        to_field_name="slug",
        required=False,
        empty_label="All systems",
        error_messages={"invalid_choice": "Select a system from the list"},
    )
    year = forms.TypedChoiceField(
        label="Year",
        required=False,
        coerce=int,
        empty_value=None,
        help_text="Awards running at any time in the year",
        error_messages={"invalid_choice": "Select a year from the list"},
    )

    def __init__(self, *args, years: list[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["year"].choices = [("", "All years"), *((year, str(year)) for year in years)]

    def filters(self) -> dict:
        """The valid filters, as keyword arguments for `selectors.public_awards`; invalid ones are left out."""
        data = self.cleaned_data if self.is_bound else {}
        return {
            "search": (data.get("q") or "").strip(),
            "programme": data.get("programme"),
            "system": data.get("system"),
            "year": data.get("year"),
        }
