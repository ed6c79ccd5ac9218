"""The report builder's form: what to report, grouped how, over which window, as of when, in which format.

The rules live in `services.check_report_parameters`, which the API uses too; this form only reads the fields
and puts each refusal beside the field it is about.
"""

from django import forms
from django.core.exceptions import ValidationError

from airr_portal.forms import GovukDateInput
from allocations.models import ReportExport

from .selectors import GROUPINGS
from .services import ReportParameters, check_report_parameters, reportable_programmes


def _date_messages(what: str) -> dict[str, str]:
    return {"required": f"Enter the {what}", "invalid": f"The {what} must be a real date, like 1 4 2026"}


class _ProgrammesField(forms.ModelMultipleChoiceField):
    """Ticked programmes; an id no database integer can hold is refused as a wrong choice (SQLite cannot even
    compare one in `IN (...)`)."""

    def _check_values(self, value):
        for pk in value:
            try:
                number = int(pk)  # as the field will read it: signs, spaces and underscores included
            except (TypeError, ValueError):
                continue  # the field refuses it itself
            if not -(2**63) <= number < 2**63:
                raise ValidationError(
                    self.error_messages["invalid_choice"], code="invalid_choice", params={"value": pk}
                )
        return super()._check_values(value)


class ReportForm(forms.Form):
    kind = forms.ChoiceField(
        label="What the report holds",
        choices=ReportExport.Kind.choices,
        initial=ReportExport.Kind.TOTALS,
        widget=forms.RadioSelect,
        error_messages={"required": "Choose what the report holds"},
    )
    groupings = forms.MultipleChoiceField(
        label="Group the totals by",
        choices=list(GROUPINGS.items()),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Choose one or more, for example programme, system and month. Not used for every job record",
    )
    start = forms.DateField(
        label="From",
        widget=GovukDateInput,
        help_text="For example, 1 4 2026",
        error_messages=_date_messages("start date"),
    )
    end = forms.DateField(
        label="To",
        widget=GovukDateInput,
        help_text="Inclusive. For example, 30 6 2026",
        error_messages=_date_messages("end date"),
    )
    programmes = _ProgrammesField(
        label="Programmes",
        queryset=None,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Leave all unticked for every programme you can report on",
    )
    format = forms.ChoiceField(
        label="File format",
        choices=ReportExport.Format.choices,
        initial=ReportExport.Format.CSV,
        widget=forms.RadioSelect,
        error_messages={"required": "Choose CSV or XLSX"},
    )
    as_of = forms.DateField(
        label="As recorded by",
        required=False,
        widget=GovukDateInput,
        help_text=(
            "Leave blank for now. Give an earlier date to get the figures exactly as the ledger held them at the "
            "end of that day, for example to repeat an earlier export"
        ),
        error_messages=_date_messages("as-of date"),
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["programmes"].queryset = reportable_programmes(user)

    def clean(self):
        cleaned = super().clean()
        for field, messages in check_report_parameters(self.user, self.parameters()).items():
            if field in self.errors:
                continue  # the field's own message (missing, not a date) says it first
            for message in messages:
                self.add_error(field if field in self.fields else None, message)
        return cleaned

    def parameters(self) -> ReportParameters:
        data = self.cleaned_data
        return ReportParameters(
            kind=data.get("kind"),
            groupings=list(data.get("groupings") or []),
            start=data.get("start"),
            end=data.get("end"),
            fmt=data.get("format"),
            programme_ids=[programme.pk for programme in data.get("programmes") or []],
            as_of=data.get("as_of"),
        )
