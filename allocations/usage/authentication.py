"""The cluster's credential: an ingest token, accepted only by the usage endpoints that name this class.

It is deliberately absent from DEFAULT_AUTHENTICATION_CLASSES, so an ingest token authenticates nothing else.
A request it authenticates has an anonymous `user` and the IngestToken as `auth`.
"""

from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from airr_portal import roles
from allocations.models import IngestToken

from .services import TOKEN_PREFIX, hash_key


class IngestTokenAuthentication(authentication.BaseAuthentication):
    keywords = ("Bearer", "Token")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace") not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send the ingest token as 'Authorization: Bearer <token>'")
        key = header[1].decode(errors="replace")
        if not key.startswith(TOKEN_PREFIX):
            return None  # not an ingest token: let the endpoint's other classes (if any) try it
        token = IngestToken.objects.select_related("system").filter(key_hash=hash_key(key)).first()
        if token is None or token.is_revoked:
            raise exceptions.AuthenticationFailed("The ingest token is not valid or has been revoked")
        # One write per request, at most once a minute, so a busy cluster does not rewrite the row constantly.
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            IngestToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return AnonymousUser(), token

    def authenticate_header(self, request):
        return 'Bearer realm="ingest"'


def _token_system_matches(request, view) -> bool:
    token = request.auth
    if not isinstance(token, IngestToken):
        return False
    if token.system.slug != view.kwargs.get("slug"):
        raise exceptions.PermissionDenied(
            f"This token belongs to {token.system.slug}, not to {view.kwargs.get('slug')}"
        )
    return True


class IsIngestTokenOfSystem(permissions.BasePermission):
    """The request carries an ingest token of the system named in the URL."""

    def has_permission(self, request, view):
        if request.auth is None and not request.user.is_authenticated:
            raise exceptions.NotAuthenticated("Send the system's ingest token as 'Authorization: Bearer <token>'")
        if not isinstance(request.auth, IngestToken):
            raise exceptions.PermissionDenied("Only a system's ingest token can post its usage")
        return _token_system_matches(request, view)


class IsIngestTokenOfSystemOrAdmin(permissions.BasePermission):
    """The system's ingest token, or an admin who has satisfied two-factor authentication."""

    def has_permission(self, request, view):
        if isinstance(request.auth, IngestToken):
            return _token_system_matches(request, view)
        user = request.user
        if not user.is_authenticated:
            raise exceptions.NotAuthenticated()
        return roles.is_admin(user) and roles.has_mfa(user)


class IngestTokenScheme(OpenApiAuthenticationExtension):
    """Describes the ingest token in the OpenAPI schema (drf-spectacular finds it by `target_class`)."""

    target_class = IngestTokenAuthentication
    name = "ingestToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A system's ingest token: it posts that system's job records and reads its limits.",
        }
