"""Usage pages in Chromium, each checked with axe: an operator's tokens, upload, batches and unmatched usage,
and a PI's usage page."""

import pytest

from allocations.usage.ingest import ingest_sacct
from allocations.usage.reconcile import reconcile_system
from tests.allocations.usage_helpers import funded_allocation, payload, sacct_line
from tests.browser.conftest import check_accessibility, sign_in, visit
from tests.factories import UserFactory, give_mfa

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operator_makes_a_token_uploads_a_file_and_reads_its_batch(page, live_server, system, tmp_path):
    admin = UserFactory(email="operator@example.ac.uk", is_staff=True)
    give_mfa(admin)
    funded_allocation(system)
    sign_in(page, live_server, admin)

    visit(page, "/usage/tokens/")
    page.get_by_role("link", name="Make a token").click()
    check_accessibility(page)
    page.get_by_label("Name").fill("sacct cron on login1")
    page.get_by_role("button", name="Make token").click()
    key = page.locator("#ingest-key").inner_text()
    assert key.startswith("airr_ingest_")
    check_accessibility(page)

    file = tmp_path / "jobs.txt"
    file.write_bytes(payload(sacct_line(1), sacct_line(2, account="nobody"), "a broken line"))
    visit(page, "/usage/upload/")
    page.get_by_label("sacct output").set_input_files(str(file))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url("**/usage/batches/*/")
    page.reload()  # the worker (eager here) has read the rows by now
    check_accessibility(page)
    assert "expected 12 fields" in page.content()

    visit(page, "/usage/batches/")
    visit(page, "/usage/unmatched/")
    assert "nobody" in page.content()
    page.get_by_label("Allocation's scheduler account for nobody").fill("airr-00001")
    page.get_by_role("button", name="Assign nobody").click()
    check_accessibility(page)  # what the assignment will do, asked to confirm
    assert "Are you sure you want to assign 'nobody' to airr-00001?" in page.content()
    page.get_by_role("button", name="Assign and charge").click()
    assert "1 job record of 'nobody' assigned to airr-00001" in page.content()
    assert "All reported usage belongs to an allocation." in page.content()

    visit(page, "/usage/tokens/")
    page.get_by_role("link", name="Revoke sacct cron on login1").click()
    check_accessibility(page)
    page.get_by_role("button", name="Revoke token").click()
    assert "has been revoked" in page.content()


def test_an_operator_marks_a_batch_that_could_not_be_read_as_dealt_with(page, live_server, system):
    from allocations.models import IngestBatch
    from allocations.usage.ingest import receive_payload

    admin = UserFactory(email="operator@example.ac.uk", is_staff=True)
    give_mfa(admin)
    garbage = receive_payload(system=system, payload=b"Not sacct output\n", source="upload").batch
    IngestBatch.objects.filter(pk=garbage.pk).update(status=IngestBatch.Status.FAILED, error="Not sacct output")
    sign_in(page, live_server, admin)

    visit(page, "/usage/batches/")
    assert "1 batch needs attention" in page.content()
    page.get_by_role("link", name=f"Batch {garbage.pk}").click()
    check_accessibility(page)
    page.get_by_role("button", name="Mark as dealt with").click()
    check_accessibility(page)
    assert page.locator(".govuk-error-summary").filter(has_text="Enter why this batch needs nothing more").is_visible()
    page.get_by_label("Why does this batch need nothing more?").fill("Uploaded by mistake")
    page.get_by_role("button", name="Mark as dealt with").click()
    check_accessibility(page)
    assert "Why: Uploaded by mistake" in page.content()

    visit(page, "/usage/batches/")
    assert "needs attention" not in page.content() and "Dealt with" in page.content()


def test_a_pi_reads_the_usage_of_their_allocation(page, live_server, system):
    pi = UserFactory(email="pi@example.ac.uk")
    allocation = funded_allocation(system, holder=pi)
    ingest_sacct(system=system, payload=payload(sacct_line(1, user="pi"), sacct_line(2, user="bob")), source="api")
    reconcile_system(system=system)
    sign_in(page, live_server, pi)

    visit(page, "/usage/allocations/")
    page.get_by_role("link", name=allocation.scheduler_account, exact=False).click()
    check_accessibility(page)
    assert "Per member" in page.content() and "bob" in page.content()


def test_a_pi_records_a_co_investigators_username_and_the_co_investigator_sees_their_own_jobs(
    page, live_server, system
):
    from django.utils import timezone

    from programmes.models import ProposalMember
    from tests.factories import CallFactory, make_proposal

    pi = UserFactory(email="pi@example.ac.uk", full_name="Priya Investigator")
    bob = UserFactory(email="bob@example.ac.uk", full_name="Bob Teammate")
    proposal = make_proposal(call=CallFactory(), pi=pi, system=system, state="accepted")
    ProposalMember.objects.create(
        proposal=proposal, email=bob.email, user=bob, token="bob-token", accepted_at=timezone.now()
    )
    allocation = funded_allocation(system, holder=pi, proposal=proposal)
    lines = [sacct_line(1, user="priya"), sacct_line(2, user="bob.proj"), sacct_line(3, user="cw42")]
    ingest_sacct(system=system, payload=payload(*lines), source="api")
    reconcile_system(system=system)
    usage = f"/usage/allocations/{allocation.pk}/"

    sign_in(page, live_server, bob)
    visit(page, usage)
    assert "ask the PI, Priya Investigator, to record it" in page.content()

    sign_in(page, live_server, pi)
    visit(page, usage)
    page.get_by_role("link", name="Record your team's scheduler usernames").click()
    check_accessibility(page)
    page.get_by_label("Bob Teammate").fill("x" * 65)
    page.get_by_role("button", name="Save usernames").click()
    check_accessibility(page)
    assert page.locator(".govuk-error-summary").is_visible()
    page.get_by_label("Bob Teammate").fill("bob.proj")
    page.get_by_role("button", name="Save usernames").click()
    check_accessibility(page)
    assert "The team's scheduler usernames are saved" in page.content()

    sign_in(page, live_server, bob)
    visit(page, usage)
    jobs = page.locator("table").filter(has_text="Started")
    assert jobs.locator("tbody tr").count() == 1
    assert "bob.proj" in jobs.inner_text() and "cw42" not in page.content()
