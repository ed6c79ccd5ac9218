"""The cluster's credential: an ingest token, accepted only by the usage endpoints that name this class.

It is deliberately absent from DEFAULT_AUTHENTICATION_CLASSES, so an ingest token authenticates nothing else.
A request it authenticates has an anonymous `user` and the IngestToken as `auth`.
"""

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, permissions

from airr_portal import roles
from airr_portal.authentication import HashedKeyAuthentication
from allocations.models import IngestToken

from .services import TOKEN_PREFIX


class IngestTokenAuthentication(HashedKeyAuthentication):
    keywords = ("Bearer", "Token")
    how_to_send = "Send the ingest token as 'Authorization: Bearer <token>'"
    refused = "The ingest token is not valid or has been revoked"
    realm = "ingest"

    def is_ours(self, key: str) -> bool:
        return key.startswith(TOKEN_PREFIX)

    def find(self, key_hash: str):
        token = IngestToken.objects.select_related("system").filter(key_hash=key_hash).first()
        return token if token is not None and not token.is_revoked else None

    def user_of(self, token):
        return AnonymousUser()


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
