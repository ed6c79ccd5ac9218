"""Systems (the clusters) and programmes (the missions that hand out their time)."""

import zoneinfo
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q

from airr_portal.validators import validate_service_date, validate_time_zone


class SystemQuerySet(models.QuerySet):
    def visible_to(self, user):
        # Which systems exist, and what they offer, is public information.
        return self.all()


class System(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    cluster_name = models.CharField(
        max_length=100, unique=True, help_text="The cluster name Slurm reports in sacct's Cluster column."
    )
    gpu_model = models.CharField(max_length=100)
    gpus_per_node = models.PositiveSmallIntegerField(validators=[MinValueValidator(1)])
    charge_factor = models.DecimalField(
        max_digits=6,
        decimal_places=4,
        default=Decimal("1.0000"),
        validators=[MinValueValidator(Decimal("0.0001"))],
        help_text="GPU-hours charged per GPU-hour used.",
    )
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text="How to read sacct timestamps that carry no offset, and where allocation days begin.",
    )
    assessors = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="assessed_systems", blank=True)

    objects = SystemQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(charge_factor__gt=0), name="system_charge_factor_positive"),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        super().clean()
        # A run's Start, read in this zone, is part of its job record's key: after a change, a run already stored and
        # reported again would read as another run, and be charged twice (README, "Keep JobName last").
        if self.pk is None or "time_zone" in self.get_deferred_fields():
            return
        # A stored name that is no zone (mistyped before zones were checked, or gone from the host's database) read
        # no run: ingest refuses it and asks an admin to correct it here. Empty reads as UTC (ingest.time_zone_of).
        stored = System.objects.filter(pk=self.pk).values_list("time_zone", flat=True).first()
        if stored is None or not _is_a_zone(stored) or (stored or "UTC") == (self.time_zone or "UTC"):
            return
        if self.job_records.exists():
            raise ValidationError(
                {
                    "time_zone": f"{self.name}'s job records were read in {stored}: in another zone, each run "
                    "reported again would read as a new run, with another Start, and be charged twice. The time "
                    "zone can be set only before a system's first ingest."
                }
            )


def _is_a_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


class ProgrammeQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Programmes are public by name; this is the set a user may *manage*: admins all, directors own."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self.all()
        return self.filter(directors=user)


class Programme(models.Model):
    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=60, unique=True)
    description = models.TextField(blank=True)
    directors = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="directed_programmes", blank=True)

    objects = ProgrammeQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def is_directed_by(self, user) -> bool:
        return user.is_authenticated and self.directors.filter(pk=user.pk).exists()


class FundPoolQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Admins see every pool; a director sees the pools of the programmes they direct; nobody else any."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self.all()
        return self.filter(programme__directors=user)

    def open_on(self, day):
        return self.filter(valid_from__lte=day, valid_until__gte=day)


class FundPool(models.Model):
    """A programme's budget of GPU-hours on one system, for a window. Its hours live only in the ledger."""

    class UnusedHoursPolicy(models.TextChoices):
        RETURN = "return", "Returned to the pool"
        FORFEIT = "forfeit", "Forfeited"

    programme = models.ForeignKey(Programme, on_delete=models.PROTECT, related_name="pools")
    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="pools")
    name = models.CharField(max_length=200)
    valid_from = models.DateField(
        help_text="The first day awards from this pool may run.", validators=[validate_service_date]
    )
    valid_until = models.DateField(
        help_text="The last day awards from this pool may run.", validators=[validate_service_date]
    )
    unused_hours_policy = models.CharField(
        max_length=10,
        choices=UnusedHoursPolicy.choices,
        default=UnusedHoursPolicy.RETURN,
        help_text="What happens to an allocation's unused hours when it ends.",
    )
    grace_percent = models.PositiveSmallIntegerField(
        default=0, help_text="How far past 100 % of its award an allocation may run before it is exhausted."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = FundPoolQuerySet.as_manager()

    class Meta:
        ordering = ["programme__name", "system__name", "valid_from", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["programme", "system", "name"],
                name="fund_pool_name_unique",
                violation_error_message="This programme already has a pool of that name on that system",
            ),
            models.CheckConstraint(
                condition=Q(valid_until__gte=models.F("valid_from")),
                name="fund_pool_window",
                violation_error_message="The pool's last day must be on or after its first day",
            ),
            models.CheckConstraint(
                condition=Q(grace_percent__lte=100),
                name="fund_pool_grace_at_most_100",
                violation_error_message="Grace must be between 0 and 100 per cent",
            ),
        ]

    def __str__(self):
        return f"{self.name} — {self.system.name}"

    def is_open_on(self, day) -> bool:
        return self.valid_from <= day <= self.valid_until

    def clean(self):
        super().clean()
        # Its allocations copy its system (Allocation.system, which usage is matched by) and its ledger account
        # was opened on it: moved, they would be on one system and the pool and its hours on another.
        if self.pk is None or "system_id" in self.get_deferred_fields():
            return
        stored = FundPool.objects.filter(pk=self.pk).values_list("system", flat=True).first()
        if stored is None or stored == self.system_id:
            return
        used = FundPool.objects.filter(pk=self.pk).filter(
            Q(allocations__isnull=False) | Q(ledger_account__isnull=False)
        )
        if used.exists():
            system = System.objects.get(pk=stored)
            raise ValidationError(
                {
                    "system": f"The pool's allocations and its hours are on {system}: its system can be changed "
                    "only before it has any"
                }
            )


class DirectorInvitationQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(accepted_at__isnull=True)


class DirectorInvitation(models.Model):
    """An admin naming someone a programme's director by email; pending until that address is verified."""

    programme = models.ForeignKey(Programme, on_delete=models.CASCADE, related_name="director_invitations")
    email = models.EmailField()
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = DirectorInvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One open invitation per person and programme: inviting twice re-sends rather than duplicates.
            models.UniqueConstraint(
                fields=["programme", "email"],
                condition=Q(accepted_at__isnull=True),
                name="director_invitation_one_pending",
            ),
        ]

    def __str__(self):
        return f"{self.email} → {self.programme}"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None


# Calls, proposals and their review -------------------------------------------------------------------------
# GPU-hours are stored as whole GPU-seconds, as in the ledger; `allocations.ledger` converts for display.

SECONDS_PER_HOUR = 3600


class CallQuerySet(models.QuerySet):
    def visible_to(self, user):
        # Calls are invitations to the public: anyone may read them, signed in or not.
        return self.all()

    def open_on(self, day):
        return self.filter(Q(opens_on__lte=day), Q(closes_on__isnull=True) | Q(closes_on__gte=day))

    def managed_by(self, user):
        """The calls a user may run: admins all, directors their programmes', nobody else any."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self.all()
        return self.filter(programme__directors=user)


class Call(models.Model):
    """An invitation to apply within a programme, drawing on its pools, with the review criteria it uses."""

    programme = models.ForeignKey(Programme, on_delete=models.PROTECT, related_name="calls")
    title = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    summary = models.TextField(blank=True)
    guidance = models.TextField(blank=True)
    opens_on = models.DateField(validators=[validate_service_date])
    closes_on = models.DateField(
        null=True, blank=True, help_text="Empty for a rolling call.", validators=[validate_service_date]
    )
    pools = models.ManyToManyField(FundPool, related_name="calls", blank=True)
    min_seconds = models.BigIntegerField(help_text="Fewest GPU-seconds one request (on one system) may ask for.")
    max_seconds = models.BigIntegerField(help_text="Most GPU-seconds one request (on one system) may ask for.")
    max_duration_months = models.PositiveSmallIntegerField(validators=[MinValueValidator(1)])
    created_at = models.DateTimeField(auto_now_add=True)

    objects = CallQuerySet.as_manager()

    class Meta:
        ordering = ["closes_on", "title"]
        constraints = [
            models.CheckConstraint(
                condition=Q(min_seconds__gt=0) & Q(max_seconds__gte=models.F("min_seconds")),
                name="call_hours_range",
            ),
            models.CheckConstraint(
                condition=Q(closes_on__isnull=True) | Q(closes_on__gte=models.F("opens_on")),
                name="call_window",
            ),
        ]

    def __str__(self):
        return self.title

    @property
    def is_rolling(self) -> bool:
        return self.closes_on is None

    def is_open_on(self, day) -> bool:
        return self.opens_on <= day and (self.closes_on is None or day <= self.closes_on)

    def systems(self):
        return System.objects.filter(pools__calls=self).distinct()


class Criterion(models.Model):
    """One thing reviewers score a call's proposals on, from 1 to 5."""

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="criteria")
    name = models.CharField(max_length=200)
    guidance = models.TextField(blank=True)
    order = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["call", "order", "pk"]
        verbose_name_plural = "criteria"

    def __str__(self):
        return self.name


class ProposalQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Admins all; PIs and accepted team members theirs; directors their programmes' (once submitted);
        assessors those that ask for their systems (once submitted); reviewers those they have declared no
        conflict on (until then, their review page shows who leads the proposal and its title, to judge by)."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self.all()
        # Once submitted: a draft withdrawn before it was ever submitted stays its team's alone.
        submitted = Q(submitted_at__isnull=False)
        # Each way in is its own `IN (subquery)` rather than a join: no duplicate rows, so annotations and
        # counts stay right, and the planner never multiplies the proposal table by members × reviewers.
        members = ProposalMember.objects.filter(user=user, accepted_at__isnull=False)
        assessed = ResourceRequest.objects.filter(system__assessors=user)
        reviewing = ReviewAssignment.objects.filter(
            reviewer=user, state__in=[ReviewAssignment.State.READY, ReviewAssignment.State.SUBMITTED]
        )
        return self.filter(
            Q(pi=user)
            | Q(pk__in=members.values("proposal_id"))
            | (Q(call__in=Call.objects.managed_by(user).values("pk")) & submitted)
            | (Q(pk__in=assessed.values("proposal_id")) & submitted)
            | Q(pk__in=reviewing.values("proposal_id"))
        )

    def editable_by(self, user):
        """The proposals whose team the user is on (PI or accepted co-investigator)."""
        if not user.is_authenticated:
            return self.none()
        members = ProposalMember.objects.filter(user=user, accepted_at__isnull=False)
        return self.filter(Q(pi=user) | Q(pk__in=members.values("proposal_id")))


class Proposal(models.Model):
    """A request for GPU-hours under a call. Its state changes only through `programmes.proposals`."""

    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        SUBMITTED = "submitted", "Submitted"
        CHANGES_REQUESTED = "changes_requested", "Changes requested"
        IN_REVIEW = "in_review", "In review"
        AWARDED = "awarded", "Awarded"
        REJECTED = "rejected", "Rejected"
        ACCEPTED = "accepted", "Accepted"
        DECLINED = "declined", "Declined"
        WITHDRAWN = "withdrawn", "Withdrawn"

    EDITABLE_STATES = (State.DRAFT, State.CHANGES_REQUESTED)

    class Ethics(models.TextChoices):
        NOT_NEEDED = "not_needed", "No ethical approval is needed"
        APPROVED = "approved", "Ethical approval has been given"
        PENDING = "pending", "Ethical approval has been applied for"

    reference = models.CharField(max_length=20, unique=True, null=True, blank=True)
    call = models.ForeignKey(Call, on_delete=models.PROTECT, related_name="proposals")
    pi = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="led_proposals")
    state = models.CharField(max_length=20, choices=State.choices, default=State.DRAFT)
    # Project details
    title = models.CharField(max_length=200, blank=True)
    summary = models.TextField(blank=True, help_text="Published if the proposal is awarded.")
    research_field = models.CharField(max_length=200, blank=True)
    keywords = models.CharField(max_length=300, blank=True)
    # Timeline
    start_date = models.DateField(null=True, blank=True, validators=[validate_service_date])
    duration_months = models.PositiveSmallIntegerField(null=True, blank=True)
    # Case for support
    case_for_support = models.TextField(blank=True)
    case_for_support_pdf = models.FileField(upload_to="proposals/case-for-support/", blank=True)
    # Data, ethics and trusted research
    data_statement = models.TextField(blank=True)
    ethics = models.CharField(max_length=20, choices=Ethics.choices, blank=True)
    ethics_statement = models.TextField(blank=True)
    trusted_research_confirmed = models.BooleanField(default=False)
    # Declarations and terms
    terms_accepted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)

    objects = ProposalQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["call", "state"], name="proposal_call_state")]

    def __str__(self):
        return f"{self.reference or 'Draft'} — {self.title or 'Untitled proposal'}"

    @property
    def is_editable(self) -> bool:
        return self.state in self.EDITABLE_STATES


class ProposalMember(models.Model):
    """A co-investigator invited by email; they read and edit the proposal once they accept."""

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="members")
    email = models.EmailField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="proposal_memberships",
    )
    token = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    invited_at = models.DateTimeField(auto_now_add=True)
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["invited_at", "pk"]
        constraints = [models.UniqueConstraint(fields=["proposal", "email"], name="proposal_member_once")]

    def __str__(self):
        return self.email


