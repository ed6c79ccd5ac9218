"""Allocations and the GPU-hour ledger: accounts, transactions and their append-only entries.

Amounts are whole GPU-seconds (signed integers); GPU-hours are only a display unit. Rows here are written
only by the services in `allocations/ledger.py`, which keep each account's materialised `balance` equal to
the sum of its entries. See DESIGN.md, "The GPU-hour ledger".
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from programmes.models import FundPool, System


class AllocationQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Admins see all; directors the allocations of their programmes' pools; holders their own."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self.all()
        return self.filter(Q(pool__programme__directors=user) | Q(holder=user)).distinct()


class Allocation(models.Model):
    """GPU-hours awarded from a pool, run under one scheduler account on the pool's system for a window."""

    class State(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        ACTIVE = "active", "Active"
        EXHAUSTED = "exhausted", "Exhausted"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    pool = models.ForeignKey(FundPool, on_delete=models.PROTECT, related_name="allocations")
    scheduler_account = models.CharField(
        max_length=64,
        unique=True,
        help_text="The Slurm account name, e.g. airr-00042: joins award, scheduler and usage.",
    )
    title = models.CharField(max_length=300)
    holder = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="allocations"
    )
    start_date = models.DateField()
    end_date = models.DateField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.SCHEDULED)
    created_at = models.DateTimeField(auto_now_add=True)
    # The award it came from; empty for allocations made by hand (allocations → programmes is allowed).
    proposal = models.OneToOneField(
        "programmes.Proposal", on_delete=models.PROTECT, null=True, blank=True, related_name="allocation"
    )

    objects = AllocationQuerySet.as_manager()

    class Meta:
        ordering = ["scheduler_account"]
        constraints = [
            models.CheckConstraint(condition=Q(end_date__gte=F("start_date")), name="allocation_window"),
        ]

    def __str__(self):
        return f"{self.scheduler_account} — {self.title}"

    @property
    def has_ended(self) -> bool:
        return self.state in (self.State.EXPIRED, self.State.REVOKED)


class LedgerAccount(models.Model):
    """Where GPU-seconds sit: a pool, an allocation, or one of a system's sinks.

    Sinks are the world outside the portal's budgets: `funding` is where deposits come from (so its balance
    runs negative), `consumed` collects charged usage and `forfeited` the hours an allocation gave up.
    """

    class Kind(models.TextChoices):
        POOL = "pool", "Fund pool"
        ALLOCATION = "allocation", "Allocation"
        FUNDING = "funding", "External funding"
        CONSUMED = "consumed", "Consumed usage"
        FORFEITED = "forfeited", "Forfeited hours"

    SINK_KINDS = (Kind.FUNDING, Kind.CONSUMED, Kind.FORFEITED)

    kind = models.CharField(max_length=10, choices=Kind.choices)
    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="ledger_accounts")
    pool = models.OneToOneField(
        FundPool, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_account"
    )
    allocation = models.OneToOneField(
        Allocation, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_account"
    )
    balance = models.BigIntegerField(
        default=0, help_text="GPU-seconds; always the sum of this account's entries."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            # The last line of defence against over-commitment: even a code path that forgot its lock cannot
            # leave a pool owing hours.
            models.CheckConstraint(
                condition=Q(balance__gte=0) | ~Q(kind="pool"), name="ledger_pool_not_negative"
            ),
            models.CheckConstraint(
                condition=(
                    Q(kind="pool", pool__isnull=False, allocation__isnull=True)
                    | Q(kind="allocation", pool__isnull=True, allocation__isnull=False)
                    | Q(
                        kind__in=["funding", "consumed", "forfeited"],
                        pool__isnull=True,
                        allocation__isnull=True,
                    )
                ),
                name="ledger_account_owner_matches_kind",
            ),
            models.UniqueConstraint(
                fields=["system", "kind"],
                condition=Q(kind__in=["funding", "consumed", "forfeited"]),
                name="ledger_one_sink_per_kind_and_system",
            ),
        ]

    def __str__(self):
        if self.kind == self.Kind.POOL:
            return f"Pool: {self.pool}"
        if self.kind == self.Kind.ALLOCATION:
            return f"Allocation: {self.allocation}"
        return f"{self.get_kind_display()}: {self.system}"

    @property
    def is_sink(self) -> bool:
        return self.kind in self.SINK_KINDS


class LedgerTransaction(models.Model):
    """One movement of GPU-seconds: entries summing to zero, with who, why, when and an idempotency key."""

    class Type(models.TextChoices):
        DEPOSIT = "deposit", "Deposit"
        WITHDRAW = "withdraw", "Withdrawal"
        TRANSFER = "transfer", "Transfer"
        COMMIT = "commit", "Commitment"
        CHARGE = "charge", "Usage charge"
        REFUND = "refund", "Usage refund"
        ADJUST = "adjust", "Adjustment"
        EXPIRE = "expire", "Returned at expiry"
        FORFEIT = "forfeit", "Forfeited at expiry"
        REVOKE = "revoke", "Returned at revocation"

    type = models.CharField(max_length=10, choices=Type.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="ledger_transactions",
        help_text="Who did it; empty for the portal's own scheduled work.",
    )
    reason = models.TextField()
    effective_at = models.DateTimeField(help_text="When the movement counts in statements.")
    recorded_at = models.DateTimeField(
        help_text="When the portal wrote it; statements 'as of' a date read up to it."
    )
    idempotency_key = models.CharField(max_length=200, unique=True)
    corrects = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="corrections"
    )
    # What caused the movement, as "model:id" parts (an award, a job record, a reconciliation run...), so that
    # every entry traces back to its cause without the ledger depending on the apps that call it.
    cause_type = models.CharField(max_length=60, blank=True)
    cause_id = models.CharField(max_length=60, blank=True)

    class Meta:
        ordering = ["recorded_at", "pk"]
        indexes = [models.Index(fields=["cause_type", "cause_id"], name="ledger_txn_cause")]

    def __str__(self):
        return f"{self.get_type_display()} #{self.pk}"


class LedgerEntry(models.Model):
    """One side of a transaction on one account; never updated or deleted (a PostgreSQL trigger refuses)."""

    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="entries")
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="entries")
    amount = models.BigIntegerField(help_text="GPU-seconds, positive into the account, negative out of it.")
    # Copied from the transaction so that statements read one index and never join.
    effective_at = models.DateTimeField()
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ["effective_at", "pk"]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="ledger_entry_not_zero")]
        indexes = [
            # Statements: an account's entries in effective order; INCLUDE makes opening balances index-only
            # scans on PostgreSQL (ignored elsewhere).
            models.Index(
                fields=["account", "effective_at", "id"],
                include=["amount", "recorded_at"],
                name="ledger_entry_statement",
            ),
        ]

    def __str__(self):
        return f"{self.amount:+d} s on {self.account}"

