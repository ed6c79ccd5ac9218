from django.urls import path

from . import api

urlpatterns = [
    path("systems/<slug:slug>/usage/", api.UsageIngestView.as_view(), name="usage-ingest"),
    path("systems/<slug:slug>/usage/batches/<int:pk>/", api.UsageBatchView.as_view(), name="usage-batch"),
    path("systems/<slug:slug>/usage-report/", api.UsageReportView.as_view(), name="usage-report"),
    path("systems/<slug:slug>/limits/", api.LimitsView.as_view(), name="system-limits"),
]
