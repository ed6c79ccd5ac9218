"""The cluster's API: post job records and usage reports with the system's ingest token; read limits.

Every refusal uses the project's one error format; nothing a cluster can send answers 500.
"""

from __future__ import annotations

import tempfile

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from allocations.models import IngestBatch, IngestToken
from programmes.models import System

from .authentication import IngestTokenAuthentication, IsIngestTokenOfSystem, IsIngestTokenOfSystemOrAdmin
from .ingest import (
    IngestError,
    PayloadExpandsTooFar,
    batch_summary,
    declared_size,
    ingest_sacct,
    receive_payload,
)
from .limits import account_limits
from .services import enqueue_ingest, enqueue_reconciliation
from .variance import REPORT_MAX_BYTES, UsageReportError, record_usage_report

READ_CHUNK = 1 << 20


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


def _too_large() -> PayloadTooLarge:
    limit = settings.INGEST_MAX_BYTES // (1024 * 1024)
    return PayloadTooLarge(
        f"The payload is larger than {limit} MB: send a shorter window (sacct -S/-E) or gzip it "
        "(Content-Encoding: gzip)"
    )


def _report_too_large() -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The report is larger than {REPORT_MAX_BYTES // (1024 * 1024)} MB, far more than a cluster's accounts "
        "take: send this cluster's sshare or sreport output alone"
    )


def _read_body(request, *, expected: str, limit: int | None = None, too_large=_too_large):
    """The request body in a temporary file (in memory up to 8 MB), refused early when over the limit.

    Content-Length is checked before a byte is read; the copy stops at the limit too, for bodies without one.
    The limit is INGEST_MAX_BYTES unless given.
    """
    limit = limit or settings.INGEST_MAX_BYTES
    if declared_size(request) > limit:
        raise too_large()
    body = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 (the caller closes it)
    stream = request._request  # the Django request: reading it directly skips DRF's parsers and memory copy
    total = 0
    while chunk := stream.read(READ_CHUNK):
        total += len(chunk)
        if total > limit:
            body.close()
            raise too_large()
        body.write(chunk)
    if total == 0:
        body.close()
        raise exceptions.ValidationError({"body": [f"The body is empty: send {expected}"]})
    body.seek(0)
    return body


def _prefers_async(request) -> bool:
    """Whether the client asked, by `Prefer: respond-async` (RFC 7240), not to wait while its rows are read."""
    preferences = request.headers.get("Prefer", "").split(",")
    return any(preference.split(";")[0].strip().lower() == "respond-async" for preference in preferences)


def _unreadable(message: str) -> Response:
    return Response(
        {"status": 400, "code": "unreadable_payload", "detail": message, "errors": {}},
        status=status.HTTP_400_BAD_REQUEST,
    )


class UsageIngestView(APIView):
    """POST sacct output (--parsable2, --parsable, any delimiter, or --json; gzip accepted).

    By default the rows are read within the request, and the answer carries their counts. With
    `Prefer: respond-async` the payload is stored and its batch recorded, a worker reads the rows, and the answer
    is 202 with the batch's address (`Location`) to poll: a large payload then holds no web worker.
    """

    authentication_classes = [IngestTokenAuthentication]
    permission_classes = [IsIngestTokenOfSystem]
    parser_classes = []

    @extend_schema(
        request={"text/plain": str},
        parameters=[
            OpenApiParameter("delimiter", str, description="The field delimiter, when not detectable"),
            OpenApiParameter("columns", str, description="Comma-separated column names, for --noheader output"),
            OpenApiParameter(
                "Prefer",
                str,
                location=OpenApiParameter.HEADER,
                description="respond-async: answer 202 at once and read the rows in a worker",
            ),
        ],
        responses={200: dict, 201: dict, 202: dict},
    )
    def post(self, request, slug):
        system = request.auth.system
        delimiter = request.query_params.get("delimiter") or None
        if delimiter is not None and not 1 <= len(delimiter) <= 4:
            raise exceptions.ValidationError({"delimiter": ["Give the delimiter as 1 to 4 characters"]})
        # Both are stored on the batch, and the database stores no NUL character.
        for name in ("delimiter", "columns"):
            if "\x00" in request.query_params.get(name, ""):
                raise exceptions.ValidationError({name: [f"The {name} must not contain a NUL character"]})
        columns = [name.strip() for name in request.query_params.get("columns", "").split(",") if name.strip()]
        respond_async = _prefers_async(request)
        body = _read_body(request, expected="sacct output")
        options = {
            "system": system,
            "payload": body,
            "source": IngestBatch.Source.API,
            "token": request.auth,
            "delimiter": delimiter,
            "columns": columns or None,
        }
        try:
            outcome = receive_payload(**options) if respond_async else ingest_sacct(**options)
        except PayloadExpandsTooFar as problem:
            raise PayloadTooLarge(str(problem)) from None
        except IngestError as problem:
            return _unreadable(str(problem))
        finally:
            body.close()
        batch = outcome.batch
        if batch.status == IngestBatch.Status.FAILED:
            # Only when another request read these same bytes meanwhile, and could not.
            return _unreadable(batch.error)
        if batch.status == IngestBatch.Status.RECEIVED:
            # Asked for asynchronously, or the same bytes still waiting for a worker: (again) queued, which is
            # harmless, since a worker reads a batch once.
            enqueue_ingest(batch)
            address = request.build_absolute_uri(reverse("usage-batch", args=[system.slug, batch.pk]))
            return Response(
                {**outcome.as_dict(), "status_url": address},
                status=status.HTTP_202_ACCEPTED,
                headers={"Location": address, "Preference-Applied": "respond-async"},
            )
        if not outcome.is_duplicate:
            enqueue_reconciliation(system)
        return Response(
            outcome.as_dict(), status=status.HTTP_200_OK if outcome.is_duplicate else status.HTTP_201_CREATED
        )


