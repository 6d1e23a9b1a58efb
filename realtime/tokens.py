"""Resolving raw bearer tokens to users."""

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from .models import ApiToken, hash_token

MAX_TOKEN_LENGTH = 200


def token_owner(raw: str) -> tuple[AbstractBaseUser, int] | None:
    """The active user and token id behind a raw token, or None."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_TOKEN_LENGTH:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_token(raw)).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user, token.pk
