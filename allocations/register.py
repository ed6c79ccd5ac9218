"""The public register of awards: a searchable page, and the same rows as open data in CSV and JSON.

Nobody signs in. Rows come only from `selectors.public_awards` (accepted awards, public fields only), and every
GPU-hour figure is what the ledger committed to the allocation, net of any revocation. The page is paginated;
the downloads honour the same search and filters and stream, so their memory does not grow with the register.
Both downloads state the licence: the JSON in a top-level `licence` object, the CSV in `#` comment lines before
its header row (read it with `pandas.read_csv(url, skiprows=2)`: `comment="#"` would also cut a title at a `#`),
and both in a `Link: <…>; rel="license"` header.
"""

import csv
import json

from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from .downloads import Echo, spreadsheet_safe
from .forms import RegisterFilterForm
from .ledger import seconds_to_hours
from .querystrings import query_without
from .selectors import public_awards, register_years

LICENCE = {
    "name": "Open Government Licence v3.0",
    "url": "https://www.nationalarchives.gov.uk/doc/open-government-licence/version/3/",
}
PAGE_SIZE = 50
# The open data's columns, in order; the JSON uses the same names.
COLUMNS = [
    "reference",
    "title",
    "summary",
    "lead_organisation",
    "programme",
    "call",
    "system",
    "gpu_hours",
    "gpu_seconds",
    "start_date",
    "end_date",
    "status",
]


def _record(row: dict) -> dict:
    return {
        "reference": row["reference"],
        "title": row["title"],
        "summary": row["summary"],
        "lead_organisation": row["lead_organisation"],
        "programme": row["programme"],
        "call": row["call"],
        "system": row["system_name"],
        "gpu_hours": str(seconds_to_hours(row["awarded_seconds"])),
        "gpu_seconds": row["awarded_seconds"],
        "start_date": row["start_date"].isoformat(),
        "end_date": row["end_date"].isoformat(),
        "status": row["state"],
    }


def _filter_form(request) -> RegisterFilterForm:
    form = RegisterFilterForm(request.GET, years=register_years())
    form.is_valid()
    return form


@require_GET
def award_list(request):
    form = _filter_form(request)
    rows = public_awards(**form.filters())
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "allocations/register/award_list.html",
        {
            "form": form,
            "page": page,
            "query": query_without(request, "page"),
            "licence": LICENCE,
            # A page number past the end is shown the last page; say so rather than pretend it was asked for.
            "page_moved": request.GET.get("page") not in (None, "", str(page.number)),
        },
    )


def _refuse(form: RegisterFilterForm, as_json: bool) -> HttpResponse:
    errors = {field: [str(message) for message in messages] for field, messages in form.errors.items()}
    if as_json:
        body = {
            "status": 400,
            "code": "invalid",
            "detail": "The request has errors: see `errors`.",
            "errors": errors,
        }
        return JsonResponse(body, status=400)
    text = "".join(f"{field}: {' '.join(messages)}\n" for field, messages in errors.items())
    return HttpResponse(text, status=400, content_type="text/plain; charset=utf-8")


def _licensed(response: HttpResponse, filename: str) -> HttpResponse:
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Link"] = f'<{LICENCE["url"]}>; rel="license"'
    return response


@require_GET
def awards_csv(request):
    form = _filter_form(request)
    if form.errors:
        return _refuse(form, as_json=False)
    rows = public_awards(**form.filters()).iterator(chunk_size=2000)
    writer = csv.writer(Echo())

    def lines():
        yield f"# AIRR register of awards. Licence: {LICENCE['name']}, {LICENCE['url']}\r\n"
        yield f"# Generated at {timezone.now().isoformat()}\r\n"
        yield writer.writerow(COLUMNS)
        for row in rows:
            record = _record(row)
            yield writer.writerow([spreadsheet_safe(record[column]) for column in COLUMNS])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    return _licensed(response, "airr-awards.csv")


@require_GET
def awards_json(request):
    form = _filter_form(request)
    if form.errors:
        return _refuse(form, as_json=True)
    filters = form.filters()
    rows = public_awards(**filters).iterator(chunk_size=2000)
    head = {
        "licence": LICENCE,
        "generated_at": timezone.now().isoformat(),
        "filters": {
            "q": filters["search"],
            "programme": filters["programme"].slug if filters["programme"] else None,
            "system": filters["system"].slug if filters["system"] else None,
            "year": filters["year"],
        },
    }

    def chunks():
        # The head's closing brace is replaced by the awards array, written one award at a time.
        yield json.dumps(head, cls=DjangoJSONEncoder)[:-1] + ', "awards": ['
        for index, row in enumerate(rows):
            yield ("," if index else "") + json.dumps(_record(row), cls=DjangoJSONEncoder)
        yield "]}"

    response = StreamingHttpResponse(chunks(), content_type="application/json")
    return _licensed(response, "airr-awards.json")