class ResourceRequest(models.Model):
    """GPU-hours asked for on one system, justified as runs × GPU-hours per run."""

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="resource_requests")
    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="resource_requests")
    method = models.TextField(help_text="What the runs do, and how the cost of one run was measured.")
    runs = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    seconds_per_run = models.BigIntegerField(validators=[MinValueValidator(1)])
    gpus_per_job = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    software = models.TextField(blank=True, help_text="Software and containers the runs need.")

    class Meta:
        ordering = ["system__name"]
        constraints = [
            models.UniqueConstraint(fields=["proposal", "system"], name="resource_request_one_per_system"),
        ]

    def __str__(self):
        return f"{self.system}: {self.seconds}"

    @property
    def seconds(self) -> int:
        return self.runs * self.seconds_per_run


class ProposalTransition(models.Model):
    """One change of a proposal's state: who, when, from, to and why. Never edited."""

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="transitions")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+")
    from_state = models.CharField(max_length=20, choices=Proposal.State.choices)
    to_state = models.CharField(max_length=20, choices=Proposal.State.choices)
    reason = models.TextField(blank=True)
    at = models.DateTimeField()

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self):
        return f"{self.from_state} → {self.to_state}"


class TechnicalAssessment(models.Model):
    """A system's assessor saying whether the request on that system can run there."""

    class Outcome(models.TextChoices):
        FEASIBLE = "feasible", "Feasible"
        CONDITIONS = "conditions", "Feasible with conditions"
        NOT_FEASIBLE = "not_feasible", "Not feasible"

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="assessments")
    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="+")
    assessor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    notes = models.TextField(blank=True)
    assessed_at = models.DateTimeField()

    class Meta:
        ordering = ["system__name"]
        constraints = [models.UniqueConstraint(fields=["proposal", "system"], name="assessment_one_per_system")]

    def __str__(self):
        return f"{self.system}: {self.get_outcome_display()}"


class ReviewAssignment(models.Model):
    """A reviewer asked to score one proposal: they declare conflicts first, then score every criterion.

    The review itself (its scores and when it was submitted) lives here too: one assignment, one review.
    """

    class State(models.TextChoices):
        INVITED = "invited", "Invited"
        READY = "ready", "No conflict declared"
        CONFLICTED = "conflicted", "Conflict declared"
        SUBMITTED = "submitted", "Review submitted"

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="review_assignments")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="review_assignments",
    )
    email = models.EmailField()
    token = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    state = models.CharField(max_length=12, choices=State.choices, default=State.INVITED)
    conflict_declared = models.BooleanField(default=False)
    conflict_details = models.TextField(blank=True)
    comment_for_applicant = models.TextField(blank=True)
    released_to_applicant = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    submitted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        constraints = [models.UniqueConstraint(fields=["proposal", "email"], name="review_assignment_once")]

    def __str__(self):
        return f"{self.email} on {self.proposal_id}"


class Score(models.Model):
    """One reviewer's score of one criterion, from 1 to 5, with a comment."""

    assignment = models.ForeignKey(ReviewAssignment, on_delete=models.CASCADE, related_name="scores")
    criterion = models.ForeignKey(Criterion, on_delete=models.PROTECT, related_name="scores")
    value = models.PositiveSmallIntegerField()
    comment = models.TextField()

    class Meta:
        ordering = ["criterion__order", "criterion_id"]
        constraints = [
            models.UniqueConstraint(fields=["assignment", "criterion"], name="score_once_per_criterion"),
            models.CheckConstraint(condition=Q(value__gte=1, value__lte=5), name="score_between_1_and_5"),
        ]

    def __str__(self):
        return f"{self.criterion}: {self.value}"


class Decision(models.Model):
    """A director's decision on a proposal, with the rationale the applicant reads.

    What an award gave on each system (pool, GPU-hours, window) is its allocations and their ledger
    commitments (`allocations.awards.awarded_systems`), never copied here.
    """

    class Outcome(models.TextChoices):
        AWARD_FULL = "award_full", "Awarded in full"
        AWARD_PART = "award_part", "Awarded in part"
        REJECT = "reject", "Rejected"

    proposal = models.OneToOneField(Proposal, on_delete=models.CASCADE, related_name="decision")
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    rationale = models.TextField()
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decided_at = models.DateTimeField()

    def __str__(self):
        return f"{self.get_outcome_display()}: {self.proposal_id}"
