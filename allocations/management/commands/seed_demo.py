"""Load demo data: the two AIRR systems, two programmes with directors, funded pools and a user for every role,
a proposal in review, and an accepted award with a few weeks of usage ingested and reconciled, so that the
programme dashboard and the PI's allocation page have real-looking numbers.

It lives in `allocations`, the top of the apps' dependency chain, because demo data spans all of them.
Safe to run twice: everything is looked up by its natural key, and deposits carry idempotency keys.
"""

import datetime
import random
from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from airr_portal.demo import ensure_demo_users
from allocations.awards import AwardPart, accept_award, award_proposal
from allocations.ledger import deposit_to_pool, hours_to_seconds
from allocations.selectors import start_of_day
from allocations.usage.ingest import ingest_sacct
from allocations.usage.reconcile import reconcile_system
from allocations.usage.team import set_member_usernames
from allocations.usage.thresholds import check_thresholds
from programmes import proposals
from programmes.models import Call, Criterion, FundPool, Programme, Proposal, ResourceRequest, System
from programmes.services import create_fund_pool

SYSTEMS = [
    {
        "slug": "isambard-ai",
        "name": "Isambard-AI",
        "cluster_name": "isambard-ai",
        "gpu_model": "NVIDIA GH200",
        "gpus_per_node": 4,
        "charge_factor": Decimal("1.0"),
        "time_zone": "UTC",
    },
    {
        "slug": "dawn",
        "name": "Dawn",
        "cluster_name": "dawn",
        "gpu_model": "Intel Data Center GPU Max 1550",
        "gpus_per_node": 4,
        "charge_factor": Decimal("1.0"),
        "time_zone": "UTC",
    },
]

PROGRAMMES = [
    {
        "slug": "open-source-ai-builder-fund",
        "name": "Open-Source AI Builder Fund",
        "description": "GPU time for teams building open-source AI models, tools and data sets.",
    },
    {
        "slug": "ai-for-science",
        "name": "AI for Science",
        "description": "GPU time for AI that advances research in the natural and life sciences.",
    },
]

# programme slug, system slug, GPU-hours deposited
POOLS = [
    ("open-source-ai-builder-fund", "isambard-ai", "160000"),
    ("ai-for-science", "dawn", "50000"),
]


def demo_pool_window(today: datetime.date) -> tuple[datetime.date, datetime.date]:
    """The current UK financial year (1 April to 31 March), so the demo pools are open whenever the demo is run;
    opened earlier when the year is younger than the demo's weeks of usage, so those weeks always fit."""
    first_year = today.year if today.month >= 4 else today.year - 1
    opens = min(datetime.date(first_year, 4, 1), today - datetime.timedelta(days=USAGE_DAYS))
    return opens, datetime.date(first_year + 1, 3, 31)


class Command(BaseCommand):
    help = "Create demo systems, programmes, funded pools and one user per role (safe to run twice)."

    @transaction.atomic
    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("seed_demo creates users with a published password: it runs only with DEBUG on.")
        users = ensure_demo_users()
        systems = {
            values["slug"]: System.objects.get_or_create(slug=values["slug"], defaults=values)[0] for values in SYSTEMS
        }
        programmes = {
            values["slug"]: Programme.objects.get_or_create(slug=values["slug"], defaults=values)[0]
            for values in PROGRAMMES
        }
        for programme in programmes.values():
            programme.directors.add(users["programme director"])
        systems["isambard-ai"].assessors.add(users["technical assessor"])

        valid_from, valid_until = demo_pool_window(datetime.date.today())
        pools = {}
        for programme_slug, system_slug, hours in POOLS:
            programme, system = programmes[programme_slug], systems[system_slug]
            name = f"{programme.name} — {system.name}"
            pool = FundPool.objects.filter(programme=programme, system=system, name=name).first()
            if pool is None:
                pool = create_fund_pool(
                    programme=programme,
                    system=system,
                    name=name,
                    valid_from=valid_from,
                    valid_until=valid_until,
                    unused_hours_policy=FundPool.UnusedHoursPolicy.RETURN,
                    actor=users["admin"],
                )
            pools[programme_slug] = pool
            deposit_to_pool(
                pool=pool,
                seconds=hours_to_seconds(hours),
                actor=users["admin"],
                reason=f"Demo funding for the {valid_until.year - 1}–{valid_until.year % 100:02d} financial year",
                idempotency_key=f"seed-demo:deposit:{programme_slug}:{system_slug}:{valid_from.year}",
                # Funded from the pool's first day, so its burn-down starts full.
                effective_at=start_of_day(valid_from),
            )
        call = seed_calls_and_proposals(
            programme=programmes["open-source-ai-builder-fund"],
            system=systems["isambard-ai"],
            pool=pools["open-source-ai-builder-fund"],
            users=users,
        )
        seed_award_with_usage(
            call=call, system=systems["isambard-ai"], pool=pools["open-source-ai-builder-fund"], users=users
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data ready: {len(systems)} systems, {len(programmes)} programmes, {len(POOLS)} funded pools, "
                f"{len(users)} demo users."
            )
        )


