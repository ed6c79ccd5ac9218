"""The limits each scheduler account must have, for an agent (JSON) and as idempotent `sacctmgr` commands.

`GrpTRESMins=gres/gpu=N` caps the usage Slurm has accumulated for an association or QOS (raw GPU-minutes,
without the portal's charge factor). Two ways to set it, for the two Slurm set-ups in the README:
- `total` (default): the award plus the pool's grace. Right when Slurm never forgets usage (a QOS with
  Flags=NoDecay): Slurm subtracts what was used itself, so the portal must not subtract it too.
- `remaining`: the award plus grace minus what the ledger has charged. Right just after Slurm reset its usage
  (PriorityDecayHalfLife=0 with a PriorityUsageResetPeriod): apply it right after each reset.
Absolute values make the commands idempotent; an account that may not run (scheduled, exhausted, expired,
revoked, or past its end date while it settles) gets 0. An allocation due to start today (accepted, its start
date come in its system's time zone) is listed as active with its full limit even before the activation (every
five minutes) has made it so: its jobs may run from the first minute of its first day.

An account an admin assigned to an allocation (a SchedulerAccountAlias) is listed too, with its allocation's
state and limits and `alias_of` naming the allocation's own account: its jobs are charged to that allocation,
so they may run on its terms, and stop when it does. Slurm keeps each account's usage apart, so two accounts
with the same limit could together use more than the award until the portal's next export after the ledger
sees it; the README advises moving the alias under the allocation's account (a parent's limit covers its
children) or retiring it. For a QOS there is no second limit to set: the assigned account is to run under its
allocation's QOS, and the commands say so in a comment.
"""

from __future__ import annotations

import re
from decimal import ROUND_FLOOR, Decimal

from allocations import ledger
from allocations.awards import starting_allocations
from allocations.models import Allocation, LedgerAccount, SchedulerAccountAlias
from allocations.usage.thresholds import today_on
from programmes.models import System


def account_limits(*, system: System) -> list[dict]:
    allocations = list(Allocation.objects.filter(system=system).select_related("pool").order_by("scheduler_account"))
    figures = ledger.usage_and_commitments([a.pk for a in allocations])
    # What each allocation's ledger account holds: once it has ended, the award less what was used *and* what was
    # returned or forfeited (then 0, or less for usage reported after it settled). Less, as on its usage page, any
    # usage below zero (hours given back twice), which is no time to run.
    balances = dict(
        LedgerAccount.objects.filter(allocation__in=allocations).values_list("allocation", "balance").order_by()
    )
    factor = Decimal(system.charge_factor)
    today = today_on(system)
    # By the same rule and the same today as the activation, every five minutes: until it has, these would be 0.
    # Only read here, so an activation running meanwhile changes nothing of what is listed.
    starting = set(starting_allocations(today=today).filter(system=system).values_list("pk", flat=True))
    limits = []
    for allocation in allocations:
        used, committed = figures[allocation.pk]
        state = Allocation.State.ACTIVE if allocation.pk in starting else allocation.state
        # Active and within its days: an allocation past its end date stays active (its hours not yet returned)
        # until it settles, USAGE_SETTLING_DAYS later, but no job of it may start.
        may_run = state == Allocation.State.ACTIVE and today <= allocation.end_date
        allowed = committed * (100 + allocation.pool.grace_percent) // 100
        raw_minutes = _raw_minutes(allowed, factor)
        # Usage below zero (hours given back twice, see ledger.record_usage_in_bulk) is for an admin to charge
        # back, not more time to run than the award and its grace.
        remaining_minutes = _raw_minutes(max(0, allowed - max(0, used)), factor)
        limits.append(
            {
                "account": allocation.scheduler_account,
                "cluster": system.cluster_name,
                "state": state,
                "may_run": may_run,
                "gpu_minutes_limit": raw_minutes if may_run else 0,
                "remaining_gpu_minutes_limit": remaining_minutes if may_run else 0,
                "committed_gpu_seconds": committed,
                "used_gpu_seconds": used,
                "remaining_gpu_seconds": balances.get(allocation.pk, 0) - max(0, -used),
                "start_date": allocation.start_date.isoformat(),
                "end_date": allocation.end_date.isoformat(),
                "alias_of": None,
            }
        )
    by_allocation = {allocation.pk: limit for allocation, limit in zip(allocations, limits, strict=True)}
    # An allocation's own account wins over an alias of the same name (as when usage is matched): the alias is left
    # out, or its command, printed after the own account's, would set the other allocation's limit on it.
    aliases = SchedulerAccountAlias.objects.filter(system=system, allocation__in=list(by_allocation)).exclude(
        account__in=[allocation.scheduler_account for allocation in allocations]
    )
    for alias_account, allocation_id in aliases.values_list("account", "allocation"):
        own = by_allocation[allocation_id]
        limits.append({**own, "account": alias_account, "alias_of": own["account"]})
    limits.sort(key=lambda limit: limit["account"])
    return limits


