"""Who is connecting: a Django session cookie (browsers) or ``auth: {token}`` (everything else)."""

from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest
from django.http.cookie import parse_cookie

from .tokens import token_owner


class Refused(Exception):
    """The handshake carries no acceptable credentials; the message says why."""


@dataclass(frozen=True)
class Identity:
    user_id: int
    username: str
    token_id: int | None  # None for a session cookie
    session_key: str | None = None  # the browser session's key; None for a token


def _session_user(cookie_header: str) -> tuple[Any, str] | None:
    # Parsed as Django parses it for pages: one malformed cookie (another site's, a tracker's)
    # is skipped, not a reason to refuse the session cookie after it.
    key = parse_cookie(cookie_header).get(settings.SESSION_COOKIE_NAME)
    if not key:
        return None
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(key)
    # get_user also checks the session's auth hash, so a password change logs sockets out too.
    user = get_user(request)
    if not (user.is_authenticated and user.is_active):
        return None
    return user, request.session.session_key


def authenticate(environ: dict[str, Any], auth: Any) -> Identity:
    """Resolve the handshake to an identity, or raise ``Refused`` with the reason (sync; ORM)."""
    if auth is not None and not isinstance(auth, dict):
        raise Refused("auth must be an object like {token: '...'}")
    if auth and "token" in auth:
        found = token_owner(auth["token"])
        if found is None:
            raise Refused("invalid token")
        user, token_id = found
        return Identity(user.pk, user.get_username(), token_id)
    found_session = _session_user(environ.get("HTTP_COOKIE", ""))
    if found_session is None:
        raise Refused("authentication required: log in, or pass auth: {token}")
    user, session_key = found_session
    return Identity(user.pk, user.get_username(), None, session_key)
