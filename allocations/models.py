"""Allocations and the GPU-hour ledger: accounts, transactions and their append-only entries.

Amounts are whole GPU-seconds (signed integers); GPU-hours are only a display unit. Rows here are written
only by the services in `allocations/ledger.py`, which keep each account's materialised `balance` equal to
the sum of its entries. See DESIGN.md, "The GPU-hour ledger".
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from programmes.models import FundPool, ProposalMember, System


class AllocationQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Admins see all; directors the allocations of their programmes' pools; holders their own; the
        accepted co-investigators of the proposal an allocation was awarded to, theirs."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self.all()
        # Each way in is its own `IN (subquery)`, as in ProposalQuerySet.visible_to: no duplicate rows.
        teams = ProposalMember.objects.filter(user=user, accepted_at__isnull=False).values("proposal_id")
        directed = FundPool.objects.filter(programme__directors=user).values("pk")
        return self.filter(Q(holder=user) | Q(pool__in=directed) | Q(proposal__in=teams))


class Allocation(models.Model):
    """GPU-hours awarded from a pool, run under one scheduler account on the pool's system for a window.

    A proposal awarded on several systems has one allocation per system, all under the same account name
    (e.g. `airr-00042`): the name is unique per system, the only scope in which usage is matched.
    """

    class State(models.TextChoices):
        SCHEDULED = "scheduled", "Scheduled"
        ACTIVE = "active", "Active"
        EXHAUSTED = "exhausted", "Exhausted"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    # The states an allocation does not leave: its unused hours have gone back to the pool or been forfeited.
    ENDED_STATES = (State.EXPIRED, State.REVOKED)

    pool = models.ForeignKey(FundPool, on_delete=models.PROTECT, related_name="allocations")
    # Always the pool's system (filled in from it on save): copied here so that the database can hold the
    # account name unique per system.
    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="allocations")
    scheduler_account = models.CharField(
        max_length=64,
        help_text="The Slurm account name, e.g. airr-00042: joins award, scheduler and usage on a system.",
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
    proposal = models.ForeignKey(
        "programmes.Proposal", on_delete=models.PROTECT, null=True, blank=True, related_name="allocations"
    )

    objects = AllocationQuerySet.as_manager()

    class Meta:
        ordering = ["scheduler_account"]
        constraints = [
            models.CheckConstraint(condition=Q(end_date__gte=F("start_date")), name="allocation_window"),
            models.UniqueConstraint(
                fields=["system", "scheduler_account"], name="allocation_account_unique_per_system"
            ),
            models.UniqueConstraint(fields=["proposal", "system"], name="allocation_one_per_proposal_system"),
        ]

    def __str__(self):
        return f"{self.scheduler_account} — {self.title}"

    def save(self, *args, **kwargs):
        # The system is the pool's, copied whenever the pool is written (a save of other fields leaves both).
        update_fields = kwargs.get("update_fields")
        if self.pool_id is not None and (update_fields is None or "pool" in update_fields):
            self.system_id = self.pool.system_id
        super().save(*args, **kwargs)

    @property
    def has_ended(self) -> bool:
        return self.state in self.ENDED_STATES


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
    balance = models.BigIntegerField(default=0, help_text="GPU-seconds; always the sum of this account's entries.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            # The last line of defence against over-commitment: even a code path that forgot its lock cannot
            # leave a pool owing hours.
            models.CheckConstraint(condition=Q(balance__gte=0) | ~Q(kind="pool"), name="ledger_pool_not_negative"),
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
    recorded_at = models.DateTimeField(help_text="When the portal wrote it; statements 'as of' a date read up to it.")
    idempotency_key = models.CharField(max_length=200, unique=True)
    corrects = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="corrections")
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


# Usage: from the scheduler to the ledger ------------------------------------------------------------------
# See DESIGN.md, "Usage: from the scheduler to the ledger". Ingest (allocations/usage/ingest.py) writes
# IngestBatch, RejectedRow and JobRecord; reconciliation (allocations/usage/reconcile.py) turns JobRecords
# into ledger charges and writes JobCharge, so every usage entry traces to its jobs.


class IngestToken(models.Model):
    """A cluster's key for posting its system's job records and reading its limits; it can do nothing else.

    Only the SHA-256 of the key is stored: the key is shown once, when it is made.
    """

    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="ingest_tokens")
    name = models.CharField(max_length=100, help_text="Where the token is used, e.g. 'slurmctld cron on login1'.")
    prefix = models.CharField(max_length=12, help_text="The key's first characters, to recognise it by.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "pk"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…) for {self.system}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class IngestBatch(models.Model):
    """One payload of job records as received, stored raw before it is parsed, with what came of its rows."""

    class Source(models.TextChoices):
        API = "api", "API"
        COMMAND = "command", "Management command"
        UPLOAD = "upload", "Upload page"

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        INGESTED = "ingested", "Ingested"
        FAILED = "failed", "Could not be read"

    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="ingest_batches")
    source = models.CharField(max_length=10, choices=Source.choices)
    sha256 = models.CharField(max_length=64, help_text="Of the payload's bytes as received (after gzip).")
    raw_path = models.CharField(
        max_length=300, help_text="The payload under MEDIA_ROOT: <sha256>.gz, or <sha256>.raw until it is compressed."
    )
    size = models.BigIntegerField(default=0)
    format = models.CharField(max_length=20, blank=True)
    delimiter = models.CharField(max_length=4, blank=True)
    columns = models.TextField(blank=True, help_text="Comma-separated column names for headerless payloads.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True, help_text="Why the payload as a whole could not be read.")
    new = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    unmatched = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    never_started = models.PositiveIntegerField(default=0)
    without_gpus = models.PositiveIntegerField(
        default=0, help_text="Runs read whose AllocTRES holds no GPU, so charged nothing."
    )
    skipped_steps = models.PositiveIntegerField(default=0)
    skipped_pending = models.PositiveIntegerField(default=0)
    token = models.ForeignKey(IngestToken, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    received_at = models.DateTimeField(auto_now_add=True)
    # When a failed batch was last made `received` again (its bytes posted again, or an operator asked for it to be
    # read): whether its reading was lost is timed from then, not from when its bytes first arrived.
    reopened_at = models.DateTimeField(null=True, blank=True)
    # An operator's word that a batch no task will read again needs nothing more (its window was re-sent in another
    # batch, or it was never sacct output): it stops counting as needing attention. Kept if it is read later.
    dealt_with_at = models.DateTimeField(null=True, blank=True)
    dealt_with_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    dealt_with_note = models.CharField(
        max_length=300, blank=True, help_text="Why the batch needs nothing more, such as 'window re-sent in batch 123'."
    )

    class Meta:
        ordering = ["-received_at", "-pk"]
        constraints = [
            # A byte-identical payload posted again is a no-op: it finds this batch and returns its counts.
            models.UniqueConstraint(fields=["system", "sha256"], name="ingest_batch_once_per_payload"),
            # A batch marked as dealt with always says why.
            models.CheckConstraint(
                condition=Q(dealt_with_at__isnull=True, dealt_with_note="")
                | (Q(dealt_with_at__isnull=False) & ~Q(dealt_with_note="")),
                name="ingest_batch_dealt_with_says_why",
            ),
        ]
        indexes = [
            # The beat looks for stalled batches every five minutes, and the batch list counts those needing
            # attention on every view: both among the few not read yet or failed, of a cluster's hundreds a day.
            models.Index(fields=["received_at"], name="ingest_batch_unread", condition=~Q(status="ingested")),
        ]

    def __str__(self):
        return f"Batch {self.pk} for {self.system} ({self.received_at:%Y-%m-%d %H:%M})"

    def counts(self) -> dict[str, int]:
        return {
            name: getattr(self, name)
            for name in ("new", "updated", "unchanged", "unmatched", "rejected", "never_started", "without_gpus")
        }

    @property
    def waiting_since(self):
        """When the batch was last given to be read: its reopening, or else its receipt."""
        return self.reopened_at or self.received_at


class RejectedRow(models.Model):
    """A line of a batch that could not be read: kept with its line number and reason, for replay."""

    batch = models.ForeignKey(IngestBatch, on_delete=models.CASCADE, related_name="rejected_rows")
    line_number = models.PositiveIntegerField()
    raw = models.TextField()
    reason = models.TextField()
    replayed_at = models.DateTimeField(null=True, blank=True)
    replay_outcome = models.TextField(blank=True)

    class Meta:
        ordering = ["batch", "line_number"]

    def __str__(self):
        return f"Line {self.line_number} of batch {self.batch_id}: {self.reason}"


class UsageSequence(models.Model):
    """A system's change counter: every write to its job records takes the next number, under this row's lock.

    Reconciliation reads records whose `changed_seq` is above its cursor. Because a writer holds this row's
    lock until it commits, every committed number is below every uncommitted one: the cursor never skips one.
    """

    system = models.OneToOneField(System, on_delete=models.CASCADE, related_name="usage_sequence")
    last_seq = models.BigIntegerField(default=0)

    def __str__(self):
        return f"Usage changes of system {self.system_id}: {self.last_seq}"


class JobIdField(models.CharField):
    """A scheduler's job id: ASCII, compared byte by byte rather than through the locale.

    On PostgreSQL its column takes the "C" collation. The run key's unique index (system, JobIDRaw, Start)
    takes every row of an ingest; compared by the locale, that index cost a million-row ingest twice as much.
    Other databases compare text byte by byte already (SQLite's default, BINARY), and have no "C" to name.
    """

    def db_parameters(self, connection):
        parameters = super().db_parameters(connection)
        if connection.vendor == "postgresql":
            parameters["collation"] = "C"
        return parameters


class JobRecordQuerySet(models.QuerySet):
    def unmatched(self):
        return self.filter(allocation__isnull=True)

    def with_charged_seconds(self):
        """Annotate `charged_seconds`: what the ledger holds for each record, the sum of its job charges.

        A correlated subquery, so its cost follows the records asked for, never the size of history.
        """
        charges = (
            JobCharge.objects.filter(job_record=models.OuterRef("pk"))
            .order_by()
            .values("job_record")
            .annotate(total=models.Sum("seconds"))
            .values("total")
        )
        return self.annotate(
            charged_seconds=models.functions.Coalesce(
                models.Subquery(charges), 0, output_field=models.BigIntegerField()
            )
        )


class JobRecord(models.Model):
    """One run of one job as the scheduler reported it last: the unit that is charged.

    Keyed by (system, JobIDRaw, Start), because a requeued job appears once per run. Jobs that never started
    (Start None) are counted in their batch but not stored: they used nothing.
    """

    # No separate indexes on the foreign keys: the unique key and the indexes below start with them, and each
    # index costs every row of a million-row ingest. Nor database checks on `system` and `allocation`: the
    # check of each row, deferred to the commit, cost a million-row ingest more than loading its rows. The
    # references are kept by construction instead: an ingest writes its own system's rows and matches accounts
    # to allocations read in its own transaction, systems and allocations are never deleted (PROTECT keeps
    # the ORM from it), and tests/allocations check that every stored reference resolves.
    system = models.ForeignKey(
        System, on_delete=models.PROTECT, related_name="job_records", db_index=False, db_constraint=False
    )
    job_id_raw = JobIdField(max_length=64)
    start = models.DateTimeField()
    job_id = models.CharField(max_length=64)
    account = models.CharField(max_length=64, db_index=False)
    user = models.CharField(max_length=64)
    state = models.CharField(max_length=32)
    submit = models.DateTimeField(null=True, blank=True)
    end = models.DateTimeField(null=True, blank=True, help_text="Empty while the job is running.")
    elapsed_seconds = models.BigIntegerField()
    gpus = models.IntegerField()
    job_name = models.CharField(max_length=200, blank=True)
    gpu_seconds = models.BigIntegerField(help_text="What this run costs: GPUs × elapsed × charge factor, rounded.")
    allocation = models.ForeignKey(
        Allocation,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="job_records",
        db_index=False,
        db_constraint=False,
    )
    is_outside_window = models.BooleanField(
        default=False, help_text="Ran outside the allocation's dates: charged, and flagged for an operator."
    )
    changed_seq = models.BigIntegerField()
    # Reconciliation finds the records numbered since its last run in two ways: those stored since by their ids,
    # in the ranges their writes noted (JobRecordIdRange), and those changed in place by the change index, which
    # holds only them. A million new rows then cost that index nothing.
    revised = models.BooleanField(
        default=False,
        db_default=False,  # the ingest's COPY leaves the column out
        help_text="Changed in place since it was stored (a later report, an assignment): found by the change index.",
    )
    # Which batch last changed the record, for an operator's eye: informational, so neither indexed nor
    # checked by the database (batches are never deleted), which spares a million-row ingest a check per row.
    last_batch = models.ForeignKey(
        IngestBatch,
        on_delete=models.DO_NOTHING,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )

    objects = JobRecordQuerySet.as_manager()

    class Meta:
        ordering = ["system", "start", "job_id_raw"]
        constraints = [
            models.UniqueConstraint(fields=["system", "job_id_raw", "start"], name="job_record_one_per_run"),
        ]
        indexes = [
            models.Index(fields=["system", "changed_seq"], name="job_record_revisions", condition=Q(revised=True)),
            # Accounts are looked up only to find held usage: matched records cost this index nothing.
            models.Index(
                fields=["system", "account"], name="job_record_unmatched", condition=Q(allocation__isnull=True)
            ),
            models.Index(fields=["allocation", "start"], name="job_record_allocation"),
        ]

    def __str__(self):
        return f"Job {self.job_id} on {self.system_id} from {self.start:%Y-%m-%d %H:%M}"

    @property
    def is_running(self) -> bool:
        return self.end is None


class MemberSchedulerUser(models.Model):
    """A username of a co-investigator, or of the PI, on an allocation's system, recorded by its PI.

    A team member sees the allocation's usage as a whole and, of its jobs and per-member figures, their own share
    (DESIGN.md, roles): the jobs run under their usernames here. A name belongs to one person on an allocation; the
    PI's own are recorded so that none of them is given to a co-investigator.
    """

    allocation = models.ForeignKey(Allocation, on_delete=models.CASCADE, related_name="member_scheduler_users")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    username = models.CharField(max_length=64)

    class Meta:
        ordering = ["allocation", "username"]
        constraints = [
            models.UniqueConstraint(fields=["allocation", "username"], name="member_scheduler_user_once"),
        ]

    def __str__(self):
        return f"{self.username} on {self.allocation_id}"


class SchedulerAccountAlias(models.Model):
    """Another scheduler account whose usage on a system belongs to an allocation, set by an admin.

    Made when an admin assigns the held usage of an unmatched account: the usage held then moves, and every
    later ingest matches the account to the allocation too, so the assignment lasts. One per system and
    account; an allocation's own scheduler account wins over an alias of the same name.
    """

    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="scheduler_account_aliases")
    account = models.CharField(max_length=64)
    allocation = models.ForeignKey(Allocation, on_delete=models.PROTECT, related_name="account_aliases")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["system", "account"]
        constraints = [
            models.UniqueConstraint(fields=["system", "account"], name="scheduler_account_alias_once"),
        ]

    def __str__(self):
        return f"{self.account} on system {self.system_id} → allocation {self.allocation_id}"


class JobRecordIdRange(models.Model):
    """The ids a write numbered `seq` gave the job records it stored: above `after_id`, up to `through_id`.

    Reconciliation reads a system's new records by these ranges, through the primary key, so that no index on
    change numbers has to take every record an ingest stores (JobRecord.revised). The write notes its range under
    its system's change lock: `after_id` is the newest id given before it stored anything, so every id it takes
    is above it (the ids' sequence hands them out in order: never give it a CACHE above 1), and `through_id` the
    newest given once it has. Other systems' records stored meanwhile may fall inside: reconciliation leaves them
    out by system. A range is deleted once its records are reconciled.
    """

    system = models.ForeignKey(System, on_delete=models.CASCADE, related_name="+", db_index=False)
    seq = models.BigIntegerField()
    after_id = models.BigIntegerField()
    through_id = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["system", "seq"], name="job_record_ids_one_per_change")]

    def __str__(self):
        return f"Job records ({self.after_id}, {self.through_id}] of change {self.seq} on {self.system_id}"


class ReconciliationCursor(models.Model):
    """How far reconciliation has charged a system's job records; locked by the run that moves it."""

    system = models.OneToOneField(System, on_delete=models.CASCADE, related_name="reconciliation_cursor")
    reconciled_seq = models.BigIntegerField(default=0)
    # The runs that failed since the last that succeeded (reconciliation.record_reconciliation_failure): while
    # there are any, the system's usage is not being charged, and its operators are told so on the usage pages.
    failures = models.PositiveIntegerField(default=0)
    failing_since = models.DateTimeField(null=True, blank=True)
    failure = models.CharField(max_length=500, blank=True, help_text="The last failed run's error.")

    def __str__(self):
        return f"Reconciled system {self.system_id} up to change {self.reconciled_seq}"

    def clear_failure(self) -> list[str]:
        """Forget the failed runs (a run has succeeded); returns the fields to save, none if there were none."""
        if not self.failures:
            return []
        self.failures, self.failing_since, self.failure = 0, None, ""
        return ["failures", "failing_since", "failure"]


class ReconciliationRun(models.Model):
    """One pass that charged a system's changed job records to the ledger; the cause of its transactions."""

    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="reconciliation_runs")
    from_seq = models.BigIntegerField()
    to_seq = models.BigIntegerField()
    records = models.PositiveIntegerField(default=0)
    allocations = models.PositiveIntegerField(default=0)
    charged_seconds = models.BigIntegerField(default=0, help_text="Net GPU-seconds charged (refunds subtract).")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()

    class Meta:
        ordering = ["-pk"]

    def __str__(self):
        return f"Reconciliation {self.pk} of {self.system} ({self.from_seq}–{self.to_seq})"


class JobCharge(models.Model):
    """One job's part of one usage transaction: the GPU-seconds it added (or gave back) in that run."""

    # A run writes up to a million of these in the transaction that writes its ledger rows, pointing only at
    # rows of that same transaction or at job records (never deleted): the database's per-row foreign-key
    # checks would cost more than the rest of the run, so the references are kept by construction and
    # checked by the tests, not by constraints. Only a record's charges are looked up one by one, so only they
    # are indexed: an index on the transaction took a million-record run a second more (its inserts land all
    # over it). No page looks charges up by transaction alone: the allocation page finds a movement's jobs among
    # the allocation's own records, whose charges the key gives, and the report by user joins charges to
    # transactions in bulk.
    run = models.ForeignKey(
        ReconciliationRun,
        on_delete=models.DO_NOTHING,
        related_name="job_charges",
        db_constraint=False,
        db_index=False,
    )
    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.DO_NOTHING, related_name="job_charges", db_constraint=False, db_index=False
    )
    job_record = models.ForeignKey(
        JobRecord, on_delete=models.DO_NOTHING, related_name="charges", db_constraint=False, db_index=False
    )
    seconds = models.BigIntegerField()

    # A run charges a record at most once, and the key says so. It is also the one index: a record's charges, in
    # run order. On PostgreSQL it carries the seconds as well (migration 0014, which Django cannot express), so
    # the raw report export reads a record's charge "as of" a time from the index alone, a million records a
    # second instead of a million heap reads (see allocations/reports/selectors.py). A serial id and its index
    # beside it cost a million-record reconciliation a second and a half more and served no reader.
    pk = models.CompositePrimaryKey("job_record", "run")

    class Meta:
        ordering = ["job_record_id", "run_id"]

    def __str__(self):
        return f"{self.seconds:+d} s for job record {self.job_record_id} in run {self.run_id}"


