"""The director's queue and a call's decision page cost the same number of queries for 10 or 500 proposals."""

import pytest
from django.urls import reverse

from tests.factories import UserFactory, bulk_proposals

pytestmark = pytest.mark.django_db

# Session, user, MFA check, role checks, then the page's own reads; the same whatever the number of proposals.
MAX_QUERIES = 20


@pytest.mark.parametrize("count", [10, 500])
def test_the_queue_issues_a_bounded_number_of_queries(
    client, call, system, director, count, django_assert_max_num_queries
):
    bulk_proposals(call=call, system=system, count=count, reviewers=[UserFactory(), UserFactory()])
    client.force_login(director)
    with django_assert_max_num_queries(MAX_QUERIES):
        response = client.get(reverse("proposals:proposal-queue"), {"sort": "score"})
    assert response.status_code == 200
    assert f"{count} proposals" in response.content.decode()


@pytest.mark.parametrize("count", [10, 500])
def test_the_decision_page_issues_a_bounded_number_of_queries(
    client, call, system, director, count, django_assert_max_num_queries
):
    bulk_proposals(call=call, system=system, count=count, reviewers=[UserFactory(), UserFactory(), UserFactory()])
    client.force_login(director)
    with django_assert_max_num_queries(MAX_QUERIES):
        response = client.get(reverse("proposals:call-decisions", args=[call.slug]))
    assert response.status_code == 200
    page = response.content.decode()
    assert page.count("Bulk proposal") == min(count, 100)  # the ranking shows 100 a page
    # The pool holds 10,000 GPU-hours and each proposal asks for 1,000: 10 fit exactly, 500 do not.
    assert ("Cut-off" in page) == (count > 10)
