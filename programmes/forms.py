"""Forms for the programme pages: a new fund pool and a director invitation."""

from django import forms

from airr_portal.forms import GovukDateInput

from .models import FundPool, System


class FundPoolForm(forms.ModelForm):
    system = forms.ModelChoiceField(queryset=System.objects.all(), empty_label="Choose a system")

    class Meta:
        model = FundPool
        fields = ["name", "system", "valid_from", "valid_until", "unused_hours_policy", "grace_percent"]
        labels = {
            "name": "Pool name",
            "valid_from": "First day",
            "valid_until": "Last day",
            "unused_hours_policy": "When an allocation ends, its unused hours are",
            "grace_percent": "Grace (per cent)",
        }
        help_texts = {
            "name": "For example, Open-Source AI Builder Fund 2026–27",
            "valid_from": "The first day awards from this pool may run, for example 1 4 2026",
            "valid_until": "The last day awards from this pool may run, for example 31 3 2027",
        }
        widgets = {
            "valid_from": GovukDateInput,
            "valid_until": GovukDateInput,
            "grace_percent": forms.NumberInput(attrs={"class": "govuk-input--width-3"}),
            "unused_hours_policy": forms.RadioSelect,
        }

    def __init__(self, *args, programme, **kwargs):
        super().__init__(*args, **kwargs)
        self.instance.programme = programme

    def clean(self):
        cleaned = super().clean()
        valid_from, valid_until = cleaned.get("valid_from"), cleaned.get("valid_until")
        if valid_from and valid_until and valid_until < valid_from:
            self.add_error("valid_until", "The last day must be on or after the first day")
        return cleaned


class DirectorInvitationForm(forms.Form):
    email = forms.EmailField(
        label="Email address",
        help_text=("If they have no account yet, they become a director when they sign up and confirm this address."),
        widget=forms.EmailInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
