from django.urls import path

from . import views

app_name = "usage"

urlpatterns = [
    path("tokens/", views.token_list, name="token-list"),
    path("tokens/new/", views.token_create, name="token-create"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token-revoke"),
    path("batches/", views.batch_list, name="batch-list"),
    path("batches/<int:pk>/", views.batch_detail, name="batch-detail"),
    path("batches/<int:pk>/replay/", views.batch_replay, name="batch-replay"),
    path("batches/<int:pk>/read/", views.batch_read, name="batch-read"),
    path("batches/<int:pk>/dealt-with/", views.batch_dealt_with, name="batch-dealt-with"),
    path("upload/", views.upload, name="upload"),
    path("unmatched/", views.unmatched, name="unmatched"),
    path("variance/", views.variance, name="variance"),
    path("unmatched/<slug:slug>/assign/", views.unmatched_assign, name="unmatched-assign"),
    path("allocations/", views.allocation_list, name="allocation-list"),
    path("allocations/<int:pk>/", views.allocation_usage, name="allocation-usage"),
    path("allocations/<int:pk>/members/", views.allocation_members, name="allocation-members"),
    path("allocations/<int:pk>/statement.csv", views.allocation_statement, name="allocation-statement"),
]
