"""API for calls, proposals and reviews: the same journey as the pages, for scripts.

Every state change is its own POST action (`/submit/`, `/withdraw/`, `/eligible/`, `/request-changes/`,
`/assess/`, `/reviewers/`, `/reject/`, `/award/`, `/accept/`, `/decline/`); `/award/` takes the GPU-hours and
window for each system awarded (`{"systems": [{"system": "isambard-ai", "hours": "600", "start": ...,
"end": ...}], "rationale": ...}`), a requested system left out getting nothing; an action not allowed in the
proposal's state answers 409. Proposals come only from `Proposal.objects.visible_to(user)`: another user's id
is a 404. GPU-hours are given as text (`"1500"`, `"12.5"`) and returned as both hours and seconds.
"""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from airr_portal.api import Conflict

from . import proposals as services
from .models import Call, FundPool, Proposal, ProposalTransition, ResourceRequest, ReviewAssignment, System
from .proposals import ProposalStateError


def _hours(seconds):
    from allocations.ledger import seconds_to_hours

    return None if seconds is None else str(seconds_to_hours(seconds))


def _seconds(value, field="hours") -> int:
    from allocations.ledger import LedgerError, hours_to_seconds

    try:
        return hours_to_seconds(value)
    except (LedgerError, TypeError) as error:
        raise serializers.ValidationError({field: [getattr(error, "message", str(error))]}) from None


def run(service, **kwargs):
    """Call a service, answering 409 when the proposal's state does not allow it."""
    try:
        return service(**kwargs)
    except ProposalStateError as error:
        raise Conflict(error.message) from error


# Serializers ------------------------------------------------------------------------------------------------


class CallSerializer(serializers.ModelSerializer):
    programme = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    min_gpu_hours = serializers.SerializerMethodField()
    max_gpu_hours = serializers.SerializerMethodField()
    criteria = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")

    class Meta:
        model = Call
        fields = ["slug", "title", "programme", "summary", "guidance", "opens_on", "closes_on",
                  "min_gpu_hours", "max_gpu_hours", "max_duration_months", "criteria"]  # fmt: skip

    def get_min_gpu_hours(self, call) -> str:
        return _hours(call.min_seconds)

    def get_max_gpu_hours(self, call) -> str:
        return _hours(call.max_seconds)


class ResourceRequestSerializer(serializers.ModelSerializer):
    system = serializers.SlugRelatedField(slug_field="slug", queryset=System.objects.all())
    hours_per_run = serializers.CharField(write_only=True)
    gpu_hours = serializers.SerializerMethodField()
    gpu_seconds = serializers.IntegerField(source="seconds", read_only=True)

    class Meta:
        model = ResourceRequest
        fields = ["system", "method", "runs", "hours_per_run", "gpus_per_job", "software", "gpu_hours",
                  "gpu_seconds"]  # fmt: skip

    def get_gpu_hours(self, request) -> str:
        return _hours(request.seconds)


class TransitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = ProposalTransition
        fields = ["from_state", "to_state", "reason", "at"]


class ProposalSerializer(serializers.ModelSerializer):
    call = serializers.SlugRelatedField(slug_field="slug", queryset=Call.objects.all())
    pi = serializers.SlugRelatedField(slug_field="email", read_only=True)
    resource_requests = ResourceRequestSerializer(many=True, read_only=True)
    history = TransitionSerializer(source="transitions", many=True, read_only=True)
    decision = serializers.SerializerMethodField()

    class Meta:
        model = Proposal
        fields = ["id", "reference", "call", "pi", "state", "title", "summary", "research_field", "keywords",
                  "start_date", "duration_months", "case_for_support", "data_statement", "ethics",
                  "ethics_statement", "trusted_research_confirmed", "terms_accepted_at", "submitted_at",
                  "resource_requests", "history", "decision"]  # fmt: skip
        read_only_fields = ["reference", "state", "terms_accepted_at", "submitted_at"]

    def get_decision(self, proposal) -> dict | None:
        from allocations.awards import awarded_systems

        decision = getattr(proposal, "decision", None)
        if decision is None or proposal.state == Proposal.State.IN_REVIEW:
            return None
        # A list reads every proposal's awards in one go (see `ProposalViewSet.list`); one proposal reads its own.
        known = self.context.get("awarded")
        awarded = known[proposal.pk] if known is not None else awarded_systems(proposal)
        return {
            "outcome": decision.outcome,
            "gpu_hours": _hours(sum(award.seconds for award in awarded)) if awarded else None,
            "systems": [
                {
                    "system": award.system.slug,
                    "pool": award.allocation.pool_id,
                    "gpu_hours": _hours(award.seconds),
                    "gpu_seconds": award.seconds,
                    "start": award.allocation.start_date,
                    "end": award.allocation.end_date,
                    "scheduler_account": award.allocation.scheduler_account,
                    "state": award.allocation.state,
                }
                for award in awarded
            ],
            "rationale": decision.rationale,
        }


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="")


