"""API for fund pools: figures and statements for directors and admins; deposits, withdrawals and transfers
for admins. Amounts are whole GPU-seconds, with GPU-hours beside them for people; input is in GPU-hours."""

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from airr_portal import roles
from airr_portal.api import Conflict
from airr_portal.api_defaults import Pagination
from airr_portal.validators import validate_not_future, validate_service_date
from programmes.models import FundPool, Programme

from . import ledger
from .dashboards import FORECAST_WINDOW_DAYS, allocation_report, programme_dashboard, usage_per_member
from .models import Allocation, LedgerEntry, LedgerTransaction
from .selectors import account_statement, figures_for_pools, start_of_day
from .usage.team import own_usernames

FIGURES = (
    "capacity",
    "committed",
    "consumed",
    "returned",
    "forfeited",
    "available",
    "deposited",
    "withdrawn",
    "transferred_in",
    "transferred_out",
)


def _figures(figures) -> dict:
    seconds = {name: getattr(figures, name) for name in FIGURES}
    return {
        "gpu_seconds": seconds,
        "gpu_hours": {name: str(ledger.seconds_to_hours(value)) for name, value in seconds.items()},
    }


class FundPoolSerializer(serializers.ModelSerializer):
    programme = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    system = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    figures = serializers.SerializerMethodField()

    class Meta:
        model = FundPool
        fields = [
            "id",
            "name",
            "programme",
            "system",
            "valid_from",
            "valid_until",
            "unused_hours_policy",
            "grace_percent",
            "figures",
        ]

    def get_figures(self, pool) -> dict:
        figures = self.context.get("figures")
        if figures is None or pool.pk not in figures:
            figures = figures_for_pools([pool])
        return _figures(figures[pool.pk])


class AsOfField(serializers.CharField):
    """A date (the end of that day) or an ISO 8601 moment, from 2000 and not to come: what "as recorded by" reads.

    A moment lets an export be asked for again as of the very second an earlier one read, as its file states.
    """

    def to_internal_value(self, data):
        text = super().to_internal_value(data)
        try:
            day = serializers.DateField().to_internal_value(text)
        except ValidationError:
            pass
        else:
            checked = [validate_service_date, validate_not_future]
            return serializers.DateField(validators=checked).run_validation(day.isoformat())
        try:
            moment = serializers.DateTimeField().to_internal_value(text)
        except ValidationError:
            raise ValidationError("Give a date (2026-04-01) or a date and time (2026-04-01T12:00:00Z).") from None
        validate_service_date(moment.date())
        if moment > timezone.now():
            raise ValidationError("Give this moment or an earlier one: what is recorded later is not known yet.")
        return moment


class StatementQuerySerializer(serializers.Serializer):
    # `from` is a Python keyword, so the field is declared under its query-string name below.
    to = serializers.DateField(required=False, validators=[validate_service_date])
    as_of = AsOfField(required=False, help_text="A date (end of that day) or an ISO 8601 datetime.")

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateField(required=False, validators=[validate_service_date])
        return fields

    def validate(self, data):
        if data.get("from") and data.get("to") and data["to"] < data["from"]:
            raise ValidationError({"to": "The end date must be on or after the start date."})
        return data


class EntrySerializer(serializers.ModelSerializer):
    type = serializers.CharField(source="transaction.type")
    reason = serializers.CharField(source="transaction.reason")
    actor = serializers.EmailField(source="transaction.actor.email", default=None)
    running_balance = serializers.IntegerField()

    class Meta:
        model = LedgerEntry
        fields = [
            "id",
            "transaction",
            "type",
            "effective_at",
            "recorded_at",
            "actor",
            "reason",
            "amount",
            "running_balance",
        ]


class MovementSerializer(serializers.Serializer):
    hours = serializers.CharField(help_text='GPU-hours, e.g. "160000" or "12.5"; at most one GPU-second precise.')
    reason = serializers.CharField(max_length=2000)
    effective_date = serializers.DateField(required=False, allow_null=True, validators=[validate_service_date])
    idempotency_key = serializers.CharField(max_length=200)

    def validate_hours(self, value) -> int:
        try:
            return ledger.hours_to_seconds(value)
        except ledger.InvalidAmount as error:
            raise ValidationError(error.message) from None


class TransferSerializer(MovementSerializer):
    destination = serializers.PrimaryKeyRelatedField(queryset=FundPool.objects.all())


class TransactionSerializer(serializers.ModelSerializer):
    actor = serializers.EmailField(source="actor.email", default=None)
    entries = serializers.SerializerMethodField()

    class Meta:
        model = LedgerTransaction
        fields = [
            "id",
            "type",
            "actor",
            "reason",
            "effective_at",
            "recorded_at",
            "idempotency_key",
            "entries",
        ]

    def get_entries(self, txn) -> list[dict]:
        return [{"account": e.account_id, "amount": e.amount} for e in txn.entries.all()]


