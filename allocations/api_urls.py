from django.urls import include, path
from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("pools", api.FundPoolViewSet, basename="fund-pool")

urlpatterns = [
    *router.urls,
    # The reports behind the programme dashboard and the PI's allocation page.
    path("programmes/<int:pk>/dashboard/", api.ProgrammeDashboardView.as_view(), name="api-programme-dashboard"),
    path("allocations/<int:pk>/usage/", api.AllocationUsageView.as_view(), name="api-allocation-usage"),
]

# Usage: the cluster's endpoints (allocations/usage/api.py).
urlpatterns += [path("", include("allocations.usage.api_urls"))]

# Reports: exports and grouped totals (allocations/reports/api.py).
urlpatterns += [path("", include("allocations.reports.api_urls"))]
