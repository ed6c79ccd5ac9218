from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("pools", api.FundPoolViewSet, basename="fund-pool")

urlpatterns = router.urls
