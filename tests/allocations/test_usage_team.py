"""A team member sees the allocation's usage and, of its jobs, their own share (DESIGN.md, roles): the jobs run
under the scheduler usernames the PI recorded for them."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from allocations import ledger
from allocations.models import Allocation, LedgerTransaction, MemberSchedulerUser
from allocations.reports.selectors import MANUAL_ADJUSTMENTS
from allocations.usage.ingest import ingest_sacct
from allocations.usage.reconcile import reconcile_system
from programmes.models import ProposalMember
from tests.allocations.usage_helpers import HOUR, funded_allocation, payload, sacct_line
from tests.factories import CallFactory, UserFactory, give_mfa, make_proposal

pytestmark = pytest.mark.django_db


@pytest.fixture
def team(system, alice, bob, charlie):
    """Alice's allocation, with Bob and Charlie as co-investigators who joined and Dana invited only; Alice ran
    one GPU-hour as `alice1`, Bob two as `bob.proj`, Charlie four as `cw42`."""
    proposal = make_proposal(call=CallFactory(), pi=alice, system=system, state="accepted")
    for member in (bob, charlie):
        ProposalMember.objects.create(
            proposal=proposal, email=member.email, user=member, token=f"{member.pk}-token", accepted_at=timezone.now()
        )
    dana = UserFactory(email="dana@example.ac.uk")
    ProposalMember.objects.create(proposal=proposal, email=dana.email, user=dana, token="dana-token")
    allocation = funded_allocation(system, holder=alice, proposal=proposal)
    lines = [
        sacct_line(1, user="alice1", elapsed=HOUR),
        sacct_line(2, user="bob.proj", elapsed=2 * HOUR),
        sacct_line(3, user="cw42", elapsed=4 * HOUR),
    ]
    ingest_sacct(system=system, payload=payload(*lines), source="command")
    reconcile_system(system=system)
    return allocation


def _page(client, user, allocation):
    client.force_login(user)
    return client.get(reverse("usage:allocation-usage", args=[allocation.pk]))


def _shown(response):
    """(per-member users, job users) on an allocation's usage page."""
    context = response.context
    return [row["user"] for row in context["per_member"]], [job.user for job in context["page"].object_list]


def test_the_pi_records_each_co_investigators_usernames_on_the_allocations_system(client, team, alice, bob, charlie):
    client.force_login(alice)
    url = reverse("usage:allocation-members", args=[team.pk])

    page = client.get(url)
    response = client.post(url, {f"member_{bob.pk}": "bob.proj, bob-old", f"member_{charlie.pk}": "cw42"})

    assert [field.label for field in page.context["form"]] == ["Alice Owner (PI)", "Bob Teammate", "Charlie Outsider"]
    assert response.status_code == 302
    assert sorted(MemberSchedulerUser.objects.values_list("user__email", "username")) == [
        (bob.email, "bob-old"),
        (bob.email, "bob.proj"),
        (charlie.email, "cw42"),
    ]
    # Saved again, the page's names replace the old ones.
    client.post(url, {f"member_{bob.pk}": "bob.proj", f"member_{charlie.pk}": ""})
    assert list(MemberSchedulerUser.objects.values_list("username", flat=True)) == ["bob.proj"]
    assert client.get(url).context["form"][f"member_{bob.pk}"].initial == "bob.proj"


def test_a_co_investigator_sees_the_allocations_figures_and_of_its_jobs_only_their_own(client, team, bob):
    MemberSchedulerUser.objects.create(allocation=team, user=bob, username="bob.proj")

    response = _page(client, bob, team)
    api = client.get(reverse("api-allocation-usage", args=[team.pk])).json()

    assert response.context["report"].used == 7 * HOUR  # the allocation's whole usage
    assert _shown(response) == (["bob.proj"], ["bob.proj"])
    assert [row["user"] for row in api["per_member"]] == ["bob.proj"]
    assert api["figures"]["gpu_seconds"]["used"] == 7 * HOUR
    html = response.content.decode()
    assert "cw42" not in html and "alice1" not in html
    assert "Your own share" in html


