"""Factories for the whole suite: every test builds the data it needs and depends on no other test's."""

from decimal import Decimal

import factory
from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.test import Client
from rest_framework.test import APIClient

from airr_portal.models import User
from programmes.models import Programme, System

DEMO_PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"person{n}@example.ac.uk")
    full_name = factory.Faker("name", locale="en_GB")
    organisation = "University of Example"
    password = factory.PostGenerationMethodCall("set_password", DEMO_PASSWORD)

    @factory.post_generation
    def verified(self, create, extracted, **kwargs):
        """Mark the address verified, as allauth requires before a first sign-in (pass verified=False to skip)."""
        if create and extracted is not False:
            EmailAddress.objects.create(user=self, email=self.email, verified=True, primary=True)
        if create:
            self.save()


def give_mfa(user) -> str:
    """Enrol a TOTP device for a user and return its secret, so tests can act as a privileged role."""
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return secret


def web_client(user, **options) -> Client:
    """A browser signed in as `user`; `raise_request_exception=False` shows a 500 as a status, not an exception."""
    client = Client(**options)
    client.force_login(user)
    return client


def api_client(user) -> APIClient:
    """An API client authenticated as `user`."""
    client = APIClient()
    client.force_authenticate(user)
    return client


class SystemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = System
        django_get_or_create = ["slug"]

    name = factory.Sequence(lambda n: f"System {n}")
    slug = factory.Sequence(lambda n: f"system-{n}")
    cluster_name = factory.Sequence(lambda n: f"cluster{n}")
    gpu_model = "NVIDIA GH200"
    gpus_per_node = 4
    charge_factor = Decimal("1.0")
    time_zone = "UTC"


class ProgrammeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Programme
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Programme {n}")
    slug = factory.Sequence(lambda n: f"programme-{n}")
    description = "A mission to fund open AI research."

    @factory.post_generation
    def directors(self, create, extracted, **kwargs):
        if create and extracted:
            self.directors.add(*extracted)


def _first_of_this_year():
    from datetime import date

    return date.today().replace(month=1, day=1)


class FundPoolFactory(factory.django.DjangoModelFactory):
    """A pool with no hours: put hours in through `allocations.ledger.deposit_to_pool`, as the portal does."""

    class Meta:
        model = "programmes.FundPool"

    programme = factory.SubFactory(ProgrammeFactory)
    system = factory.SubFactory(SystemFactory)
    name = factory.Sequence(lambda n: f"Fund pool {n}")
    valid_from = factory.LazyFunction(_first_of_this_year)
    valid_until = factory.LazyAttribute(lambda pool: pool.valid_from.replace(year=pool.valid_from.year + 1))
    unused_hours_policy = "return"
    grace_percent = 0


class AllocationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "allocations.Allocation"

    pool = factory.SubFactory(FundPoolFactory)
    scheduler_account = factory.Sequence(lambda n: f"airr-{n:05d}")
    title = factory.Sequence(lambda n: f"Project {n}")
    start_date = factory.LazyAttribute(lambda allocation: allocation.pool.valid_from)
    end_date = factory.LazyAttribute(lambda allocation: allocation.pool.valid_until)
    state = "active"


# Calls and proposals ----------------------------------------------------------------------------------------

HOUR = 3600


class CallFactory(factory.django.DjangoModelFactory):
    """An open call with two criteria; pass `pools=[...]` to say which pools (and so systems) it draws on."""

    class Meta:
        model = "programmes.Call"
        skip_postgeneration_save = True

    programme = factory.SubFactory(ProgrammeFactory)
    title = factory.Sequence(lambda n: f"Call {n}")
    slug = factory.Sequence(lambda n: f"call-{n}")
    summary = "Open-source AI models trained in the open."
    guidance = "Tell us what you will build and why it needs national GPU time."
    opens_on = factory.LazyFunction(lambda: _first_of_this_year())
    closes_on = factory.LazyAttribute(lambda call: call.opens_on.replace(year=call.opens_on.year + 1))
    min_seconds = 100 * HOUR
    max_seconds = 50_000 * HOUR
    max_duration_months = 12

    @factory.post_generation
    def pools(self, create, extracted, **kwargs):
        if create and extracted:
            self.pools.add(*extracted)

    @factory.post_generation
    def criteria(self, create, extracted, **kwargs):
        if not create:
            return
        from programmes.models import Criterion

        for order, name in enumerate(extracted or ["Scientific excellence", "Need for national GPU time"]):
            Criterion.objects.create(call=self, name=name, order=order)


