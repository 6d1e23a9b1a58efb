"""Resolving raw bearer tokens to users."""

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from .models import ApiToken, hash_token

MAX_TOKEN_LENGTH = 200
# Stamping ``last_used_at`` is a write. To the minute is precise enough to tell a live token
# from a forgotten one, and spares nearly every API request a second write transaction.
LAST_USED_PRECISION = timedelta(minutes=1)


def token_owner(raw: str) -> tuple[AbstractBaseUser, int] | None:
    """The active user and token id behind a raw token, or None."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_TOKEN_LENGTH:
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_token(raw)).first()
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_PRECISION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user, token.pk
