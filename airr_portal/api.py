"""Shared pieces of the REST API: one error format for every 4xx, and the 409 for a wrong state.

Every error body is `{"status": 400, "code": "invalid", "detail": "...", "errors": {field: [messages]}}`, so a
script handles failures one way whatever the endpoint.
"""

from django.conf import settings
from django.core.exceptions import PermissionDenied, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class Conflict(exceptions.APIException):
    """The action is not allowed in the object's current state."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "This action is not allowed in the current state."
    default_code = "conflict"


def _flatten(detail):
    if isinstance(detail, dict):
        return {
            key: [str(item) for item in (value if isinstance(value, list) else [value])]
            for key, value in detail.items()
        }
    if isinstance(detail, list):
        return {"non_field_errors": [str(item) for item in detail]}
    return {}


def error_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, TooManyFieldsSent):
        # Raised reading the query string (content negotiation reads it before any view) or a form body: Django's
        # answer would be a bare HTML 400.
        exc = exceptions.ParseError(
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS:,} query parameters or form "
            "fields: send only those the endpoint documents",
            code="too_many_fields",
        )
    elif isinstance(exc, TooManyFilesSent):
        exc = exceptions.ParseError(
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES:,} files", code="too_many_files"
        )
    response = exception_handler(exc, context)
    if response is None:
        return None
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    errors = _flatten(detail) if isinstance(exc, exceptions.ValidationError) else {}
    if isinstance(exc, exceptions.ValidationError):
        message = "The request has errors: see `errors`."
        code = "invalid"
    else:
        message = str(detail)
        code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
    response.data = {"status": response.status_code, "code": code, "detail": message, "errors": errors}
    return response


def conflict_response(message: str) -> Response:
    return Response(
        {"status": 409, "code": "conflict", "detail": message, "errors": {}}, status=status.HTTP_409_CONFLICT
    )
