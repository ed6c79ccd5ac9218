"""Template context every page needs: the service navigation for the signed-in user's roles."""

from .navigation import navigation_for


def navigation(request):
    return {"service_navigation": navigation_for(request)}
