"""Forms for the operators' usage pages (rendered as GOV.UK fields by the project's form renderer)."""

from django import forms
from django.conf import settings
from django.utils.html import format_html

from allocations.models import Allocation, IngestBatch
from programmes.models import System

from .team import parse_usernames


class _ForOperatedSystems:
    """A form whose system is one the operator runs (`systems`): another's is refused as an invalid choice."""

    def __init__(self, *args, systems, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["system"].queryset = systems


class IngestTokenForm(_ForOperatedSystems, forms.Form):
    system = forms.ModelChoiceField(
        queryset=System.objects.none(), empty_label=None, error_messages={"required": "Choose the system"}
    )
    name = forms.CharField(
        label="Name",
        max_length=100,
        help_text="Where it will be used, for example 'sacct cron on login1'",
        error_messages={"required": "Enter a name for the token, such as where it will be used"},
    )


class UploadForm(_ForOperatedSystems, forms.Form):
    system = forms.ModelChoiceField(
        queryset=System.objects.none(), empty_label=None, error_messages={"required": "Choose the system"}
    )
    file = forms.FileField(
        label="sacct output",
        help_text="sacct --parsable2 (or --parsable, or --json) output with a header line; gzip accepted",
        error_messages={"required": "Choose a file of sacct output", "empty": "The file is empty: choose sacct output"},
    )
    delimiter = forms.CharField(
        label="Delimiter", required=False, max_length=4, help_text="Only if it cannot be detected"
    )
    columns = forms.CharField(
        label="Column names",
        required=False,
        max_length=2000,
        help_text="Comma-separated, only for output made with --noheader",
    )

    @classmethod
    def refusing(cls, error: forms.ValidationError, *, field: str | None, systems) -> "UploadForm":
        """The form, empty, showing `error`: for a request refused before its fields could be read."""
        form = cls(systems=systems)
        form.cleaned_data = {}  # add_error removes the field from it, and an unbound form has none
        form.add_error(field, error)
        return form

    def clean_file(self):
        file = self.cleaned_data["file"]
        if file.size > settings.INGEST_MAX_BYTES:
            raise file_too_large()
        return file


def file_too_large() -> forms.ValidationError:
    limit = settings.INGEST_MAX_BYTES // (1024 * 1024)
    return forms.ValidationError(
        f"The file must be smaller than {limit} MB: gzip it, or split it by date", code="too_large"
    )


def fields_too_large() -> forms.ValidationError:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024
    return forms.ValidationError(
        f"The form's fields other than the file are larger than {limit:,} KB: choose the sacct output as the file",
        code="too_large",
    )


def too_many_fields() -> forms.ValidationError:
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    return forms.ValidationError(
        f"The form had more than {limit:,} fields, so nothing was stored: send the system and one file of sacct output",
        code="too_many_fields",
    )


def too_many_files() -> forms.ValidationError:
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES
    return forms.ValidationError(
        f"The form had more than {limit:,} files, so nothing was stored: choose one file of sacct output",
        code="too_many_files",
    )


class DealtWithForm(forms.Form):
    note = forms.CharField(
        label="Why does this batch need nothing more?",
        max_length=IngestBatch._meta.get_field("dealt_with_note").max_length,
        help_text="For example, 'window re-sent in batch 123' or 'not sacct output: uploaded by mistake'",
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={
            "required": "Enter why this batch needs nothing more",
            "max_length": "The note must be %(limit_value)d characters or fewer",
        },
    )


class _AllocationByAccount(forms.ModelChoiceField):
    """An allocation named by its scheduler account, spaces around the name ignored."""

    def to_python(self, value):
        return super().to_python(value.strip() if isinstance(value, str) else value)


class AssignAccountForm(forms.Form):
    """An unmatched account and the allocation to give it to, named by its scheduler account.

    Named rather than chosen from a list: a system has thousands of allocations, and a list of them on each row of
    the unmatched page made the page grow with their product.
    """

    account = forms.CharField(widget=forms.HiddenInput, max_length=64, required=False)
    allocation = _AllocationByAccount(
        queryset=Allocation.objects.none(),
        to_field_name="scheduler_account",
        widget=forms.TextInput,
        label="Allocation's scheduler account",
        error_messages={
            "required": "Enter the scheduler account of the allocation to assign it to",
            "invalid_choice": "No allocation of this system has that scheduler account",
        },
    )

    def __init__(self, *args, system: System, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["allocation"].queryset = Allocation.objects.filter(system=system)


class MemberUsernamesForm(forms.Form):
    """A field for the PI and one per co-investigator: their usernames on the allocation's system, separated by
    commas. The PI's own are asked for so that none of them is given to a co-investigator, who would then see the
    PI's jobs as theirs."""

    def __init__(self, *args, allocation: Allocation, members, recorded: dict[int, list[str]], **kwargs):
        super().__init__(*args, **kwargs)
        holder = allocation.holder
        # The PI's field first: a name given twice is refused on the later field, the co-investigator's.
        self.people = ([holder] if holder is not None else []) + list(members)
        for person in self.people:
            is_holder = person == holder
            self.fields[f"member_{person.pk}"] = forms.CharField(
                label=f"{person} (PI)" if is_holder else str(person),
                required=False,
                max_length=1000,
                initial=", ".join(recorded.get(person.pk, [])),
                # Hints are rendered as markup (templates/govuk/forms/hint_and_error.html), and an address's quoted
                # local part may hold `<`: escaped here.
                help_text=format_html(
                    "{}: {} usernames on {}, separated by commas{}",
                    person.email,
                    "the PI's own" if is_holder else "their",
                    allocation.pool.system.name,
                    "; no co-investigator can be given one of them" if is_holder else "",
                ),
            )

    def clean(self):
        cleaned = super().clean()
        owner: dict[str, str] = {}
        self.usernames: dict[int, list[str]] = {}
        for person in self.people:
            field = f"member_{person.pk}"
            if field not in cleaned:
                continue  # its own error is shown already
            try:
                names = parse_usernames(cleaned[field])
            except ValueError as problem:
                self.add_error(field, str(problem))
                continue
            for name in names:
                if name in owner:
                    self.add_error(field, f"'{name}' is given to {owner[name]} already: a username is one person's")
                owner.setdefault(name, self.fields[field].label)
            self.usernames[person.pk] = names
        return cleaned
