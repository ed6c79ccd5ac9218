"""A cluster's own view of usage (sshare or sreport output), compared with the ledger account by account.

Accepted, `|`-separated with a header (`-P`/`--parsable2`):
- `sshare -P -a -o Account,User,GrpTRESRaw`: account rows (User empty), `gres/gpu=N` in GPU-minutes;
- `sreport -P -T gres/gpu cluster AccountUtilizationByUser -t minutes`: account rows (Login empty),
  `Used` in minutes (its banner's "Usage reported in TRES Minutes"; another unit, or the "CPU Minutes" of a
  report without -T, is refused).
Rows of another cluster (a Cluster column naming another, or a `CLUSTER: name` line, which `sshare -M` prints
before each cluster's rows, naming another) are left out. Slurm counts raw GPU-minutes; the ledger
charges them times the system's charge factor, so the report is converted before comparing. A variance beyond the
tolerance is flagged for an operator.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Sum

from allocations import ledger
from allocations.models import Allocation, JobCharge, SchedulerAccountAlias, UsageReport
from programmes.models import System


class UsageReportError(ValueError):
    pass


# A scheduler account fits the report's column; a GPU-minute total beyond a thousand million million (two million
# GPUs for a thousand years) is not a reading, and would overflow the record's seconds.
ACCOUNT_LIMIT = UsageReport._meta.get_field("account").max_length
MINUTES_LIMIT = 10**15
# A report is a line per account: 16 MB holds some 300,000, a hundred times what a national service has. It is read
# whole, and split into lines that Python holds at several times their size.
REPORT_MAX_BYTES = 16 * 1024 * 1024
SSHARE_CLUSTER_LINE = "CLUSTER: "


def _whole_minutes(value: str) -> int | None:
    """A figure of GPU-minutes, or None when it is not a whole number.

    A figure with more digits than MINUTES_LIMIT is read as just over it, for the caller to refuse: int() itself
    refuses strings of more than 4,300 digits with a ValueError, which would answer 500.
    """
    if not (value.isascii() and value.isdigit()):
        return None
    if len(value.lstrip("0")) > len(str(MINUTES_LIMIT)):
        return MINUTES_LIMIT + 1
    return int(value)


def _gpu_minutes_of_tres(value: str) -> int | None:
    for entry in value.split(","):
        name, _, number = entry.partition("=")
        if name == "gres/gpu" and (minutes := _whole_minutes(number)) is not None:
            return minutes
    return None


def parse_usage_report(payload: bytes, *, cluster: str | None = None) -> dict[str, int]:
    """GPU-minutes per account from sshare or sreport parsable output; with `cluster`, only that cluster's rows."""
    try:
        # utf-8-sig: without a byte-order mark (which Excel and Windows editors write first), as plain UTF-8; with
        # one, the mark dropped, so that it does not hide the header's first column or a first `CLUSTER:` line.
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageReportError("The report is not valid UTF-8") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("-")]
    # sreport's banner names its unit (`-t`); Used is a bare number whatever it is, and only minutes compare.
    # It names what was counted too: without -T (--tres) sreport counts CPUs ("CPU Minutes"), with no TRES Name
    # column to tell, and CPU-minutes read as GPU-minutes would be a variance of the account's whole CPU usage.
    for line in lines:
        if not line.startswith("Usage reported in "):
            continue
        unit = line.removeprefix("Usage reported in ").strip()
        if not unit.endswith(" Minutes"):
            raise UsageReportError(f"The report is in {unit}: run sreport with -t minutes")
        if unit.startswith("CPU "):
            raise UsageReportError(f"The report is in {unit}, not GPU-minutes: run sreport with -T gres/gpu")
    header_at = next((i for i, line in enumerate(lines) if "account" in line.lower().split("|")), None)
    if header_at is None:
        raise UsageReportError("The report has no header line naming an Account column (use -P / --parsable2)")
    names = [name.strip().lower() for name in lines[header_at].split("|")]
    account_at = names.index("account")
    user_at = next((names.index(n) for n in ("user", "login") if n in names), None)
    # A slurmdbd can serve several clusters (sreport clusters=all, -M): the same account name on another cluster is
    # another account, not more usage of this one. Slurm keeps cluster names in lower case.
    cluster_at = names.index("cluster") if "cluster" in names and cluster is not None else None
    other_clusters = set()

    def of_another_cluster(name: str) -> bool:
        return cluster is not None and name != "" and name.lower() != cluster.lower()

    tres_at = None  # sreport's TRES Name column, when it has one: only its gres/gpu rows count
    if "grptresraw" in names:
        value_at, read = names.index("grptresraw"), _gpu_minutes_of_tres
    elif "used" in names:
        value_at, read = names.index("used"), _whole_minutes
        tres_at = names.index("tres name") if "tres name" in names else None
    else:
        raise UsageReportError("The report needs a GrpTRESRaw (sshare) or Used (sreport) column")
    # A user's row names its account as the account's own row does, and the account's row already holds its users'
    # usage: only the User (Login) column, empty on the account's row, tells them apart.
    if user_at is None:
        raise UsageReportError(
            "The report needs a User (sshare) or Login (sreport) column to tell account rows from users' rows"
        )
    minutes: dict[str, int] = {}
    block_cluster = ""  # named by the last `CLUSTER:` line (sshare -M), for the rows below it
    for number, line in enumerate(lines):
        if line.startswith(SSHARE_CLUSTER_LINE):
            block_cluster = line.removeprefix(SSHARE_CLUSTER_LINE).strip()
            continue
        if number <= header_at:
            continue
        if of_another_cluster(block_cluster):
            other_clusters.add(block_cluster)
            continue
        fields = line.split("|")
        if len(fields) < len(names) or (user_at is not None and fields[user_at].strip()):
            continue
        if tres_at is not None and fields[tres_at].strip() not in ("gres/gpu", ""):
            continue
        if cluster_at is not None and of_another_cluster(fields[cluster_at].strip()):
            other_clusters.add(fields[cluster_at].strip())
            continue
        value = read(fields[value_at].strip())
        account = fields[account_at].strip()
        if value is not None and account and account != "root":
            if len(account) > ACCOUNT_LIMIT or "\x00" in account:
                raise UsageReportError(
                    f"An account is longer than {ACCOUNT_LIMIT} characters or holds a NUL character: not Slurm's"
                )
            minutes[account] = minutes.get(account, 0) + value
            if minutes[account] > MINUTES_LIMIT:
                raise UsageReportError(f"{account} is reported over {MINUTES_LIMIT:,} GPU-minutes: not a real figure")
    if not minutes and other_clusters:
        raise UsageReportError(
            f"The report has no rows of cluster {cluster}, only of {', '.join(sorted(other_clusters))}: "
            "post each cluster's report to its own system"
        )
    if not minutes:
        raise UsageReportError("The report has no account rows with GPU usage")
    return minutes


