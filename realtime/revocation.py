"""Credentials revoked: connections closed, rooms re-checked. realtime's own signals, on commit.

A deleted token closes its connections; a deactivated or deleted user all of theirs;
a logout that browser session's; a new password the user's cookie connections (a
token is its own credential, revoked on its own); losing staff or superuser re-checks
every room of the user's connections against its room kind (``room_kinds.may_stay``).
"""

from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from . import rooms
from .broadcast import disconnect_on_commit, recheck_user_on_commit


def token_revoked(token_id: int) -> None:
    disconnect_on_commit(rooms.token(token_id))


def _only_login(update_fields: Iterable[str] | None) -> bool:
    return update_fields is not None and set(update_fields) <= {"last_login"}


def user_saving(user: AbstractBaseUser, *, update_fields: Iterable[str] | None) -> None:
    """Before a save: remember what the database holds, so ``user_saved`` sees a lost privilege or a new password."""
    if user._state.adding or user.pk is None or _only_login(update_fields):
        user.__dict__["_realtime_before"] = None
        return
    # Read, not remembered from loading: exact whatever the instance went through (refresh_from_db, a stale copy).
    before = type(user)._default_manager.filter(pk=user.pk).values("is_staff", "is_superuser", "password").first()
    user.__dict__["_realtime_before"] = before


def user_saved(user: AbstractBaseUser, *, update_fields: Iterable[str] | None) -> None:
    """A deactivated user is disconnected; a lost privilege re-checks their rooms; a new password closes their cookie connections."""
    before: dict[str, Any] | None = user.__dict__.pop("_realtime_before", None)
    if _only_login(update_fields):
        return  # a login: nothing they may see has changed
    if not user.is_active:
        disconnect_on_commit(rooms.user(user.pk))
        return
    if before is None:
        return
    if (before["is_staff"] and not user.is_staff) or (before["is_superuser"] and not user.is_superuser):
        recheck_user_on_commit(user.pk)
    if before["password"] != user.password:
        # Django already refuses those sessions (their auth hash no longer matches); close their sockets too.
        disconnect_on_commit(rooms.user_cookies(user.pk))


def user_deleted(user_id: int) -> None:
    """A deleted user's connections are closed (their token and sessions are gone with them)."""
    disconnect_on_commit(rooms.user(user_id))


def logged_out(session_key: str | None) -> None:
    """Logout closes the connections authenticated by that browser session (and only those)."""
    if session_key:
        disconnect_on_commit(rooms.session(session_key))