class ThresholdNotice(models.Model):
    """That an allocation's PI and team were told it passed a percentage used: the row makes it once only."""

    allocation = models.ForeignKey(Allocation, on_delete=models.CASCADE, related_name="threshold_notices")
    percent = models.PositiveSmallIntegerField()
    used_seconds = models.BigIntegerField()
    # Its emails, one per person, are written with it (airr_portal/mail.py, OutgoingEmail).
    sent_at = models.DateTimeField(auto_now_add=True, help_text="When it was recorded.")

    class Meta:
        ordering = ["allocation", "percent"]
        constraints = [
            models.UniqueConstraint(fields=["allocation", "percent"], name="threshold_notice_once"),
        ]

    def __str__(self):
        return f"{self.percent}% notice for allocation {self.allocation_id}"


class UsageReport(models.Model):
    """A cluster's own view of one account's usage (sshare/sreport), and its variance against the ledger."""

    system = models.ForeignKey(System, on_delete=models.PROTECT, related_name="usage_reports")
    account = models.CharField(max_length=64)
    allocation = models.ForeignKey(
        Allocation, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_reports"
    )
    reported_seconds = models.BigIntegerField(help_text="GPU-seconds the scheduler says the account used.")
    ledger_seconds = models.BigIntegerField(help_text="GPU-seconds the ledger had charged when it was received.")
    variance_seconds = models.BigIntegerField(help_text="Reported minus ledger.")
    is_flagged = models.BooleanField(default=False, help_text="The variance is beyond the tolerance.")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at", "account"]

    def __str__(self):
        return f"{self.account}: {self.variance_seconds:+d} s against the ledger"