# Calls and proposals ---------------------------------------------------------------------------------------

DEMO_CALL_SLUG = "open-source-ai-builder-fund-rolling"
IN_REVIEW_TITLE = "An open Welsh language model"
AWARDED_TITLE = "Open weather forecasting with graph neural networks"


def seed_calls_and_proposals(*, programme, system, pool, users) -> Call:
    """An open rolling call on the funded pool, and a demo proposal in review that the demo reviewer is asked to
    score. Looked up by natural keys, so running it twice adds nothing."""
    today = datetime.date.today()
    call, created = Call.objects.get_or_create(
        slug=DEMO_CALL_SLUG,
        defaults={
            "programme": programme,
            "title": "Open-Source AI Builder Fund: rolling call",
            "summary": "GPU time for teams building open-source AI models, tools and data sets.",
            "guidance": "Tell us what you will build, why it must be open and why it needs national GPUs.",
            "opens_on": pool.valid_from,
            "closes_on": None,
            "min_seconds": hours_to_seconds("500"),
            "max_seconds": hours_to_seconds("50000"),
            "max_duration_months": 12,
        },
    )
    if created:
        call.pools.add(pool)
        criteria = ["Scientific and technical excellence", "Openness", "Need for national GPUs"]
        for order, name in enumerate(criteria):
            Criterion.objects.create(call=call, name=name, order=order)
    if Proposal.objects.filter(call=call, pi=users["applicant"], title=IN_REVIEW_TITLE).exists():
        return call
    applicant, director = users["applicant"], users["programme director"]
    proposal = _submit_demo_proposal(
        call=call,
        system=system,
        applicant=applicant,
        director=director,
        title=IN_REVIEW_TITLE,
        start_date=today + datetime.timedelta(days=30),
        answers={
            "summary": "An open large language model for Welsh speakers.",
            "research_field": "Natural language processing",
            "keywords": "Welsh, language models, open source",
            "case_for_support": "No open model serves Welsh well; we will train one in the open.",
            "data_statement": "Public Welsh web text and government translations under open licences.",
        },
        resources={
            "method": "Pre-training a 7B model",
            "runs": 10,
            "seconds_per_run": hours_to_seconds("1000"),
            "software": "PyTorch in Apptainer",
        },
    )
    proposals.assign_reviewer(proposal=proposal, email=users["reviewer"].email, actor=director)
    return call


def _submit_demo_proposal(
    *, call, system, applicant, director, title, start_date, answers: dict, resources: dict, co_investigator=None
) -> Proposal:
    """A complete six-month proposal on one system, written, submitted and found eligible through the services;
    with `co_investigator`, who is invited and joins its team first."""
    proposal = proposals.create_proposal(call=call, pi=applicant, title=title)
    if co_investigator is not None:
        member = proposals.invite_member(proposal=proposal, email=co_investigator.email, actor=applicant)
        proposals.accept_membership(token=member.token, user=co_investigator)
    proposals.update_proposal(
        proposal=proposal,
        actor=applicant,
        start_date=start_date,
        duration_months=6,
        ethics="not_needed",
        trusted_research_confirmed=True,
        **answers,
    )
    ResourceRequest.objects.create(proposal=proposal, system=system, gpus_per_job=64, **resources)
    proposals.accept_terms(proposal=proposal, actor=applicant)
    proposals.submit_proposal(proposal=proposal, actor=applicant)
    proposals.confirm_eligibility(proposal=proposal, actor=director)
    return proposal


# An accepted award with a few weeks of usage -----------------------------------------------------------------

