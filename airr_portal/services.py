"""Writes on people's own credentials: making and replacing their API token."""

import hashlib
import secrets

from django.db import transaction

from .models import ApiToken, User

API_TOKEN_PREFIX = "airr_api_"


def hash_key(key: str) -> str:
    """What is stored of a token's key (a person's API token, a cluster's ingest token): its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()


def replace_api_token(*, user: User) -> str:
    """Make a new API token for the user, revoking any earlier one; returns the key, which is never stored."""
    key = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        ApiToken.objects.filter(user=user).delete()
        ApiToken.objects.create(user=user, prefix=key[: len(API_TOKEN_PREFIX) + 4], key_hash=hash_key(key))
    return key
