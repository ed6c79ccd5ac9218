"""The reports API: ask for an export (built by the `reports` worker), follow its progress, download it; and a
synchronous JSON report of grouped totals for small questions. Admins and programme directors only, with the
same scoping as the pages; an export exists only for whoever asked for it (and admins)."""

from django.urls import reverse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from allocations.api import AsOfField
from allocations.ledger import seconds_to_hours
from allocations.models import ReportExport

from .selectors import GROUPINGS, ReportScope, usage_totals
from .services import (
    ReportParameters,
    can_build_reports,
    check_report_parameters,
    export_file_response,
    is_gone,
    read_as_of,
    request_report_export,
)


class Gone(exceptions.APIException):
    status_code = status.HTTP_410_GONE
    default_detail = "This export has expired and its file was deleted: ask for it again with the same as_of."
    default_code = "expired"


class NotReady(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The export is not built yet: follow its `state` and `progress`."
    default_code = "conflict"


class BuildsReports(permissions.BasePermission):
    message = "Only admins and programme directors can build reports."

    def has_permission(self, request, view):
        return can_build_reports(request.user)


class ReportParametersSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=ReportExport.Kind.choices, default=ReportExport.Kind.TOTALS)
    groupings = serializers.ListField(
        child=serializers.ChoiceField(choices=list(GROUPINGS)),
        required=False,
        default=list,
        help_text="For totals: one or more of " + ", ".join(GROUPINGS) + " (not both month and week).",
    )
    start = serializers.DateField(help_text="First day of the window of effective dates, e.g. 2026-04-01")
    end = serializers.DateField(help_text="Last day of the window (inclusive)")
    format = serializers.ChoiceField(choices=ReportExport.Format.choices, default=ReportExport.Format.CSV)
    programmes = serializers.ListField(
        child=serializers.IntegerField(), required=False, default=list, help_text="Programme ids; empty for all"
    )
    as_of = AsOfField(
        required=False,
        allow_null=True,
        help_text=(
            "Read the ledger as at the end of this day, or at this ISO 8601 moment (an earlier export's as_of, to "
            "repeat it exactly); empty for now"
        ),
    )

    def validate(self, data):
        parameters = self.parameters(data)
        if errors := check_report_parameters(self.context["request"].user, parameters):
            raise serializers.ValidationError(errors)
        return data

    @staticmethod
    def parameters(data) -> ReportParameters:
        return ReportParameters(
            kind=data["kind"],
            groupings=list(data.get("groupings") or []),
            start=data["start"],
            end=data["end"],
            fmt=data["format"],
            programme_ids=list(data.get("programmes") or []),
            as_of=data.get("as_of"),
        )


class ReportExportSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()
    requested_by = serializers.EmailField(source="requested_by.email", read_only=True)
    has_expired = serializers.SerializerMethodField()

    class Meta:
        model = ReportExport
        fields = [
            "id",
            "url",
            "kind",
            "groupings",
            "start_date",
            "end_date",
            "programme_ids",
            "format",
            "as_of",
            "state",
            "progress",
            "row_count",
            "error",
            "requested_by",
            "created_at",
            "finished_at",
            "expires_at",
            "has_expired",
            "download_url",
        ]

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_url(self, export) -> str:
        return self._absolute(reverse("report-export-detail", args=[export.pk]))

    def get_download_url(self, export) -> str | None:
        if not export.is_ready or is_gone(export):
            return None
        return self._absolute(reverse("report-export-download", args=[export.pk]))

    def get_has_expired(self, export) -> bool:
        return export.has_expired()


class ReportExportViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Report exports: POST the parameters (201 with the export's URL), GET its state and progress, download it."""

    serializer_class = ReportExportSerializer
    permission_classes = [*viewsets.GenericViewSet.permission_classes, BuildsReports]

    def get_queryset(self):
        return ReportExport.objects.visible_to(self.request.user).select_related("requested_by")

    @extend_schema(request=ReportParametersSerializer, responses={201: ReportExportSerializer})
    def create(self, request, *args, **kwargs):
        payload = ReportParametersSerializer(data=request.data, context={"request": request})
        payload.is_valid(raise_exception=True)
        export = request_report_export(user=request.user, parameters=payload.parameters(payload.validated_data))
        export.refresh_from_db()  # an eager worker (tests, the embedded mode) may have built it already
        data = self.get_serializer(export).data
        return Response(data, status=status.HTTP_201_CREATED, headers={"Location": data["url"]})

    @extend_schema(responses={(200, "application/octet-stream"): bytes})
    @action(detail=True, methods=["get"])
    def download(self, request, pk=None):
        """The file, once `state` is `done`; 409 before, 410 once it has expired."""
        export = self.get_object()
        if is_gone(export):
            raise Gone()
        if not export.is_ready:
            raise NotReady()
        return export_file_response(export)


class ReportTotalsView(APIView):
    """Grouped totals as JSON, computed while you wait: for small reports (a few groupings, a short window)."""

    permission_classes = [*APIView.permission_classes, BuildsReports]

    @extend_schema(
        parameters=[
            OpenApiParameter("groupings", str, description="Comma-separated, e.g. programme,system,month"),
            OpenApiParameter("start", str, description="First effective date, e.g. 2026-04-01"),
            OpenApiParameter("end", str, description="Last effective date (inclusive)"),
            OpenApiParameter("as_of", str, description="Read the ledger as at the end of this day, or at this moment"),
            OpenApiParameter("programmes", str, description="Comma-separated programme ids"),
        ],
        responses={200: dict},
    )
    def get(self, request):
        query = request.query_params
        data = {
            "kind": ReportExport.Kind.TOTALS,
            "format": ReportExport.Format.CSV,
            "groupings": [name for name in query.get("groupings", "").split(",") if name],
            "programmes": [part for part in query.get("programmes", "").split(",") if part],
            **{name: query[name] for name in ("start", "end", "as_of") if query.get(name)},
        }
        payload = ReportParametersSerializer(data=data, context={"request": request})
        payload.is_valid(raise_exception=True)
        parameters = payload.parameters(payload.validated_data)
        as_of = read_as_of(parameters.as_of, now=timezone.now())
        report = usage_totals(
            groupings=parameters.ordered_groupings,
            start=parameters.start,
            end=parameters.end,
            as_of=as_of,
            scope=ReportScope.for_user(request.user, parameters.programme_ids),
        )
        return Response(
            {
                "start": parameters.start,
                "end": parameters.end,
                "as_of": as_of.isoformat(),
                "groupings": report.groupings,
                "unit": "GPU-seconds, with GPU-hours (2 decimals) beside them",
                "rows": [
                    {
                        **dict(zip(report.groupings, labels, strict=True)),
                        **{f"{m}_gpu_seconds": values[m] for m in report.measures},
                        **{f"{m}_gpu_hours": str(seconds_to_hours(values[m])) for m in report.measures},
                    }
                    for labels, values in report.rows
                ],
                "totals": {
                    **{f"{m}_gpu_seconds": value for m, value in report.totals.items()},
                    **{f"{m}_gpu_hours": str(seconds_to_hours(value)) for m, value in report.totals.items()},
                },
            }
        )