def _raw_minutes(charged_seconds: int, factor: Decimal) -> int:
    """Charged GPU-seconds are raw seconds times the charge factor: divide back to what Slurm counts."""
    return int((Decimal(charged_seconds) / factor / 60).to_integral_value(rounding=ROUND_FLOOR))


# The names written into a command as they are. The commands are run by a shell, which reads `;`, `$(...)`, quotes
# and spaces, and sacctmgr reads `name=a,b` as two accounts (`name=airr-00002,root` would cap the whole cluster).
# Slurm's own account and cluster names are plain; an account name from elsewhere (typed on an allocation, or an
# assigned account as a cluster posted it) is not trusted to be.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _is_plain(name: str) -> bool:
    return PLAIN_NAME.fullmatch(name) is not None


def _shown(name: str) -> str:
    """A name as a comment may hold it: a newline would end the comment, so one with any is quoted and escaped."""
    return name if name.isprintable() else repr(name)


def sacctmgr_commands(*, system: System, limit: str = "total", target: str = "account") -> str:
    """One `sacctmgr -i modify` per account, to run with `sh`; `target` "qos" sets a QOS named like the account.

    An account (or a cluster) whose name is not plain gets a comment saying so instead of a command.
    """
    key = "gpu_minutes_limit" if limit == "total" else "remaining_gpu_minutes_limit"
    cluster = system.cluster_name
    lines = [
        f"# GPU limits for {_shown(system.name)} (cluster {_shown(cluster)}): absolute, safe to run again. "
        "Run with sh.",
    ]
    for account in account_limits(system=system):
        if not _is_plain(account["account"]) or (target == "account" and not _is_plain(cluster)):
            odd = "" if not _is_plain(account["account"]) else f"the cluster name {cluster!r} "
            lines.append(
                f"# SKIPPED {account['account']!r}: {odd}is not a plain Slurm name (letters, digits, '-', '_', "
                f"'.'); set its GrpTRESMins=gres/gpu={account[key]} by hand"
            )
            continue
        if target == "qos" and account["alias_of"]:
            # A QOS limit holds whichever accounts run under it: an assigned account shares its allocation's
            # (and so its one limit), rather than a QOS of its own name, which the set-up never made.
            lines.append(
                f"# {account['account']}: charged to {_shown(account['alias_of'])}; give it the QOS "
                f"{_shown(account['alias_of'])} (as QOS and DefaultQOS), whose limit then covers its jobs too"
            )
            continue
        where = f"name={account['account']}" + (f" cluster={cluster}" if target == "account" else "")
        lines.append(
            f"sacctmgr -i modify {target} where {where} "
            f"set GrpTRESMins=gres/gpu={account[key]}  # {account['state']}"
            + (
                ""
                if account["may_run"] or account["state"] != Allocation.State.ACTIVE
                else f", ended {account['end_date']}"
            )
            + (f", charged to {_shown(account['alias_of'])}" if account["alias_of"] else "")
        )
    return "\n".join(lines) + "\n"
