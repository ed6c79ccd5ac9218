"""DRF permissions shared by every endpoint (kept apart from api.py, which DRF's settings must not import)."""

from rest_framework import permissions

from . import roles


class MultiFactorSatisfied(permissions.BasePermission):
    message = "Your role requires two-factor authentication: set it up in the portal first."
    code = "mfa_required"

    def has_permission(self, request, view):
        user = request.user
        if not user or not user.is_authenticated:
            return True  # IsAuthenticated (or the view's own policy) decides about anonymous requests.
        return not roles.must_use_mfa(user) or roles.has_mfa(user)
