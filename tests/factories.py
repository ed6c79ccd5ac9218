"""Factories for the whole suite: every test builds the data it needs and depends on no other test's."""

from decimal import Decimal

import factory
from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret

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