def _charged_to_jobs_of(alias: SchedulerAccountAlias) -> int:
    """GPU-seconds the ledger holds for the jobs an assigned account ran, read through its allocation's records."""
    charges = JobCharge.objects.filter(
        job_record__allocation=alias.allocation, job_record__system=alias.system, job_record__account=alias.account
    )
    return charges.aggregate(total=Sum("seconds"))["total"] or 0


def record_usage_report(*, system: System, payload: bytes) -> list[UsageReport]:
    """Record the variance of each reported account against the ledger; flag those beyond the tolerance."""
    minutes = parse_usage_report(payload, cluster=system.cluster_name)
    factor = Decimal(system.charge_factor)
    allocations = {
        a.scheduler_account: a for a in Allocation.objects.filter(system=system, scheduler_account__in=minutes)
    }
    # An allocation's own account is compared with the allocation's whole usage: what Slurm shows for it once an
    # assigned account sits under it, as the README advises. An assigned account, with what its own jobs were
    # charged.
    figures = ledger.usage_and_commitments([a.pk for a in allocations.values()])
    charged_by_account = {account: figures[allocation.pk][0] for account, allocation in allocations.items()}
    assigned = (
        SchedulerAccountAlias.objects.filter(system=system, account__in=minutes)
        .exclude(account__in=allocations)
        .select_related("allocation")
    )
    for alias in assigned:
        allocations[alias.account] = alias.allocation
        charged_by_account[alias.account] = _charged_to_jobs_of(alias)
    tolerance = Decimal(str(settings.USAGE_VARIANCE_TOLERANCE_PERCENT))
    reports = []
    for account, used_minutes in sorted(minutes.items()):
        allocation = allocations.get(account)
        charged = charged_by_account.get(account, 0)
        reported = int((Decimal(used_minutes * 60) * factor).to_integral_value(rounding=ROUND_HALF_UP))
        variance = reported - charged
        # Slurm rolls usage up each minute; anything within a GPU-hour or the tolerance is normal lag.
        allowed = max(Decimal(3600), abs(Decimal(charged)) * tolerance / 100)
        reports.append(
            UsageReport(
                system=system,
                account=account,
                allocation=allocation,
                reported_seconds=reported,
                ledger_seconds=charged,
                variance_seconds=variance,
                is_flagged=abs(variance) > allowed,
            )
        )
    with transaction.atomic():
        return UsageReport.objects.bulk_create(reports)
