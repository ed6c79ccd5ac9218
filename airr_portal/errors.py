"""Error pages: JSON in the API's one error format under /api/, GOV.UK pages everywhere else."""

from django.http import JsonResponse
from django.shortcuts import render
from django.template.loader import get_template


def page_not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"status": 404, "code": "not_found", "detail": "There is nothing at this address.", "errors": {}},
            status=404,
        )
    return render(request, "404.html", status=404)


def server_error(request):
    if request.path.startswith("/api/"):
        return JsonResponse(
            {
                "status": 500,
                "code": "server_error",
                "detail": "Something went wrong on our side.",
                "errors": {},
            },
            status=500,
        )
    # No context processors: the failure may lie in one of them.
    from django.http import HttpResponseServerError

    return HttpResponseServerError(get_template("500.html").render({}))
