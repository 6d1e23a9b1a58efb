"""The async emit helpers: what each kind of change sends, and to which room.

Call them with ``await`` from async code, or from sync code through
``changes`` (on commit) or ``bus.submit``.
"""

import asyncio
import json
import uuid
import weakref
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from django.conf import settings

from . import bus, rooms


def snapshot_frames(fields: dict[str, Any], key: str, items: list[dict[str, Any]], *, limit: int | None = None) -> list[dict[str, Any]]:
    """A snapshot as frames ``{**fields, key: [...], part, parts, snapshot}`` of at most about ``limit`` bytes of JSON each.

    ``limit`` defaults to ``REALTIME_SNAPSHOT_FRAME_BYTES``; one item larger than that goes alone.
    Always at least one frame (an empty list is a snapshot too); ``part`` counts 1..``parts``, and
    ``snapshot`` (a random id) tells the frames of one snapshot from those of another sent meanwhile.
    Sync and CPU-bound (it encodes every item to measure it): call it off the event loop.
    """
    limit = settings.REALTIME_SNAPSHOT_FRAME_BYTES if limit is None else limit
    snapshot = uuid.uuid4().hex[:16]
    # Measured as python-socketio encodes a packet (compact separators, ASCII escapes): what goes on the wire.
    envelope = len(_encode({**fields, key: [], "part": len(items) + 1, "parts": len(items) + 1, "snapshot": snapshot}))
    chunks: list[list[dict[str, Any]]] = [[]]
    size = envelope
    for item in items:
        item_size = len(_encode(item)) + 1  # and its comma
        if chunks[-1] and size + item_size > limit:
            chunks.append([])
            size = envelope
        chunks[-1].append(item)
        size += item_size
    parts = len(chunks)
    return [{**fields, key: chunk, "part": n, "parts": parts, "snapshot": snapshot} for n, chunk in enumerate(chunks, start=1)]


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def _emit_frames(event: str, frames: list[dict[str, Any]], *, room: str) -> None:
    """A snapshot's frames to a room, in order; other work runs between them (each frame is encoded on the loop)."""
    for index, frame in enumerate(frames):
        if index:
            await asyncio.sleep(0)
        await bus.emit(event, frame, room=room)


# projects_update broadcasts are framed in a worker thread; this lock (one per event loop, taken
# in submission order) keeps them in the order they were submitted, so an older list never lands last.
_project_update_order: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _ordered() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _project_update_order.get(loop)
    if lock is None:
        lock = _project_update_order[loop] = asyncio.Lock()
    return lock


async def broadcast_task_update(event: str, payload: dict[str, Any], *, project_id: UUID | str) -> None:
    """``task_created`` / ``task_updated`` (the task) or ``task_deleted`` ({task_id, project_id})."""
    await bus.emit(event, payload, room=rooms.project(project_id))


async def broadcast_project_update(lists: Mapping[int, list[dict[str, Any]]]) -> None:
    """``projects_update``: each user's list of visible projects, to that user's subscribed connections,
    in frames of at most about ``REALTIME_SNAPSHOT_FRAME_BYTES`` (``{projects, part, parts, snapshot}``)."""
    async with _ordered():
        framed = await asyncio.to_thread(_frame_lists, lists)
        for user_id, frames in framed.items():
            await _emit_frames("projects_update", frames, room=rooms.project_list_of(user_id))


def _frame_lists(lists: Mapping[int, list[dict[str, Any]]]) -> dict[int, list[dict[str, Any]]]:
    return {user_id: snapshot_frames({}, "projects", projects) for user_id, projects in lists.items()}


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
