from django.urls import path
from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("reports/exports", api.ReportExportViewSet, basename="report-export")

urlpatterns = [
    path("reports/totals/", api.ReportTotalsView.as_view(), name="report-totals"),
    *router.urls,
]
