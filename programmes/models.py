"""Systems (the clusters) and programmes (the missions that hand out their time)."""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q


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
        max_length=64, default="UTC", help_text="How to read sacct timestamps that carry no offset."
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
    directors = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="directed_programmes", blank=True
    )

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
    valid_from = models.DateField(help_text="The first day awards from this pool may run.")
    valid_until = models.DateField(help_text="The last day awards from this pool may run.")
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


class DirectorInvitationQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(accepted_at__isnull=True)


class DirectorInvitation(models.Model):
    """An admin naming someone a programme's director by email; pending until that address is verified."""

    programme = models.ForeignKey(Programme, on_delete=models.CASCADE, related_name="director_invitations")
    email = models.EmailField()
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
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
