"""Every Django form in the portal renders as GOV.UK Design System fields.

`settings.FORM_RENDERER` names `GovukFormRenderer`, so `{{ form }}` and `{{ form.field.as_field_group }}` give
GOV.UK labels, hints, error messages and controls, linked by `aria-describedby`; radios and checkbox lists
come in a fieldset with a legend. Ask for a narrower input with a GOV.UK class on the widget
(`forms.TextInput(attrs={"class": "govuk-input--width-10"})`) and for a date with `GovukDateInput`.
Templates are in `templates/govuk/forms/`; the error summary is `govuk/includes/error_summary.html`.
"""

import datetime

from django import forms
from django.forms.boundfield import BoundField
from django.forms.renderers import TemplatesSetting

# The GOV.UK class each kind of control wears, and the one it adds when its field has an error.
_CONTROL_CLASSES = {
    "input": ("govuk-input", "govuk-input--error"),
    "textarea": ("govuk-textarea", "govuk-textarea--error"),
    "select": ("govuk-select", "govuk-select--error"),
    "file": ("govuk-file-upload", "govuk-file-upload--error"),
    "radios": ("govuk-radios__input", ""),
    "checkboxes": ("govuk-checkboxes__input", ""),
    "checkbox": ("govuk-checkboxes__input", ""),
}


class GovukDateInput(forms.MultiWidget):
    """GOV.UK date input: day, month and year boxes for a `DateField`, never a browser date picker."""

    template_name = "govuk/forms/date_input.html"
    use_fieldset = True
    _parts = (("day", "Day", 2), ("month", "Month", 2), ("year", "Year", 4))

    def __init__(self, attrs=None):
        widgets = {name: forms.TextInput(attrs={"inputmode": "numeric"}) for name, _, _ in self._parts}
        super().__init__(widgets, attrs)

    def decompress(self, value):
        if isinstance(value, datetime.date):
            return [value.day, value.month, value.year]
        if isinstance(value, str) and value:
            # What value_from_datadict built from the three boxes, shown back as typed when it was invalid.
            year, _, rest = value.partition("-")
            month, _, day = rest.partition("-")
            return [day, month, year]
        return [None, None, None]

    def value_from_datadict(self, data, files, name):
        day, month, year = ((part or "").strip() for part in super().value_from_datadict(data, files, name))
        if not (day or month or year):
            return None
        # ISO order, which DateField always accepts; anything malformed fails its validation with a message.
        return f"{year}-{month}-{day}"

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        has_error = context["widget"]["attrs"].get("aria-invalid") == "true"
        for subwidget, (_, label, width) in zip(context["widget"]["subwidgets"], self._parts, strict=True):
            classes = f"govuk-input govuk-date-input__input govuk-input--width-{width}"
            subwidget["attrs"]["class"] = classes + (" govuk-input--error" if has_error else "")
            subwidget["label"] = label
        return context


def _control_kind(widget) -> str:
    """Which GOV.UK component renders this widget (order matters: the checks go from subclass to base)."""
    if widget.is_hidden:
        return "hidden"
    if isinstance(widget, GovukDateInput):
        return "date"
    if isinstance(widget, forms.CheckboxSelectMultiple):
        return "checkboxes"
    if isinstance(widget, forms.RadioSelect):
        return "radios"
    if isinstance(widget, forms.CheckboxInput):
        return "checkbox"
    if isinstance(widget, forms.Select):
        return "select"
    if isinstance(widget, forms.Textarea):
        return "textarea"
    if isinstance(widget, forms.FileInput):
        return "file"
    if isinstance(widget, forms.MultiWidget):
        return "multiple"
    return "input"


class GovukBoundField(BoundField):
    """A form field that knows its GOV.UK component and dresses its control in that component's classes."""

    @property
    def govuk_kind(self) -> str:
        return _control_kind(self.field.widget)

    @property
    def error_target_id(self) -> str:
        """The id the error summary links to: the control itself, or the first control of a group."""
        widget = self.field.widget
        id_ = widget.attrs.get("id") or self.auto_id
        if isinstance(widget, forms.RadioSelect):
            return widget.id_for_label(id_, "0")
        if isinstance(widget, forms.MultiWidget):
            return f"{id_}_0"
        return self.id_for_label or id_

    def build_widget_attrs(self, attrs, widget=None):
        attrs = super().build_widget_attrs(attrs, widget)
        widget = widget or self.field.widget
        control_class, error_class = _CONTROL_CLASSES.get(_control_kind(widget), ("", ""))
        if control_class:
            classes = [control_class, widget.attrs.get("class", ""), attrs.get("class", "")]
            if self.errors:
                classes.append(error_class)
            attrs["class"] = " ".join(name for name in classes if name)
        # GOV.UK never uses placeholder text: it vanishes as people type and is no label (allauth sets some).
        if "placeholder" in widget.attrs:
            attrs["placeholder"] = False
        # Spellcheck only mangles addresses and codes; a code box is as wide as a code, as GOV.UK's are.
        if isinstance(widget, forms.EmailInput) or widget.attrs.get("autocomplete") == "one-time-code":
            attrs["spellcheck"] = "false"
        if widget.attrs.get("autocomplete") == "one-time-code":
            attrs["class"] = f"{attrs.get('class', '')} govuk-input--width-10".strip()
        return attrs


class GovukFormRenderer(TemplatesSetting):
    """Renders forms, fields and widgets with the project's templates, in GOV.UK Design System markup."""

    form_template_name = "govuk/forms/form.html"
    field_template_name = "govuk/forms/field.html"
    bound_field_class = GovukBoundField
