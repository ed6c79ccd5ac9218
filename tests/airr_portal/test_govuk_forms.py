"""Every Django form renders as GOV.UK Design System fields, with hints, error messages and an error summary."""

import datetime

import pytest
from django import forms
from django.template.loader import render_to_string
from django.test import RequestFactory

from airr_portal.forms import GovukDateInput


class ExampleForm(forms.Form):
    title = forms.CharField(help_text="Up to 200 characters.")
    summary = forms.CharField(widget=forms.Textarea)
    system = forms.ChoiceField(choices=[("isambard-ai", "Isambard-AI"), ("dawn", "Dawn")], widget=forms.RadioSelect)
    start = forms.DateField(widget=GovukDateInput)
    terms = forms.BooleanField()


def _render(form) -> str:
    return str(form)


def test_a_valid_form_renders_govuk_controls_labels_and_hints():
    html = _render(ExampleForm())
    assert 'class="govuk-label"' in html
    assert 'class="govuk-input"' in html
    assert "govuk-textarea" in html
    assert "govuk-radios__input" in html
    assert "govuk-date-input__input" in html
    assert "govuk-checkboxes__input" in html
    assert 'id="id_title_helptext"' in html and 'aria-describedby="id_title_helptext"' in html
    assert "govuk-error-message" not in html


def test_a_field_with_an_error_shows_its_message_and_is_described_by_it():
    form = ExampleForm(data={"title": "", "summary": "x", "system": "dawn", "terms": "on"})
    assert not form.is_valid()
    html = _render(form)
    assert "govuk-form-group--error" in html
    assert "govuk-input--error" in html
    assert '<span class="govuk-visually-hidden">Error:</span>' in html
    assert "id_title_error" in html
    # The radios and checkbox stay unmarked because they are valid.
    assert html.count("govuk-form-group--error") == len(form.errors)


def test_the_date_input_reads_three_boxes_and_rejects_an_impossible_date():
    good = ExampleForm(
        data={
            "title": "t",
            "summary": "s",
            "system": "dawn",
            "terms": "on",
            "start_day": "1",
            "start_month": "4",
            "start_year": "2026",
        }
    )
    assert good.is_valid(), good.errors
    assert good.cleaned_data["start"] == datetime.date(2026, 4, 1)
    bad = ExampleForm(data={"start_day": "31", "start_month": "2", "start_year": "2026"})
    assert not bad.is_valid()
    assert "start" in bad.errors


@pytest.mark.django_db
def test_the_page_shows_an_error_summary_that_links_to_each_field_and_says_error_in_the_title(rf: RequestFactory):
    from django.contrib.auth.models import AnonymousUser

    form = ExampleForm(data={"title": "", "summary": "", "system": "", "terms": ""})
    form.is_valid()
    request = rf.get("/")
    request.user = AnonymousUser()
    html = render_to_string("airr_portal/accessibility.html", {"form": form}, request=request)
    assert 'data-module="govuk-error-summary"' in html
    assert "<title>Error: " in html
    assert 'href="#id_title"' in html
    # A radio group's error links to its first radio, which is what receives focus.
    assert 'href="#id_system_0"' in html
