"""Who is connecting: a Django session cookie (browsers) or ``auth: {token}`` (everything else)."""

from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest

from .tokens import token_owner


class Refused(Exception):
    """The handshake carries no acceptable credentials; the message says why."""


@dataclass(frozen=True)
class Identity:
    user_id: int
    username: str
    token_id: int | None  # None for a session cookie


def _session_user(cookie_header: str):  # type: ignore[no-untyped-def]
    try:
        cookies = SimpleCookie(cookie_header)
    except CookieError:
        raise Refused("malformed cookie header") from None
    morsel = cookies.get(settings.SESSION_COOKIE_NAME)
    if morsel is None:
        return None
    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(morsel.value)
    # get_user also checks the session's auth hash, so a password change logs sockets out too.
    user = get_user(request)
    return user if user.is_authenticated and user.is_active else None


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
    user = _session_user(environ.get("HTTP_COOKIE", ""))
    if user is None:
        raise Refused("authentication required: log in, or pass auth: {token}")
    return Identity(user.pk, user.get_username(), None)