USAGE_DAYS = 35
SCHEDULER_USERS = ("amina", "ben", "chen")
# The scheduler usernames the applicant records for themselves and for the demo co-investigator, who sees the jobs
# run as theirs; the third runs jobs as someone the portal does not know.
APPLICANT_USERNAME = "amina"
CO_INVESTIGATOR_USERNAME = "ben"


def seed_award_with_usage(*, call, system, pool, users) -> None:
    """The demo applicant's second proposal, awarded, accepted and active since up to five weeks ago, with jobs
    reported each day through the real ingest and reconciled each evening (charges effective that day), so the
    charts have shape. Skipped once the proposal exists: every step below also keys its own work."""
    applicant, director = users["applicant"], users["programme director"]
    if Proposal.objects.filter(call=call, pi=applicant, title=AWARDED_TITLE).exists():
        return
    today = datetime.date.today()
    proposal = _submit_demo_proposal(
        call=call,
        system=system,
        applicant=applicant,
        director=director,
        title=AWARDED_TITLE,
        start_date=today,
        co_investigator=users["co-investigator"],
        answers={
            "summary": "Open-source medium-range weather forecasts from graph neural networks trained on reanalysis "
            "data.",
            "research_field": "Atmospheric science",
            "keywords": "weather, graph neural networks, open source",
            "case_for_support": "Open forecasting models lag the closed ones; we will train and publish one in the "
            "open.",
            "data_statement": "ERA5 reanalysis under the Copernicus licence.",
        },
        resources={
            "method": "Training runs of a 100M-parameter graph network at 0.25° resolution",
            "runs": 20,
            "seconds_per_run": hours_to_seconds("1500"),
            "software": "PyTorch and PyTorch Geometric in Apptainer",
        },
    )
    # The demo tells the story of an award made weeks ago: its window and commitment are back-dated to then.
    start = max(pool.valid_from, today - datetime.timedelta(days=USAGE_DAYS))
    [allocation] = award_proposal(
        proposal=proposal,
        parts=[
            AwardPart(
                pool=pool,
                seconds=hours_to_seconds("24000"),
                start=start,
                end=min(pool.valid_until, start + datetime.timedelta(days=182)),
            )
        ],
        rationale="Strong, open and well costed; awarded 24,000 of the 30,000 GPU-hours asked for.",
        actor=director,
        effective_at=start_of_day(start),
    )
    accept_award(proposal=proposal, actor=applicant)
    set_member_usernames(
        allocation=allocation,
        usernames={applicant.pk: [APPLICANT_USERNAME], users["co-investigator"].pk: [CO_INVESTIGATOR_USERNAME]},
    )
    # The same jobs every time (a fixed seed), spread over the days since the start, busier on weekdays.
    rng = random.Random(42)  # noqa: S311 (demo data, not security)
    job_id = 7_100_000
    day = start
    while day < today:
        lines = []
        for _ in range(rng.randint(1, 3) if day.weekday() < 5 else rng.randint(0, 1)):
            job_id += 1
            gpus = rng.choice((16, 32, 64))
            elapsed = rng.randint(2, 7) * 3600 + rng.randint(0, 3599)
            begins = datetime.datetime.combine(day, datetime.time(rng.randint(0, 16), rng.randint(0, 59)))
            ends = begins + datetime.timedelta(seconds=elapsed)
            lines.append(
                "|".join(
                    [
                        str(job_id),
                        str(job_id),
                        system.cluster_name,
                        allocation.scheduler_account,
                        rng.choice(SCHEDULER_USERS),
                        "COMPLETED",
                        f"{begins:%Y-%m-%dT%H:%M:%S}",
                        f"{begins:%Y-%m-%dT%H:%M:%S}",
                        f"{ends:%Y-%m-%dT%H:%M:%S}",
                        str(elapsed),
                        f"billing={gpus},cpu={gpus * 18},gres/gpu={gpus},mem={gpus * 120}G,node={gpus // 4}",
                        "train-gnn",
                    ]
                )
            )
        if lines:
            ingest_sacct(system=system, payload=("\n".join([SACCT_HEADER, *lines]) + "\n").encode(), source="command")
            reconcile_system(system=system, effective_at=start_of_day(day) + datetime.timedelta(hours=23))
        day += datetime.timedelta(days=1)
    check_thresholds(system=system)


SACCT_HEADER = "JobID|JobIDRaw|Cluster|Account|User|State|Submit|Start|End|ElapsedRaw|AllocTRES|JobName"
