from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("systems", api.SystemViewSet, basename="system")
router.register("programmes", api.ProgrammeViewSet, basename="programme")

urlpatterns = router.urls
