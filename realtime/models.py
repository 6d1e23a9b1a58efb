"""API tokens: how scripts, agents and non-browser clients authenticate."""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


def hash_token(raw: str) -> str:
    """The stored form of a raw token.

    Any string hashes: a lone surrogate (valid in JSON, e.g. a handshake's ``"\\ud800"``) is not
    UTF-8 and would raise; passed through, it hashes to bytes no issued (ASCII) token has, and is
    refused as an invalid token like any other unknown one.
    """
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


class ApiToken(models.Model):
    """A bearer token. Only its hash is stored; revoking is deleting."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=8, editable=False, help_text="First characters, to recognise a token.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, *, user, name: str = "") -> tuple["ApiToken", str]:  # type: ignore[no-untyped-def]
        """Create a token for ``user``; returns the row and the raw token (shown once)."""
        raw = secrets.token_urlsafe(32)
        token = cls.objects.create(user=user, name=name, prefix=raw[:8], key_hash=hash_token(raw))
        return token, raw


class LostBroadcast(models.Model):
    """A broadcast to a recoverable room that a process gave up delivering (its server or Redis out of reach).

    Written by the process that lost it, in the database every server shares, so the loss is repaired even
    if that process exits at once: a server finds the row (``lost``), starts a new history for the room, and
    tells its watchers to resync. An empty ``room``: too many rooms to name, all of them.
    """

    room = models.CharField(max_length=200, blank=True, default="")
    lost_at = models.DateTimeField(auto_now_add=True)
    # Not before: a server that lost it repairs it itself when Redis is back and deletes the row; others wait.
    repair_after = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pk"]
