"""Calls, proposals and their review: the applicant's pages (proposal_views) and the director's, assessor's
and reviewer's (review_views)."""

from django.urls import path

from . import proposal_views, review_views

app_name = "proposals"

urlpatterns = [
    path("calls/", proposal_views.call_list, name="call-list"),
    path("calls/<slug:slug>/", proposal_views.call_detail, name="call-detail"),
    path("calls/<slug:slug>/start/", proposal_views.proposal_start, name="proposal-start"),
    path("calls/<slug:slug>/decisions/", review_views.call_decisions, name="call-decisions"),
    path("proposals/", proposal_views.proposal_list, name="proposal-list"),
    path("review/", review_views.proposal_queue, name="proposal-queue"),
    path("proposals/<int:pk>/", proposal_views.proposal_detail, name="proposal-detail"),
    path("proposals/<int:pk>/tasks/", proposal_views.proposal_tasks, name="proposal-tasks"),
    path("proposals/<int:pk>/details/", proposal_views.proposal_details, name="proposal-details"),
    path("proposals/<int:pk>/team/", proposal_views.proposal_team, name="proposal-team"),
    path("proposals/<int:pk>/resources/", proposal_views.proposal_resources, name="proposal-resources"),
    path(
        "proposals/<int:pk>/resources/<slug:system>/remove/",
        proposal_views.proposal_resource_remove,
        name="proposal-resource-remove",
    ),
    path("proposals/<int:pk>/timeline/", proposal_views.proposal_timeline, name="proposal-timeline"),
    path("proposals/<int:pk>/case-for-support/", proposal_views.proposal_case, name="proposal-case"),
    path("proposals/<int:pk>/case-for-support.pdf", proposal_views.proposal_pdf, name="proposal-pdf"),
    path("proposals/<int:pk>/data/", proposal_views.proposal_data, name="proposal-data"),
    path("proposals/<int:pk>/declarations/", proposal_views.proposal_declarations, name="proposal-declarations"),
    path("proposals/<int:pk>/check/", proposal_views.proposal_check, name="proposal-check"),
    path("proposals/<int:pk>/submit/", proposal_views.proposal_submit, name="proposal-submit"),
    path("proposals/<int:pk>/submitted/", proposal_views.proposal_submitted, name="proposal-submitted"),
    path("proposals/<int:pk>/withdraw/", proposal_views.proposal_withdraw, name="proposal-withdraw"),
    path("proposals/<int:pk>/award/", proposal_views.proposal_respond, name="proposal-respond"),
    path("proposals/<int:pk>/eligible/", review_views.proposal_eligible, name="proposal-eligible"),
    path(
        "proposals/<int:pk>/request-changes/",
        review_views.proposal_request_changes,
        name="proposal-request-changes",
    ),
    path("proposals/<int:pk>/assess/<slug:system>/", review_views.proposal_assess, name="proposal-assess"),
    path("proposals/<int:pk>/reviewers/", review_views.proposal_reviewers, name="proposal-reviewers"),
    path("proposals/<int:pk>/decide/", review_views.proposal_decide, name="proposal-decide"),
    path("team/join/<slug:token>/", proposal_views.member_accept, name="member-accept"),
    path("reviews/<int:pk>/", review_views.review_detail, name="review-detail"),
    path("reviews/<int:pk>/release/", review_views.review_release, name="review-release"),
    path("reviews/invitation/<slug:token>/", review_views.review_claim, name="review-claim"),
]