def test_a_co_investigator_whose_username_is_not_recorded_sees_no_jobs_and_is_told_whom_to_ask(client, team, charlie):
    response = _page(client, charlie, team)

    assert _shown(response) == ([], [])
    assert "ask the PI, Alice Owner, to record it" in response.content.decode()
    assert client.get(reverse("api-allocation-usage", args=[team.pk])).json()["per_member"] == []


def _viewers_of_every_member(team, alice) -> dict:
    """The PI, one of the programme's directors and an admin, each able to open the allocation's page."""
    users = {
        "alice": alice,
        "director": UserFactory(email="director@example.org"),
        "admin": UserFactory(email="admin@example.org", is_staff=True),
    }
    team.pool.programme.directors.add(users["director"])
    give_mfa(users["director"])
    give_mfa(users["admin"])  # as the policy requires of both
    return users


@pytest.mark.parametrize("viewer", ["alice", "director", "admin"])
def test_the_pi_the_programmes_directors_and_admins_see_every_members_jobs(client, team, viewer, alice, bob):
    MemberSchedulerUser.objects.create(allocation=team, user=bob, username="bob.proj")
    viewer = _viewers_of_every_member(team, alice)[viewer]

    response = _page(client, viewer, team)

    per_member, jobs = _shown(response)
    assert sorted(per_member) == sorted(jobs) == ["alice1", "bob.proj", "cw42"]
    assert "Your own share" not in response.content.decode()


def test_only_the_pi_and_admins_record_usernames(client, team, bob):
    director = UserFactory(email="director@example.org")
    team.pool.programme.directors.add(director)
    give_mfa(director)
    url = reverse("usage:allocation-members", args=[team.pk])

    for user in (bob, director):
        client.force_login(user)
        assert client.get(url).status_code == 403
        assert client.post(url, {f"member_{bob.pk}": "cw42"}).status_code == 403
    assert not MemberSchedulerUser.objects.exists()
    client.force_login(UserFactory(email="stranger@example.org"))
    assert client.get(url).status_code == 404


@pytest.mark.parametrize(
    ("bob_names", "charlie_names", "message"),
    [
        ("bob.proj", "bob.proj", "'bob.proj' is given to Bob Teammate already"),
        ("x" * 65, "", "is longer than 64 characters"),
        ("bob\x07", "", "not printable"),
        (" ".join(f"b{n}" for n in range(11)), "", "at most 10 usernames"),
    ],
)
def test_usernames_that_cannot_be_recorded_are_refused_with_the_reason_and_nothing_changes(
    client, team, alice, bob, charlie, bob_names, charlie_names, message
):
    MemberSchedulerUser.objects.create(allocation=team, user=bob, username="earlier")
    client.force_login(alice)

    response = client.post(
        reverse("usage:allocation-members", args=[team.pk]),
        {f"member_{bob.pk}": bob_names, f"member_{charlie.pk}": charlie_names},
    )

    assert response.status_code == 200
    assert "govuk-error-summary" in response.content.decode()
    assert escape(message) in response.content.decode()
    assert list(MemberSchedulerUser.objects.values_list("username", flat=True)) == ["earlier"]


def test_the_pis_own_usernames_are_recorded_and_none_of_them_can_be_given_to_a_co_investigator(
    client, team, alice, bob, charlie
):
    """Given `alice1`, Bob would see Alice's jobs as his own."""
    client.force_login(alice)
    url = reverse("usage:allocation-members", args=[team.pk])
    client.post(url, {f"member_{alice.pk}": "alice1", f"member_{bob.pk}": "bob.proj"})

    page = client.get(url)
    response = client.post(
        url, {f"member_{alice.pk}": "alice1", f"member_{bob.pk}": "bob.proj, alice1", f"member_{charlie.pk}": "cw42"}
    )

    assert page.context["form"][f"member_{alice.pk}"].initial == "alice1"
    assert response.status_code == 200
    assert escape("'alice1' is given to Alice Owner (PI) already") in response.content.decode()
    assert response.context["form"].errors == {
        f"member_{bob.pk}": ["'alice1' is given to Alice Owner (PI) already: a username is one person's"]
    }
    assert sorted(MemberSchedulerUser.objects.values_list("user", "username")) == [
        (alice.pk, "alice1"),
        (bob.pk, "bob.proj"),
    ]
    # Her own usernames recorded, the PI still sees every member's jobs.
    assert sorted(_shown(_page(client, alice, team))[1]) == ["alice1", "bob.proj", "cw42"]


