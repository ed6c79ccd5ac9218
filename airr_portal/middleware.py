"""Middleware: the Content-Security-Policy header and the MFA policy for privileged roles."""

from django.conf import settings
from django.contrib import messages
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse

from . import roles


class ContentSecurityPolicyMiddleware:
    """Send one strict policy on every response: our pages load nothing from elsewhere and run no inline script."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


class RequireMultiFactorMiddleware:
    """Send directors, assessors and admins to set up two-factor authentication before they use anything else.

    Only the pages they need to set it up (and to sign out or fix their email) stay open to them until then.
    """

    ALLOWED_PREFIXES = ("/accounts/", "/static/", "/healthz")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = request.user
        if (
            user.is_authenticated
            and not request.path.startswith(self.ALLOWED_PREFIXES)
            and roles.must_use_mfa(user)
            and not roles.has_mfa(user)
        ):
            if request.path.startswith("/api/"):
                return JsonResponse(
                    {
                        "status": 403,
                        "code": "mfa_required",
                        "detail": "Your role requires two-factor authentication: set it up in the portal first.",
                        "errors": {},
                    },
                    status=403,
                )
            messages.warning(request, "Your role needs two-factor authentication. Set it up to continue.")
            return redirect(reverse("mfa_activate_totp"))
        return self.get_response(request)
