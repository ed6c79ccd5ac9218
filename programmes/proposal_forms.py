"""Forms for the proposal pages: one per question page of the applicant's journey, and the director's,
assessor's and reviewer's forms. They only parse and check input; the services in `programmes.proposals`
decide what is allowed."""

from decimal import Decimal, InvalidOperation

from django import forms
from django.core.exceptions import ValidationError

from airr_portal.forms import GovukDateInput

from .models import FundPool, Proposal, System, TechnicalAssessment


def _is_zero(value) -> bool:
    try:
        return Decimal(str(value).strip().replace(",", "")) == 0
    except InvalidOperation:
        return False


def _hours_to_seconds(value, field: str, *, allow_zero: bool = False) -> int:
    from allocations.ledger import LedgerError, hours_to_seconds

    if allow_zero and _is_zero(value):
        return 0
    try:
        return hours_to_seconds(value)
    except LedgerError as error:
        raise ValidationError(error.message, code=field) from None


class DetailsForm(forms.ModelForm):
    class Meta:
        model = Proposal
        fields = ["title", "summary", "research_field", "keywords"]
        labels = {
            "title": "Project title",
            "summary": "Public summary",
            "research_field": "Research field",
            "keywords": "Keywords",
        }
        help_texts = {
            "summary": "Up to 200 words. If the proposal is awarded, this summary is published.",
            "research_field": "For example, natural language processing",
            "keywords": "Separate keywords with commas",
        }
        widgets = {"summary": forms.Textarea(attrs={"rows": 5})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, message in [
            ("title", "Enter a project title"),
            ("summary", "Enter a public summary"),
            ("research_field", "Enter a research field"),
            ("keywords", "Enter at least one keyword"),
        ]:
            self.fields[name].required = True
            self.fields[name].error_messages["required"] = message


class TimelineForm(forms.ModelForm):
    class Meta:
        model = Proposal
        fields = ["start_date", "duration_months"]
        labels = {
            "start_date": "When do you want to start?",
            "duration_months": "How many months do you need?",
        }
        widgets = {
            "start_date": GovukDateInput,
            "duration_months": forms.NumberInput(attrs={"class": "govuk-input--width-3", "inputmode": "numeric"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        call = self.instance.call
        self.fields["start_date"].required = True
        self.fields["start_date"].help_text = "For example, 1 6 2026"
        self.fields["start_date"].error_messages.update(
            required="Enter the start date", invalid="Start date must be a real date"
        )
        self.fields["duration_months"].required = True
        self.fields["duration_months"].help_text = f"At most {call.max_duration_months} months for this call"
        self.fields["duration_months"].error_messages.update(
            required="Enter the duration in months", invalid="Duration must be a whole number of months"
        )


class CaseForm(forms.ModelForm):
    class Meta:
        model = Proposal
        fields = ["case_for_support", "case_for_support_pdf"]
        labels = {"case_for_support": "Case for support", "case_for_support_pdf": "Upload a PDF"}
        help_texts = {
            "case_for_support": "Why this work matters, and why it needs national GPU time",
            "case_for_support_pdf": "Optional: figures and references, as a PDF of at most 10 MB",
        }
        widgets = {
            "case_for_support": forms.Textarea(attrs={"rows": 10}),
            "case_for_support_pdf": forms.FileInput(attrs={"accept": "application/pdf"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["case_for_support"].required = True
        self.fields["case_for_support"].error_messages["required"] = "Enter your case for support"


class DataForm(forms.ModelForm):
    class Meta:
        model = Proposal
        fields = ["data_statement", "ethics", "ethics_statement", "trusted_research_confirmed"]
        labels = {
            "data_statement": "What data will you use?",
            "ethics": "Ethical approval",
            "ethics_statement": "Ethical approval details",
            "trusted_research_confirmed": (
                "I confirm the project follows the UK's trusted research guidance and export controls"
            ),
        }
        help_texts = {
            "data_statement": "Where it comes from, its licence, and whether it holds personal data",
            "ethics_statement": "Needed if approval was given or applied for: the committee and reference",
        }
        widgets = {
            "data_statement": forms.Textarea(attrs={"rows": 5}),
            "ethics": forms.RadioSelect,
            "ethics_statement": forms.Textarea(attrs={"rows": 3}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["data_statement"].required = True
        self.fields["data_statement"].error_messages["required"] = "Enter what data you will use"
        self.fields["ethics"].required = True
        self.fields["ethics"].choices = Proposal.Ethics.choices
        self.fields["ethics"].error_messages["required"] = "Select whether ethical approval is needed"
        self.fields["trusted_research_confirmed"].required = True
        self.fields["trusted_research_confirmed"].error_messages["required"] = (
            "Confirm the project follows trusted research guidance"
        )

    def clean(self):
        cleaned = super().clean()
        if (
            cleaned.get("ethics") in (Proposal.Ethics.APPROVED, Proposal.Ethics.PENDING)
            and not cleaned.get("ethics_statement", "").strip()
        ):
            self.add_error("ethics_statement", "Enter the committee and reference of the ethical approval")
        return cleaned


class DeclarationsForm(forms.Form):
    accept_terms = forms.BooleanField(
        label="I accept the AIRR terms of access and confirm the information in this proposal is true",
        error_messages={"required": "Accept the terms to continue"},
    )


class ResourceForm(forms.Form):
    system = forms.ModelChoiceField(
        queryset=System.objects.none(),
        empty_label="Choose a system",
        label="System",
        error_messages={"required": "Select a system"},
    )
    method = forms.CharField(
        label="Method",
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="What each run does, and how you measured what one run costs",
        error_messages={"required": "Enter your method"},
    )
    runs = forms.IntegerField(
        label="Number of runs",
        min_value=1,
        widget=forms.NumberInput(attrs={"class": "govuk-input--width-5", "inputmode": "numeric"}),
        error_messages={
            "required": "Enter the number of runs",
            "invalid": "Number of runs must be a whole number",
            "min_value": "Number of runs must be 1 or more",
        },
    )
    hours_per_run = forms.CharField(
        label="GPU-hours per run",
        help_text="GPUs per job × hours each run takes; the total requested is runs × GPU-hours per run",
        widget=forms.TextInput(attrs={"class": "govuk-input--width-10", "inputmode": "decimal"}),
        error_messages={"required": "Enter the GPU-hours per run"},
    )
    gpus_per_job = forms.IntegerField(
        label="GPUs per job",
        min_value=1,
        widget=forms.NumberInput(attrs={"class": "govuk-input--width-5", "inputmode": "numeric"}),
        error_messages={
            "required": "Enter the GPUs per job",
            "invalid": "GPUs per job must be a whole number",
            "min_value": "GPUs per job must be 1 or more",
        },
    )
    software = forms.CharField(
        label="Software and containers",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="For example, PyTorch 2.4 in an Apptainer image",
    )

    def __init__(self, *args, call, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["system"].queryset = call.systems()

    def clean_hours_per_run(self):
        return _hours_to_seconds(self.cleaned_data["hours_per_run"], "hours_per_run")


class MemberForm(forms.Form):
    email = forms.EmailField(
        label="Co-investigator's email address",
        widget=forms.EmailInput(attrs={"autocomplete": "off"}),
        error_messages={
            "required": "Enter an email address",
            "invalid": "Enter an email address in the correct format, like name@example.ac.uk",
        },
    )


class ReasonForm(forms.Form):
    reason = forms.CharField(label="Reason (optional)", required=False, widget=forms.Textarea(attrs={"rows": 3}))


class RequestChangesForm(forms.Form):
    message = forms.CharField(
        label="What should the applicant change?",
        widget=forms.Textarea(attrs={"rows": 5}),
        error_messages={"required": "Enter what the applicant needs to change"},
    )


class AssessmentForm(forms.Form):
    outcome = forms.ChoiceField(
        label="Is the request feasible on this system?",
        choices=TechnicalAssessment.Outcome.choices,
        widget=forms.RadioSelect,
        error_messages={"required": "Select whether the request is feasible"},
    )
    notes = forms.CharField(
        label="Notes",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Needed for conditions, or when it is not feasible",
    )


class AssignReviewerForm(forms.Form):
    email = forms.EmailField(
        label="Reviewer's email address",
        help_text="Someone without an account gets an email invitation",
        widget=forms.EmailInput(attrs={"autocomplete": "off"}),
        error_messages={
            "required": "Enter an email address",
            "invalid": "Enter an email address in the correct format, like name@example.ac.uk",
        },
    )


class ConflictForm(forms.Form):
    has_conflict = forms.TypedChoiceField(
        label="Do you have a conflict of interest with this proposal or its team?",
        choices=[("no", "No"), ("yes", "Yes")],
        coerce=lambda value: value == "yes",
        widget=forms.RadioSelect,
        error_messages={"required": "Select yes if you have a conflict of interest"},
    )
    details = forms.CharField(
        label="Describe the conflict",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Only if you answered yes: you will be taken off this proposal",
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("has_conflict") and not cleaned.get("details", "").strip():
            self.add_error("details", "Describe the conflict of interest")
        return cleaned


class ReviewForm(forms.Form):
    """One 1–5 score and one comment per criterion of the call, then a comment the director may release."""

    def __init__(self, *args, criteria, **kwargs):
        super().__init__(*args, **kwargs)
        self.criteria = list(criteria)
        for criterion in self.criteria:
            self.fields[f"score_{criterion.pk}"] = forms.TypedChoiceField(
                label=f"{criterion.name}: score",
                choices=[(str(n), str(n)) for n in range(1, 6)],
                coerce=int,
                widget=forms.RadioSelect(attrs={"class": "govuk-radios--inline"}),
                help_text=criterion.guidance or "1 is poor, 5 is excellent",
                error_messages={"required": f"Select a score for {criterion.name}"},
            )
            self.fields[f"comment_{criterion.pk}"] = forms.CharField(
                label=f"{criterion.name}: comment",
                widget=forms.Textarea(attrs={"rows": 3}),
                error_messages={"required": f"Enter a comment on {criterion.name}"},
            )
        self.fields["comment_for_applicant"] = forms.CharField(
            label="Comments for the applicant",
            required=False,
            widget=forms.Textarea(attrs={"rows": 4}),
            help_text="The director may show these to the applicant, without your name or scores",
        )

    def scores(self) -> dict[int, tuple[int, str]]:
        return {c.pk: (self.cleaned_data[f"score_{c.pk}"], self.cleaned_data[f"comment_{c.pk}"]) for c in self.criteria}


class DecisionForm(forms.Form):
    """Award in full, award part, or reject. A partial award is decided system by system: on each system the
    proposal asks for, fewer GPU-hours (0 for nothing there), a shorter window, or what was asked for."""

    outcome = forms.ChoiceField(
        label="Decision",
        choices=[
            ("award_full", "Award in full"),
            ("award_part", "Award part of the request"),
            ("reject", "Reject"),
        ],
        widget=forms.RadioSelect,
        error_messages={"required": "Select a decision"},
    )
    start = forms.DateField(
        label="Start date",
        required=False,
        widget=GovukDateInput,
        help_text="Leave empty for the requested start",
    )
    rationale = forms.CharField(
        label="Rationale",
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="The applicant reads this",
        error_messages={"required": "Enter the rationale for the decision"},
    )

    def __init__(self, *args, requests, pools, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = list(requests)
        self.pools_by_system = {}
        for pool in pools:
            self.pools_by_system.setdefault(pool.system_id, []).append(pool)
        self.fields["start"].error_messages["invalid"] = "Start date must be a real date"
        rationale = self.fields.pop("rationale")
        for request in self.requests:
            name = request.system.name
            pools_here = self.pools_by_system.get(request.system_id, [])
            if len(pools_here) > 1:
                self.fields[f"pool_{request.system_id}"] = forms.ModelChoiceField(
                    queryset=FundPool.objects.filter(pk__in=[p.pk for p in pools_here]).select_related("system"),
                    label=f"Fund pool on {name}",
                    empty_label=None,
                    error_messages={"required": f"Choose the fund pool to award from on {name}"},
                )
            self.fields[f"hours_{request.system_id}"] = forms.CharField(
                label=f"GPU-hours to award on {name}",
                required=False,
                help_text="For a partial award: fewer than requested, or 0 for nothing on this system",
                widget=forms.TextInput(attrs={"class": "govuk-input--width-10", "inputmode": "decimal"}),
            )
            self.fields[f"end_{request.system_id}"] = forms.DateField(
                label=f"End date on {name}",
                required=False,
                widget=GovukDateInput,
                help_text="For a shorter window",
                error_messages={"invalid": f"End date on {name} must be a real date"},
            )
        self.fields["rationale"] = rationale

    def clean(self):
        cleaned = super().clean()
        changed = False
        for request in self.requests:
            hours = cleaned.get(f"hours_{request.system_id}")
            if hours:
                try:
                    cleaned[f"seconds_{request.system_id}"] = _hours_to_seconds(hours, "hours", allow_zero=True)
                except ValidationError as error:
                    self.add_error(f"hours_{request.system_id}", error)
            changed = changed or bool(hours) or bool(cleaned.get(f"end_{request.system_id}"))
        if cleaned.get("outcome") == "award_part" and self.requests and not changed:
            self.add_error(f"hours_{self.requests[0].system_id}", "Enter the GPU-hours to award, or a shorter window")
        return cleaned

    def award_parts(self, *, start, end) -> list:
        """What to award on each system, filled from the request where the director left a field empty;
        systems given 0 GPU-hours are left out. `start` and `end` are the requested window."""
        from allocations.awards import AwardPart, pool_for

        data, parts = self.cleaned_data, []
        in_full = data["outcome"] == "award_full"
        for request in self.requests:
            seconds = data.get(f"seconds_{request.system_id}")
            seconds = request.seconds if in_full or seconds is None else seconds
            if seconds == 0:
                continue
            chosen = data.get(f"pool_{request.system_id}")
            try:
                pool = pool_for(request.system, self.pools_by_system.get(request.system_id, []), chosen)
            except ValidationError as problem:
                raise ValidationError({"hours": problem.messages}) from None
            parts.append(
                AwardPart(
                    pool=pool,
                    seconds=seconds,
                    start=data.get("start") or start,
                    end=(None if in_full else data.get(f"end_{request.system_id}")) or end,
                )
            )
        return parts