def test_a_field_for_someone_not_on_the_team_is_ignored(client, team, alice, bob):
    dana = ProposalMember.objects.get(email="dana@example.ac.uk").user  # invited, never joined
    client.force_login(alice)

    client.post(
        reverse("usage:allocation-members", args=[team.pk]),
        {f"member_{bob.pk}": "bob.proj", f"member_{dana.pk}": "cw42"},
    )

    assert list(MemberSchedulerUser.objects.values_list("user", "username")) == [(bob.pk, "bob.proj")]


def test_a_co_investigator_who_accepted_two_invitations_is_one_field_and_their_usernames_are_saved(
    client, team, alice, bob, charlie
):
    """Invited at two addresses, Bob followed both links while signed in as himself: he is still one person."""
    ProposalMember.objects.create(
        proposal=team.proposal, email="bob@home.example.org", user=bob, token="bob-home", accepted_at=timezone.now()
    )
    client.force_login(alice)
    url = reverse("usage:allocation-members", args=[team.pk])

    page = client.get(url)
    response = client.post(url, {f"member_{bob.pk}": "bob.proj", f"member_{charlie.pk}": ""})

    assert [field.label for field in page.context["form"]] == ["Alice Owner (PI)", "Bob Teammate", "Charlie Outsider"]
    assert response.status_code == 302
    assert list(MemberSchedulerUser.objects.values_list("user", "username")) == [(bob.pk, "bob.proj")]


def test_a_members_email_address_shows_on_the_usernames_page_as_text_never_as_markup(client, team, alice, bob):
    """An address may quote its local part, and a quoted one may hold `<` and `>`: it is the member's to choose."""
    bob.email = '"<a/href=//evil.example/>login</a>"@example.org'
    bob.save(update_fields=["email"])
    client.force_login(alice)

    html = client.get(reverse("usage:allocation-members", args=[team.pk])).content.decode()

    assert escape(bob.email) in html
    assert "<a/href=//evil.example/>" not in html


@pytest.mark.parametrize("also", ["director", "admin"])
def test_a_co_investigator_who_is_also_the_programmes_director_or_an_admin_sees_every_members_jobs(
    client, team, bob, also
):
    MemberSchedulerUser.objects.create(allocation=team, user=bob, username="bob.proj")
    if also == "director":
        team.pool.programme.directors.add(bob)
    else:
        bob.is_staff = True
        bob.save(update_fields=["is_staff"])
    give_mfa(bob)

    response = _page(client, bob, team)
    api = client.get(reverse("api-allocation-usage", args=[team.pk])).json()

    per_member, jobs = _shown(response)
    assert sorted(per_member) == sorted(jobs) == ["alice1", "bob.proj", "cw42"]
    assert sorted(row["user"] for row in api["per_member"]) == ["alice1", "bob.proj", "cw42"]


def test_a_co_investigator_of_an_allocation_nobody_holds_is_told_that_the_admins_record_usernames(
    client, team, charlie
):
    """An admin may leave an allocation without a holder: then only admins can record whose usernames are whose."""
    Allocation.objects.filter(pk=team.pk).update(holder=None)

    html = _page(client, charlie, team).content.decode()

    assert "ask the PI" not in html
    assert "ask the service's admins to record it" in html


def _by_hand(allocation):
    """Staff, from the shell, give back 3 of the allocation's 7 hours and then charge 1 more against that refund:
    2 GPU-hours given back by hand, which belong to no job."""
    refund = ledger.refund_usage(
        allocation=allocation, seconds=3 * HOUR, actor=None, reason="A node failed", idempotency_key="refund"
    )
    ledger.adjust_usage(
        corrects=refund, seconds=HOUR, actor=None, reason="Refunded one hour too many", idempotency_key="adjust"
    )