# Reports ---------------------------------------------------------------------------------------------------
# See allocations/reports/: an export is asked for on a page or through the API, built by a Celery task on the
# `reports` queue from the ledger as it stood at `as_of`, and kept as a file under MEDIA_ROOT until it expires.


class ReportExportQuerySet(models.QuerySet):
    def visible_to(self, user):
        """An export belongs to whoever asked for it; admins see every export."""
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self.all()
        return self.filter(requested_by=user)


class ReportExport(models.Model):
    """One report file asked for: its parameters, how far its building has got, and where the file is."""

    class Kind(models.TextChoices):
        TOTALS = "totals", "GPU-hours totals, grouped"
        JOBS = "jobs", "Every job record"

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        XLSX = "xlsx", "Excel (XLSX)"

    class State(models.TextChoices):
        PENDING = "pending", "Waiting"
        RUNNING = "running", "Being built"
        DONE = "done", "Ready"
        FAILED = "failed", "Failed"

    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="report_exports")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.TOTALS)
    groupings = models.JSONField(default=list, blank=True, help_text="Dimension names, in column order.")
    start_date = models.DateField(help_text="First day of the window of effective dates.")
    end_date = models.DateField(help_text="Last day of the window (inclusive).")
    programme_ids = models.JSONField(
        default=list, blank=True, help_text="Only these programmes' pools; empty for all the requester sees."
    )
    format = models.CharField(max_length=4, choices=Format.choices, default=Format.CSV)
    as_of = models.DateTimeField(help_text="Only ledger entries recorded by then are read: the file's numbers.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    progress = models.PositiveSmallIntegerField(default=0, help_text="Percent built.")
    row_count = models.PositiveIntegerField(null=True, blank=True)
    file_path = models.CharField(max_length=300, blank=True, help_text="Under MEDIA_ROOT; empty until done.")
    error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()

    objects = ReportExportQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["requested_by", "created_at"], name="report_export_requester"),
            models.Index(fields=["expires_at"], name="report_export_expiry"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(end_date__gte=F("start_date")), name="report_export_window"),
            models.CheckConstraint(condition=Q(progress__lte=100), name="report_export_progress"),
        ]

    def __str__(self):
        return f"Report export {self.pk} ({self.get_kind_display()}, {self.start_date} to {self.end_date})"

    @property
    def is_ready(self) -> bool:
        return self.state == self.State.DONE and bool(self.file_path)

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)

    def has_expired(self, now=None) -> bool:
        return (now or timezone.now()) >= self.expires_at

    @property
    def filename(self) -> str:
        """What the download is called: what it holds and the window, never a server path."""
        what = "jobs" if self.kind == self.Kind.JOBS else "-".join(self.groupings) or "totals"
        return f"airr-{what}-{self.start_date:%Y%m%d}-{self.end_date:%Y%m%d}-{self.pk}.{self.format}"