class UsageBatchView(APIView):
    """GET what came of a batch the system posted: its status (received, ingested, failed), counts and error, and
    an operator's mark that it needs nothing more (`dealt_with`: when, why and, to an admin, who; null if none)."""

    authentication_classes = [IngestTokenAuthentication, *APIView.authentication_classes]
    permission_classes = [IsIngestTokenOfSystemOrAdmin]

    @extend_schema(responses={200: dict})
    def get(self, request, slug, pk):
        batch = get_object_or_404(IngestBatch.objects.select_related("dealt_with_by"), pk=pk, system__slug=slug)
        # The operator is named, as on the batch's page, only to those who may open it: not to a cluster's token.
        shows_operator = not isinstance(request.auth, IngestToken)
        return Response(
            {**batch_summary(batch), "error": batch.error, "dealt_with": _dealt_with(batch, shows_operator)}
        )


def _dealt_with(batch: IngestBatch, shows_operator: bool) -> dict | None:
    if batch.dealt_with_at is None:
        return None
    operator = batch.dealt_with_by.email if shows_operator and batch.dealt_with_by else None
    return {"at": batch.dealt_with_at, "by": operator, "note": batch.dealt_with_note}


class UsageReportView(APIView):
    """POST the cluster's own view of usage (sshare / sreport parsable output) to record its variance."""

    authentication_classes = [IngestTokenAuthentication]
    permission_classes = [IsIngestTokenOfSystem]
    parser_classes = []

    @extend_schema(request={"text/plain": str}, responses={201: dict})
    def post(self, request, slug):
        body = _read_body(
            request, expected="sreport or sshare output", limit=REPORT_MAX_BYTES, too_large=_report_too_large
        )
        try:
            reports = record_usage_report(system=request.auth.system, payload=body.read())
        except UsageReportError as problem:
            raise exceptions.ValidationError({"body": [str(problem)]}) from None
        finally:
            body.close()
        return Response(
            {
                "accounts": [
                    {
                        "account": report.account,
                        "reported_gpu_seconds": report.reported_seconds,
                        "ledger_gpu_seconds": report.ledger_seconds,
                        "variance_gpu_seconds": report.variance_seconds,
                        "flagged": report.is_flagged,
                    }
                    for report in reports
                ]
            },
            status=status.HTTP_201_CREATED,
        )


class LimitsView(APIView):
    """GET the GrpTRESMins each scheduler account of the system must have (absolute GPU-minutes)."""

    authentication_classes = [IngestTokenAuthentication, *APIView.authentication_classes]
    permission_classes = [IsIngestTokenOfSystemOrAdmin]

    @extend_schema(responses={200: dict})
    def get(self, request, slug):
        system = get_object_or_404(System, slug=slug)
        return Response(
            {"system": system.slug, "cluster": system.cluster_name, "accounts": account_limits(system=system)}
        )