@pytest.mark.parametrize("viewer", ["alice", "director", "admin"])
def test_the_pi_directors_and_admins_see_usage_moved_by_hand_in_a_row_of_its_own_so_members_add_up_to_used(
    client, team, viewer, alice
):
    viewer = _viewers_of_every_member(team, alice)[viewer]
    _by_hand(team)

    response = _page(client, viewer, team)

    rows = [(row["user"], row["jobs"], row["seconds"]) for row in response.context["per_member"]]
    assert rows == [
        ("cw42", 1, 4 * HOUR),
        ("bob.proj", 1, 2 * HOUR),
        ("alice1", 1, HOUR),
        (MANUAL_ADJUSTMENTS, None, -2 * HOUR),
    ]
    assert response.context["report"].used == 5 * HOUR == sum(seconds for _, _, seconds in rows)
    assert escape(MANUAL_ADJUSTMENTS) in response.content.decode()


def test_a_co_investigator_does_not_see_usage_moved_by_hand_which_is_no_share_of_theirs(client, team, bob):
    MemberSchedulerUser.objects.create(allocation=team, user=bob, username="bob.proj")
    _by_hand(team)

    response = _page(client, bob, team)

    assert response.context["report"].used == 5 * HOUR
    assert [(row["user"], row["seconds"]) for row in response.context["per_member"]] == [("bob.proj", 2 * HOUR)]
    assert escape(MANUAL_ADJUSTMENTS) not in response.content.decode()


@pytest.mark.parametrize("viewer", ["alice", "director", "admin"])
def test_the_usage_api_gives_usage_moved_by_hand_beside_the_members_so_they_add_up_to_used(client, team, viewer, alice):
    viewer = _viewers_of_every_member(team, alice)[viewer]
    _by_hand(team)
    client.force_login(viewer)

    data = client.get(reverse("api-allocation-usage", args=[team.pk])).json()

    members = sum(row["gpu_seconds"]["charged"] for row in data["per_member"])
    assert data["used_by_hand"] == {"gpu_seconds": {"charged": -2 * HOUR}, "gpu_hours": {"charged": "-2.00"}}
    assert members + data["used_by_hand"]["gpu_seconds"]["charged"] == data["figures"]["gpu_seconds"]["used"]
    assert data["figures"]["gpu_seconds"]["used"] == 5 * HOUR


def test_the_usage_api_gives_a_co_investigator_their_own_share_and_no_usage_moved_by_hand(client, team, bob):
    MemberSchedulerUser.objects.create(allocation=team, user=bob, username="bob.proj")
    _by_hand(team)
    client.force_login(bob)

    data = client.get(reverse("api-allocation-usage", args=[team.pk])).json()

    assert [(row["user"], row["gpu_seconds"]["charged"]) for row in data["per_member"]] == [("bob.proj", 2 * HOUR)]
    assert data["used_by_hand"] is None


def test_a_hand_row_shows_even_before_any_job_is_reported(client, system, alice):
    allocation = funded_allocation(system, holder=alice)
    ledger.charge_usage(allocation=allocation, seconds=HOUR, reason="Usage lost by the site", idempotency_key="c")

    response = _page(client, alice, allocation)

    assert [(row["user"], row["seconds"]) for row in response.context["per_member"]] == [(MANUAL_ADJUSTMENTS, HOUR)]
    assert "No jobs have been reported" not in response.content.decode()


def test_usage_moved_by_hand_costs_the_usage_page_no_more_queries(client, team, alice):
    client.force_login(alice)
    url = reverse("usage:allocation-usage", args=[team.pk])
    with CaptureQueriesContext(connection) as before:
        client.get(url)
    _by_hand(team)

    with CaptureQueriesContext(connection) as after:
        response = client.get(url)

    assert (
        LedgerTransaction.objects.exclude(cause_type="reconciliation_run").filter(type__in=ledger.USAGE_TYPES).count()
        == 2
    )
    assert response.context["per_member"][-1]["user"] == MANUAL_ADJUSTMENTS
    assert len(after.captured_queries) == len(before.captured_queries)
