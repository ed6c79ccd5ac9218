"""A system's time zone, which its job records' Starts were read in, is set before its first ingest and then kept."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from allocations.usage.ingest import ingest_sacct
from programmes.models import System
from tests.allocations.usage_helpers import payload, sacct_line

pytestmark = pytest.mark.django_db


def _form(system, **changes):
    fields = {
        "name": system.name,
        "slug": system.slug,
        "cluster_name": system.cluster_name,
        "gpu_model": system.gpu_model,
        "gpus_per_node": system.gpus_per_node,
        "charge_factor": system.charge_factor,
        "time_zone": system.time_zone,
    }
    return {**fields, **changes}


def _post(client, system, **changes):
    return client.post(reverse("admin:programmes_system_change", args=[system.pk]), _form(system, **changes))


def test_the_time_zone_of_a_system_with_job_records_is_refused_with_the_reason(client, site_admin, system):
    ingest_sacct(system=system, payload=payload(sacct_line(1)), source="command")

    response = _post(client, system, time_zone="Europe/London")

    assert response.status_code == 200
    assert "each run reported again would read as a new run" in response.content.decode()
    system.refresh_from_db()
    assert system.time_zone == "UTC"


def test_before_the_first_ingest_the_time_zone_can_be_set(client, site_admin, system):
    response = _post(client, system, time_zone="Europe/London")

    assert response.status_code == 302
    system.refresh_from_db()
    assert system.time_zone == "Europe/London"


def test_the_other_settings_of_a_system_with_job_records_can_still_be_changed(client, site_admin, system):
    ingest_sacct(system=system, payload=payload(sacct_line(1)), source="command")

    response = _post(client, system, charge_factor="1.5")

    assert response.status_code == 302
    system.refresh_from_db()
    assert (system.charge_factor, system.time_zone) == (1.5, "UTC")


def test_the_rule_holds_wherever_a_system_is_validated(system):
    ingest_sacct(system=system, payload=payload(sacct_line(1)), source="command")
    system.time_zone = "Europe/London"

    with pytest.raises(ValidationError, match="charged twice"):
        system.full_clean()

    assert System.objects.get(pk=system.pk).time_zone == "UTC"


def test_a_time_zone_that_is_no_zone_can_be_corrected_though_the_system_has_job_records(client, site_admin, system):
    """Mistyped before zones were checked (or gone from the host's database): ingest and claims refuse it and tell
    an admin to correct it on the admin site; no run can have been read in it."""
    ingest_sacct(system=system, payload=payload(sacct_line(1)), source="command")
    System.objects.filter(pk=system.pk).update(time_zone="Europe/Londn")
    system.refresh_from_db()

    response = _post(client, system, time_zone="UTC")

    assert response.status_code == 302
    system.refresh_from_db()
    assert system.time_zone == "UTC"