def complete_proposal(proposal, *, system, hours_per_run=100, runs=10):
    """Fill every section of a draft so that it can be submitted."""
    from datetime import date, timedelta

    from programmes.models import ResourceRequest

    proposal.title = proposal.title or "Training an open Welsh language model"
    proposal.summary = "An open model for Welsh speakers."
    proposal.research_field = "Natural language processing"
    proposal.keywords = "Welsh, language models"
    proposal.start_date = date.today() + timedelta(days=30)
    proposal.duration_months = 6
    proposal.case_for_support = "Nobody has trained one in the open."
    proposal.data_statement = "Public web text under open licences."
    proposal.ethics = "not_needed"
    proposal.trusted_research_confirmed = True
    from django.utils import timezone

    proposal.terms_accepted_at = timezone.now()
    proposal.save()
    ResourceRequest.objects.update_or_create(
        proposal=proposal,
        system=system,
        defaults={
            "method": "Pre-training runs",
            "runs": runs,
            "seconds_per_run": hours_per_run * HOUR,
            "gpus_per_job": 64,
            "software": "PyTorch in Apptainer",
        },
    )
    return proposal


def make_proposal(*, call, pi, system, state="draft", title=""):
    """A complete proposal in `state`, reached the way the portal would (directly written, for speed)."""
    from programmes.models import Proposal

    proposal = Proposal.objects.create(call=call, pi=pi, title=title or "Training an open Welsh language model")
    proposal.reference = f"AIRR-2026-{proposal.pk:05d}"
    proposal.state = state
    if state != "draft":
        from django.utils import timezone

        proposal.submitted_at = timezone.now()
    proposal.save()
    return complete_proposal(proposal, system=system)


def bulk_proposals(*, call, system, count: int, reviewers, state="in_review"):
    """`count` reviewed proposals in a few bulk inserts, for query-count tests and benchmarks.

    Each reviewer scores every criterion of every proposal, with scores that vary by reviewer and proposal.
    """
    from datetime import date, timedelta

    from django.utils import timezone

    from programmes.models import Proposal, ResourceRequest, ReviewAssignment, Score

    pi = UserFactory()
    now = timezone.now()
    proposals = Proposal.objects.bulk_create(
        Proposal(call=call, pi=pi, state=state, title=f"Bulk proposal {n}", summary="S", submitted_at=now,
                 start_date=date.today() + timedelta(days=30), duration_months=6)
        for n in range(count)
    )  # fmt: skip
    if not proposals[0].pk:  # backends that do not return ids from bulk inserts
        proposals = list(Proposal.objects.filter(call=call, title__startswith="Bulk proposal").order_by("pk"))
    for proposal in proposals:
        proposal.reference = f"AIRR-2026-{proposal.pk:05d}"
    Proposal.objects.bulk_update(proposals, ["reference"])
    ResourceRequest.objects.bulk_create(
        ResourceRequest(proposal=p, system=system, method="M", runs=10, seconds_per_run=100 * HOUR, gpus_per_job=8)
        for p in proposals
    )
    assignments = ReviewAssignment.objects.bulk_create(
        ReviewAssignment(proposal=p, reviewer=r, email=r.email, token=f"bulk-{p.pk}-{r.pk}", state="submitted")
        for p in proposals
        for r in reviewers
    )
    if not assignments[0].pk:
        assignments = list(ReviewAssignment.objects.filter(proposal__in=proposals))
    criteria = list(call.criteria.all())
    Score.objects.bulk_create(
        Score(
            assignment=a,
            criterion=c,
            value=1 + (a.proposal_id * 7 + a.reviewer_id * 3 + c.pk) % 5,
            comment="ok",
        )
        for a in assignments
        for c in criteria
    )
    return proposals
