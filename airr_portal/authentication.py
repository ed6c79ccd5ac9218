"""A person's API token on the API: `Authorization: Token <key>` (or `Bearer <key>`), looked up by its hash."""

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from .models import ApiToken
from .services import hash_api_key


class ApiTokenAuthentication(authentication.BaseAuthentication):
    keywords = ("Token", "Bearer")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode(errors="replace") not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send the API token as 'Authorization: Token <key>'")
        key = header[1].decode(errors="replace")
        token = ApiToken.objects.select_related("user").filter(key_hash=hash_api_key(key)).first()
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("The API token is not valid or has been replaced")
        # At most one write a minute per token, so a busy script does not rewrite the row on every request.
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request):
        return 'Token realm="api"'


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