class AdminMayMoveHours(permissions.BasePermission):
    """Reading is for whoever may see the pool; moving hours is for admins only."""

    message = "Only admins can move GPU-hours between pools and funding."

    def has_permission(self, request, view):
        return view.action in ("list", "retrieve", "statement") or roles.is_admin(request.user)


# Refusals the client can fix by changing the request are 400; refusals because of the ledger's state are 409.
_CONFLICTS = (ledger.InsufficientHours, ledger.WrongState, ledger.IdempotencyKeyReused)


class FundPoolViewSet(viewsets.ReadOnlyModelViewSet):
    """Fund pools with their figures, visible to admins (all) and directors (their programmes' pools)."""

    serializer_class = FundPoolSerializer
    permission_classes = [*viewsets.ReadOnlyModelViewSet.permission_classes, AdminMayMoveHours]

    def get_queryset(self):
        return FundPool.objects.visible_to(self.request.user).select_related("programme", "system")

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        serializer = self.get_serializer(
            page, many=True, context={**self.get_serializer_context(), "figures": figures_for_pools(page)}
        )
        return self.get_paginated_response(serializer.data)

    @extend_schema(
        parameters=[
            OpenApiParameter("from", str, description="First effective date, e.g. 2026-04-01"),
            OpenApiParameter("to", str, description="Last effective date (inclusive)"),
            OpenApiParameter("as_of", str, description="Only entries recorded by then (date or datetime)"),
        ],
        responses=EntrySerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def statement(self, request, pk=None):
        """Opening balance, each movement with its running balance, closing balance; in GPU-seconds."""
        pool = self.get_object()
        query = StatementQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        window = query.validated_data
        statement = account_statement(
            ledger.pool_account(pool),
            start=window.get("from"),
            end=window.get("to"),
            as_of=window.get("as_of"),
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(statement.movements, request, view=self)
        as_of = statement.as_of
        return Response(
            {
                "pool": pool.pk,
                "from": window.get("from"),
                "to": window.get("to"),
                "as_of": as_of.isoformat() if as_of else None,
                "unit": "GPU-seconds",
                "opening_balance": statement.opening_balance,
                "closing_balance": statement.closing_balance,
                "count": paginator.count,
                "next": paginator.get_next_link(),
                "previous": paginator.get_previous_link(),
                "movements": EntrySerializer(page, many=True).data,
            }
        )

    def _move(self, request, serializer_class, perform):
        pool = self.get_object()
        payload = serializer_class(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        day = data.get("effective_date")
        already = LedgerTransaction.objects.filter(idempotency_key=data["idempotency_key"]).exists()
        try:
            txn = perform(pool, data, start_of_day(day) if day else None)
        except _CONFLICTS as error:
            raise Conflict(error.message) from None
        except ledger.LedgerError as error:
            raise ValidationError({error.field or "non_field_errors": [error.message]}) from None
        return Response(
            TransactionSerializer(txn).data, status=status.HTTP_200_OK if already else status.HTTP_201_CREATED
        )

    @extend_schema(request=MovementSerializer, responses=TransactionSerializer)
    @action(detail=True, methods=["post"])
    def deposit(self, request, pk=None):
        return self._move(
            request,
            MovementSerializer,
            lambda pool, data, when: ledger.deposit_to_pool(
                pool=pool,
                seconds=data["hours"],
                actor=request.user,
                reason=data["reason"],
                idempotency_key=data["idempotency_key"],
                effective_at=when,
            ),
        )

    @extend_schema(request=MovementSerializer, responses=TransactionSerializer)
    @action(detail=True, methods=["post"])
    def withdraw(self, request, pk=None):
        return self._move(
            request,
            MovementSerializer,
            lambda pool, data, when: ledger.withdraw_from_pool(
                pool=pool,
                seconds=data["hours"],
                actor=request.user,
                reason=data["reason"],
                idempotency_key=data["idempotency_key"],
                effective_at=when,
            ),
        )

    @extend_schema(request=TransferSerializer, responses=TransactionSerializer)
    @action(detail=True, methods=["post"])
    def transfer(self, request, pk=None):
        return self._move(
            request,
            TransferSerializer,
            lambda pool, data, when: ledger.transfer_between_pools(
                source=pool,
                destination=data["destination"],
                seconds=data["hours"],
                actor=request.user,
                reason=data["reason"],
                idempotency_key=data["idempotency_key"],
                effective_at=when,
            ),
        )


# Reports: a programme's dashboard and an allocation's usage, the same numbers as their pages ----------------


def _amounts(**seconds: int) -> dict:
    return {
        "gpu_seconds": seconds,
        "gpu_hours": {name: str(ledger.seconds_to_hours(value)) for name, value in seconds.items()},
    }


def _bucket(bucket) -> dict:
    return {"first_day": bucket.first.isoformat(), "last_day": bucket.last.isoformat()}


def _forecast(forecast) -> dict:
    return {
        "outcome": forecast.outcome,
        "rule": (
            f"GPU-hours consumed from {forecast.window_first.isoformat()} to {forecast.today.isoformat()} "
            f"({FORECAST_WINDOW_DAYS} days), divided by {FORECAST_WINDOW_DAYS}, projected forward from today"
        ),
        "runs_out_on": forecast.runs_out_on.isoformat() if forecast.runs_out_on else None,
        "closes_on": forecast.closes_on.isoformat(),
        **_amounts(
            consumed_in_window=forecast.rate_window_consumed,
            per_day=forecast.seconds_per_day,
            remaining=forecast.remaining,
            **({"left_at_close": forecast.left_at_close} if forecast.left_at_close is not None else {}),
        ),
    }


def programme_dashboard_data(dashboard) -> dict:
    return {
        "programme": {
            "id": dashboard.programme.pk,
            "slug": dashboard.programme.slug,
            "name": dashboard.programme.name,
        },
        "today": dashboard.today.isoformat(),
        "pools": [
            {
                "id": report.pool.pk,
                "name": report.pool.name,
                "system": report.pool.system.slug,
                "valid_from": report.pool.valid_from.isoformat(),
                "valid_until": report.pool.valid_until.isoformat(),
                "figures": _amounts(
                    capacity=report.figures.capacity,
                    committed=report.figures.committed,
                    consumed=report.figures.consumed,
                    returned=report.figures.returned,
                    forfeited=report.figures.forfeited,
                    available=report.figures.available,
                    held_by_allocations=report.figures.held_by_allocations,
                ),
                "burn_down": [
                    {
                        **_bucket(point.bucket),
                        **_amounts(capacity=point.capacity, consumed=point.consumed, remaining=point.remaining),
                    }
                    for point in report.burn_down
                ],
                "forecast": _forecast(report.forecast),
            }
            for report in dashboard.pools
        ],
        "calls": [
            {
                "slug": report.call.slug,
                "title": report.call.title,
                "proposals_by_state": report.by_state,
                "proposals": report.submitted,
                "awards": report.awards,
                **_amounts(
                    requested=report.requested,
                    requested_by_awarded=report.requested_by_awarded,
                    awarded=report.awarded,
                ),
            }
            for report in dashboard.calls
        ],
    }


def allocation_usage_data(report, per_member, *, sees_every_member: bool) -> dict:
    """`per_member` is the scheduler users' charges; for those who see every member, `used_by_hand` is the rest of
    `used` (refunds and adjustments staff made by hand, no job's), so that the two add up to it. For a
    co-investigator, who sees only their own share, it is null, as the page shows them no such row."""
    allocation = report.allocation
    return {
        "allocation": {
            "id": allocation.pk,
            "scheduler_account": allocation.scheduler_account,
            "title": allocation.title,
            "system": allocation.pool.system.slug,
            "state": allocation.state,
            "start_date": allocation.start_date.isoformat(),
            "end_date": allocation.end_date.isoformat(),
        },
        "today": report.today.isoformat(),
        "days_left": report.days_left,
        "percent_used": report.percent_used,
        "thresholds_reached": [
            {"percent": notice.percent, "at": notice.sent_at.isoformat()} for notice in report.thresholds
        ],
        "figures": _amounts(
            committed=report.committed,
            used=report.used,
            returned=report.returned,
            forfeited=report.forfeited,
            # As on its page: what is left to run. Usage below zero is in the account, but no time to run.
            remaining=report.remaining_to_run,
            given_back_twice=report.given_back_twice,
        ),
        "usage_over_time": [
            {**_bucket(point.bucket), **_amounts(used=point.used, cumulative=point.cumulative)}
            for point in report.usage
        ],
        "per_member": [
            {"user": row["user"], "jobs": row["jobs"], **_amounts(charged=row["seconds"] or 0)} for row in per_member
        ],
        "used_by_hand": _amounts(charged=report.used_by_hand) if sees_every_member else None,
    }


class ProgrammeDashboardView(APIView):
    """A programme's dashboard: per pool its figures, burn-down and forecast; per call its proposals and awards.

    For the programme's directors and admins; anyone else gets 404, as for a programme that does not exist."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, pk):
        programme = get_object_or_404(Programme.objects.visible_to(request.user), pk=pk)
        return Response(programme_dashboard_data(programme_dashboard(programme)))


class AllocationUsageView(APIView):
    """An allocation's figures, usage per day (or week), per member and the thresholds reached.

    For its holder, the proposal's accepted team, the programme's directors and admins; anyone else gets 404. A
    co-investigator's per-member figures are their own (allocations/usage/team.py), and `used_by_hand` null."""

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, pk):
        allocation = get_object_or_404(
            Allocation.objects.visible_to(request.user).select_related("pool__system"), pk=pk
        )
        usernames = own_usernames(request.user, allocation)
        per_member = usage_per_member(allocation, usernames=usernames)
        data = allocation_usage_data(allocation_report(allocation), per_member, sees_every_member=usernames is None)
        return Response(data)
