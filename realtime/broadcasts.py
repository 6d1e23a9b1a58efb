"""The async emit helpers: what each kind of change sends, and to which room.

Call them with ``await`` from async code, or from sync code through
``changes`` (on commit) or ``bus.submit``.
"""

from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from . import bus, rooms


async def broadcast_task_update(event: str, payload: dict[str, Any], *, project_id: UUID | str) -> None:
    """``task_created`` / ``task_updated`` (the task) or ``task_deleted`` ({task_id, project_id})."""
    await bus.emit(event, payload, room=rooms.project(project_id))


async def broadcast_project_update(lists: Mapping[int, list[dict[str, Any]]]) -> None:
    """``projects_update``: each user's list of visible projects, to that user's subscribed connections."""
    for user_id, projects in lists.items():
        await bus.emit("projects_update", {"projects": projects}, room=rooms.project_list_of(user_id))


async def broadcast_progress_update(progress_id: UUID | str, payload: dict[str, Any]) -> None:
    """``project_progress`` to the operation's progress room."""
    await bus.emit("project_progress", payload, room=rooms.progress(progress_id))


async def broadcast_crawl_progress(progress_id: UUID | str, payload: dict[str, Any], *, event: str = "crawl_progress") -> None:
    """``crawl_progress`` (or ``crawl:stopping`` / ``crawl:stopped``) to the crawl's progress room."""
    await bus.emit(event, payload, room=rooms.progress(progress_id))


async def broadcast_chat_message(session_id: UUID | str, payload: dict[str, Any]) -> None:
    """``chat_message`` (the stored message) to the session's room."""
    await bus.emit("chat_message", payload, room=rooms.chat(session_id))


async def revoke_rooms(pairs: Iterable[tuple[int, str]]) -> None:
    """Take each user's connections out of a room they may no longer be in."""
    for user_id, room in pairs:
        await bus.leave(members_of=rooms.user(user_id), room=room)


async def close_room(room: str) -> None:
    """Take every connection out of ``room`` (its subject is gone)."""
    await bus.leave(members_of=room, room=room)


async def disconnect_all(room: str) -> None:
    """Close every connection in ``room`` (a revoked token, a deactivated user)."""
    await bus.disconnect(members_of=room)