class MessageSerializer(serializers.Serializer):
    message = serializers.CharField()


class AssessmentSerializer(serializers.Serializer):
    system = serializers.SlugRelatedField(slug_field="slug", queryset=System.objects.all())
    outcome = serializers.ChoiceField(choices=["feasible", "conditions", "not_feasible"])
    notes = serializers.CharField(required=False, allow_blank=True, default="")


class AwardPartSerializer(serializers.Serializer):
    system = serializers.SlugRelatedField(slug_field="slug", queryset=System.objects.all())
    pool = serializers.PrimaryKeyRelatedField(
        queryset=FundPool.objects.all(),
        required=False,
        help_text="Needed only when the call has more than one pool on the system.",
    )
    hours = serializers.CharField(help_text='GPU-hours to award on this system, e.g. "600"')
    start = serializers.DateField()
    end = serializers.DateField()


class AwardSerializer(serializers.Serializer):
    """An award, system by system; a requested system left out of `systems` gets nothing."""

    systems = AwardPartSerializer(many=True, allow_empty=False)
    rationale = serializers.CharField()

    def award_parts(self, proposal) -> list:
        from allocations.awards import AwardPart, pool_for

        call_pools = list(proposal.call.pools.all())
        parts = []
        for index, part in enumerate(self.validated_data["systems"]):
            try:
                pool = pool_for(part["system"], call_pools, part.get("pool"))
            except DjangoValidationError as problem:
                raise serializers.ValidationError({f"systems[{index}].pool": problem.messages}) from None
            hours = _seconds(part["hours"], f"systems[{index}].hours")
            parts.append(AwardPart(pool=pool, seconds=hours, start=part["start"], end=part["end"]))
        return parts


class RationaleSerializer(serializers.Serializer):
    rationale = serializers.CharField()


class EmailSerializer(serializers.Serializer):
    email = serializers.EmailField()


# Views ------------------------------------------------------------------------------------------------------


class CallViewSet(viewsets.ReadOnlyModelViewSet):
    """Calls are public: anyone may list and read them."""

    serializer_class = CallSerializer
    lookup_field = "slug"
    permission_classes = [permissions.AllowAny]

    def get_queryset(self):
        return Call.objects.visible_to(self.request.user).select_related("programme").prefetch_related("criteria")


class ProposalViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Proposals the user may see; the team edits drafts with PATCH; each transition is a POST action."""

    serializer_class = ProposalSerializer

    def get_queryset(self):
        return (
            Proposal.objects.visible_to(self.request.user)
            .select_related("call", "pi", "decision")
            .prefetch_related("resource_requests__system", "transitions")
            .order_by("-pk")
        )

    def list(self, request):
        from allocations.awards import awarded_systems_of

        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        proposals = page if page is not None else list(queryset)
        context = {**self.get_serializer_context(), "awarded": awarded_systems_of(p.pk for p in proposals)}
        data = ProposalSerializer(proposals, many=True, context=context).data
        return self.get_paginated_response(data) if page is not None else Response(data)

    def create(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        proposal = run(
            services.create_proposal,
            call=serializer.validated_data["call"],
            pi=request.user,
            title=serializer.validated_data.get("title", ""),
        )
        return Response(self.get_serializer(proposal).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, pk=None):
        proposal = self.get_object()
        serializer = self.get_serializer(proposal, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        fields = {k: v for k, v in serializer.validated_data.items() if k in services.EDITABLE_FIELDS}
        run(services.update_proposal, proposal=proposal, actor=request.user, **fields)
        return Response(self.get_serializer(self.get_object()).data)

    def _done(self, proposal, code=status.HTTP_200_OK):
        # The action's serializer_class describes its input (for the schema); the answer is the proposal.
        proposal = self.get_queryset().get(pk=proposal.pk)
        return Response(ProposalSerializer(proposal, context=self.get_serializer_context()).data, status=code)

    @action(detail=True, methods=["post"], url_path="resources")
    def resources(self, request, pk=None):
        proposal = self.get_object()
        serializer = ResourceRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data["seconds_per_run"] = _seconds(data.pop("hours_per_run"), "hours_per_run")
        run(services.save_resource_request, proposal=proposal, actor=request.user, **data)
        return self._done(proposal, status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"], url_path="accept-terms")
    def accept_terms(self, request, pk=None):
        proposal = self.get_object()
        run(services.accept_terms, proposal=proposal, actor=request.user)
        return self._done(proposal)

    @action(detail=True, methods=["post"])
    def submit(self, request, pk=None):
        proposal = self.get_object()
        run(services.submit_proposal, proposal=proposal, actor=request.user)
        return self._done(proposal)

    @action(detail=True, methods=["post"], serializer_class=ReasonSerializer)
    def withdraw(self, request, pk=None):
        proposal = self.get_object()
        reason = ReasonSerializer(data=request.data)
        reason.is_valid(raise_exception=True)
        run(services.withdraw_proposal, proposal=proposal, actor=request.user, **reason.validated_data)
        return self._done(proposal)

    @action(detail=True, methods=["post"])
    def eligible(self, request, pk=None):
        proposal = self.get_object()
        run(services.confirm_eligibility, proposal=proposal, actor=request.user)
        return self._done(proposal)

    @action(detail=True, methods=["post"], url_path="request-changes", serializer_class=MessageSerializer)
    def request_changes(self, request, pk=None):
        proposal = self.get_object()
        data = MessageSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run(services.request_changes, proposal=proposal, actor=request.user, **data.validated_data)
        return self._done(proposal)

    @action(detail=True, methods=["post"], serializer_class=AssessmentSerializer)
    def assess(self, request, pk=None):
        proposal = self.get_object()
        data = AssessmentSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run(services.record_assessment, proposal=proposal, actor=request.user, **data.validated_data)
        return self._done(proposal)

    @action(detail=True, methods=["post"], serializer_class=EmailSerializer)
    def reviewers(self, request, pk=None):
        proposal = self.get_object()
        data = EmailSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        assignment = run(services.assign_reviewer, proposal=proposal, actor=request.user, **data.validated_data)
        return Response({"review": assignment.pk, "email": assignment.email}, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"], serializer_class=RationaleSerializer)
    def reject(self, request, pk=None):
        proposal = self.get_object()
        data = RationaleSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run(services.reject_proposal, proposal=proposal, actor=request.user, **data.validated_data)
        return self._done(proposal)

    @action(detail=True, methods=["post"], serializer_class=AwardSerializer)
    def award(self, request, pk=None):
        from allocations import awards

        proposal = self.get_object()
        if not services.can_direct(proposal, request.user):
            # Before reading the parts, whose errors name the call's pools.
            raise exceptions.PermissionDenied
        data = AwardSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run(
            awards.award_proposal,
            proposal=proposal,
            actor=request.user,
            parts=data.award_parts(proposal),
            rationale=data.validated_data["rationale"],
        )
        return self._done(proposal)

    @action(detail=True, methods=["post"])
    def accept(self, request, pk=None):
        from allocations import awards

        proposal = self.get_object()
        run(awards.accept_award, proposal=proposal, actor=request.user)
        return self._done(proposal)

    @action(detail=True, methods=["post"], serializer_class=ReasonSerializer)
    def decline(self, request, pk=None):
        from allocations import awards

        proposal = self.get_object()
        reason = ReasonSerializer(data=request.data)
        reason.is_valid(raise_exception=True)
        run(awards.decline_award, proposal=proposal, actor=request.user, **reason.validated_data)
        return self._done(proposal)


class ReviewSerializer(serializers.ModelSerializer):
    proposal = serializers.SlugRelatedField(slug_field="reference", read_only=True)
    criteria = serializers.SerializerMethodField()

    class Meta:
        model = ReviewAssignment
        fields = ["id", "proposal", "state", "criteria", "submitted_at"]

    def get_criteria(self, assignment) -> list[dict]:
        return [{"id": c.pk, "name": c.name} for c in assignment.proposal.call.criteria.all()]


class ConflictSerializer(serializers.Serializer):
    has_conflict = serializers.BooleanField()
    details = serializers.CharField(required=False, allow_blank=True, default="")


class ScoreSerializer(serializers.Serializer):
    criterion = serializers.IntegerField()
    score = serializers.IntegerField(min_value=1, max_value=5)
    comment = serializers.CharField()


class SubmitReviewSerializer(serializers.Serializer):
    scores = ScoreSerializer(many=True)
    comment_for_applicant = serializers.CharField(required=False, allow_blank=True, default="")


class ReviewViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """A reviewer's own assignments: declare conflicts, then score. Nobody else's reviews are here."""

    serializer_class = ReviewSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reads the model without a real user
            return ReviewAssignment.objects.none()
        return ReviewAssignment.objects.filter(reviewer=self.request.user).select_related("proposal__call")

    @action(detail=True, methods=["post"], url_path="declare-conflict", serializer_class=ConflictSerializer)
    def declare_conflict(self, request, pk=None):
        assignment = self.get_object()
        data = ConflictSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run(services.declare_conflict, assignment=assignment, actor=request.user, **data.validated_data)
        return Response(ReviewSerializer(ReviewAssignment.objects.get(pk=assignment.pk)).data)

    @action(detail=True, methods=["post"], serializer_class=SubmitReviewSerializer)
    def submit(self, request, pk=None):
        assignment = self.get_object()
        data = SubmitReviewSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        scores = {s["criterion"]: (s["score"], s["comment"]) for s in data.validated_data["scores"]}
        run(
            services.submit_review,
            assignment=assignment,
            actor=request.user,
            scores=scores,
            comment_for_applicant=data.validated_data["comment_for_applicant"],
        )
        return Response(ReviewSerializer(ReviewAssignment.objects.get(pk=assignment.pk)).data)
