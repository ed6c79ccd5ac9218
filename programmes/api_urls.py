from rest_framework.routers import SimpleRouter

from . import api

router = SimpleRouter()
router.register("systems", api.SystemViewSet, basename="system")
router.register("programmes", api.ProgrammeViewSet, basename="programme")

# Calls, proposals and reviews.
from . import proposal_api  # noqa: E402

router.register("calls", proposal_api.CallViewSet, basename="call")
router.register("proposals", proposal_api.ProposalViewSet, basename="proposal")
router.register("reviews", proposal_api.ReviewViewSet, basename="review")

urlpatterns = router.urls
