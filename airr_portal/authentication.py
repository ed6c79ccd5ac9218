"""A person's API token on the API: `Authorization: Token <key>` (or `Bearer <key>`), looked up by its hash."""

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from .models import ApiToken
from .services import hash_key


class HashedKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: <keyword> <key>`, the key looked up by its hash (keys are never stored), its last use noted
    at most once a minute, so a busy client does not rewrite the row on every request. Subclasses say which
    tokens, and what a request they authenticate is made by."""

    keywords: tuple[str, ...]
    how_to_send: str  # the message for a malformed header
    refused: str  # the message for a key that matches no usable token
    realm: str

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        # Authentication schemes are case-insensitive (RFC 9110), as DRF's own token authentication treats them.
        if not header or header[0].decode(errors="replace").lower() not in {word.lower() for word in self.keywords}:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(self.how_to_send)
        key = header[1].decode(errors="replace")
        if not self.is_ours(key):
            return None  # someone else's kind of token: let the endpoint's other classes (if any) try it
        token = self.find(hash_key(key))
        if token is None:
            raise exceptions.AuthenticationFailed(self.refused)
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            type(token).objects.filter(pk=token.pk).update(last_used_at=now)
        return self.user_of(token), token

    def authenticate_header(self, request):
        return f'{self.keywords[0]} realm="{self.realm}"'

    def is_ours(self, key: str) -> bool:
        return True

    def find(self, key_hash: str):
        """The usable token with this hash, or None."""
        raise NotImplementedError

    def user_of(self, token):
        raise NotImplementedError


class ApiTokenAuthentication(HashedKeyAuthentication):
    keywords = ("Token", "Bearer")
    how_to_send = "Send the API token as 'Authorization: Token <key>'"
    refused = "The API token is not valid or has been replaced"
    realm = "api"

    def find(self, key_hash: str):
        token = ApiToken.objects.select_related("user").filter(key_hash=key_hash).first()
        return token if token is not None and token.user.is_active else None

    def user_of(self, token):
        return token.user


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Describes the personal API token in the OpenAPI schema (drf-spectacular finds it by `target_class`)."""

    target_class = ApiTokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A person's API token, from the portal's API token page: `Token <key>`.",
        }
