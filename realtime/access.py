"""May this user still be in this room? The per-kind checks behind the ``recheck`` room operation.

Each kind of room a client can enter through an event is checked the way its join
handler checks it (``realtime.handlers``): project rooms by ``can_see_project``,
progress rooms by the operation's starter (or staff), chat rooms by participation.
Sync: these read the database (call them through ``sync_to_async``).
"""

import logging
from collections.abc import Iterable
from uuid import UUID

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from chat import selectors as chat_selectors
from chat.models import ChatSession
from projects import selectors as project_selectors

from . import progress, rooms

log = logging.getLogger(__name__)

CHAT_PREFIX = rooms.chat("")
PROGRESS_KINDS = ("project", "crawl")


def _uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


def may_stay(user: AbstractBaseUser, room: str) -> bool:
    """Whether ``user`` may be in ``room`` now; rooms of an unknown kind fail closed (False)."""
    if room == rooms.PROJECT_LIST or rooms.is_internal(room):
        return True  # the list itself is per user (project_list_of); internal rooms address connections
    if not user.is_active:
        return False
    if room.startswith(CHAT_PREFIX):
        session_id = _uuid(room.removeprefix(CHAT_PREFIX))
        if session_id is None:
            return False
        try:
            chat_selectors.session_for(user=user, session_id=session_id)
        except ChatSession.DoesNotExist:
            return False
        return True
    room_id = _uuid(room)
    if room_id is None:
        log.warning("recheck: room %r is of no known kind: leaving it", room)
        return False
    # Project and progress rooms are both spelled as a bare UUID: either grants the room.
    if project_selectors.can_see_project(user=user, project_id=room_id):
        return True
    for kind in PROGRESS_KINDS:
        operation = progress.find(kind, str(room_id))
        if operation is not None and operation.may_watch(user):
            return True
    return False


def rooms_to_leave(*, user_id: int, candidates: Iterable[str]) -> list[str]:
    """Of ``candidates`` (rooms the user's connections are in), those they may no longer be in."""
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        return [room for room in candidates if not rooms.is_internal(room)]
    return [room for room in candidates if not may_stay(user, room)]
