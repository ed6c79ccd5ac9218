from django.urls import include, path
from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("pools", api.FundPoolViewSet, basename="fund-pool")

urlpatterns = router.urls

# Usage: the cluster's endpoints (allocations/usage/api.py).
urlpatterns += [path("", include("allocations.usage.api_urls"))]
