"""Room operations that travel on the bus beside emits: "take these connections out of a room", "close them",
"check their rooms against the database".

They address connections by a room they are in (every connection is in its
user's room, and its token's), so a process that knows no session ids can still
revoke access on every node. An operation without such a room would address
every connection (python-socketio reads room ``None`` as "everyone"), so it is
refused wherever a message is accepted and ignored, with an error logged, where
one is applied.
"""

import logging
from collections import defaultdict
from typing import Any

import socketio
from channels.db import database_sync_to_async

from . import limits, rooms

log = logging.getLogger(__name__)

# A reserved event name: bus messages carrying it are operations, never sent to a client.
OP_EVENT = "realtime:op"
KINDS = ("leave", "disconnect", "recheck")
RESYNC_EVENT = "realtime:resync"
# Set in a connection's session by a join that named ``since`` (even empty): it follows the recovery protocol.
RECOVERS = "recovers"


def leave(*, members_of: str, room: str) -> dict[str, Any]:
    return {"op": "leave", "members_of": members_of, "room": room}


def disconnect(*, members_of: str) -> dict[str, Any]:
    return {"op": "disconnect", "members_of": members_of}


def recheck(*, members_of: str) -> dict[str, Any]:
    """Each connection in ``members_of`` leaves the rooms its room kinds no longer allow it (``room_kinds.may_stay``)."""
    return {"op": "recheck", "members_of": members_of}


def resync(room: str | None = None) -> dict[str, Any]:
    """The watchers of ``room`` (None: of every recoverable room) may have missed broadcasts: they reload (see ``apply``)."""
    return {"op": "resync"} if room is None else {"op": "resync", "room": room}


def _is_room(value: object) -> bool:
    return isinstance(value, str) and value != ""


def problem(message: object) -> str | None:
    """Why this bus message (an emit or an operation) must not be carried out, or None when it is well-formed."""
    if not isinstance(message, dict):
        return "a message must be an object"
    kind = message.get("op")
    if kind == "emit":
        if not isinstance(message.get("event"), str) or not message["event"]:
            return "emit needs an event name"
        if message["event"] == OP_EVENT:
            return f"{OP_EVENT!r} is reserved"
        if "data" not in message:
            return "emit needs data"
        if not _is_room(message.get("room")):
            return "emit needs a room (a message to everyone is refused)"
        return None
    if kind == "resync":
        return None if message.get("room") is None or _is_room(message.get("room")) else "resync's room must be a room name"
    if kind not in KINDS:
        return f"unknown op {kind!r}"
    if not _is_room(message.get("members_of")):
        return f"{kind} needs members_of, a room name (an operation on everyone is refused)"
    if kind == "leave" and not _is_room(message.get("room")):
        return "leave needs a room"
    return None


def describe(op: dict[str, Any]) -> str:
    """One line naming an operation, for logs of what was lost."""
    if op.get("op") == "leave":
        return f"leave {op.get('room')!r} for members of {op.get('members_of')!r}"
    if op.get("op") == "resync":
        return f"resync the watchers of {op.get('room') or 'every room'!r}"
    return f"{op.get('op')} members of {op.get('members_of')!r}"


async def apply(server: socketio.AsyncServer, op: Any) -> None:
    """Carry out ``op`` on this node's own connections; a malformed one does nothing and is logged."""
    reason = problem(op)
    if reason is not None or op["op"] == "emit":
        log.error("ignored room operation %.200r: %s", op, reason or "an emit is not an operation")
        return
    if op["op"] == "resync":
        await _resync(server, op.get("room"))
        return
    members = [sid for sid, _ in server.manager.get_participants("/", op["members_of"])]
    if op["op"] == "leave":
        for sid in members:
            await server.leave_room(sid, op["room"])
    elif op["op"] == "disconnect":
        for sid in members:
            await server.disconnect(sid, ignore_queue=True)
    elif members:
        await _recheck(server, members)


async def _resync(server: socketio.AsyncServer, only: str | None) -> None:
    """Tell this node's watchers of ``only`` (None: of every recoverable room) to reload; close those that would not understand."""
    from . import history

    rooms = server.manager.rooms.get("/", {})
    watched = [only] if only is not None else [room for room in rooms if history.recoverable(room)]
    watchers = {sid for room in watched for sid in rooms.get(room, {})}
    told = closed = 0
    for sid in watchers:
        try:
            session = await server.get_session(sid, namespace="/")
        except KeyError:
            continue  # gone meanwhile
        if isinstance(session, dict) and session.get(RECOVERS):
            await server.emit(RESYNC_EVENT, {}, to=sid, ignore_queue=True)
            told += 1
        else:
            # Its transport is closed, not its Socket.IO session: socket.io clients reconnect by themselves after a
            # "transport close" (never after a server disconnect), then re-join and reload their snapshots.
            socket = server.eio.sockets.get(server.manager.eio_sid_from_sid(sid, "/"))
            if socket is not None:
                limits.drop(socket, "may have missed broadcasts: closed so that it re-joins")  # the transport, for real
                closed += 1
    if watchers:
        log.warning("broadcasts may have been missed: %d watcher(s) told to resync, %d disconnected to re-join", told, closed)


async def _recheck(server: socketio.AsyncServer, sids: list[str]) -> None:
    from . import room_kinds  # imported late: bus (hence this module) loads before the dispatcher

    by_user: dict[int, dict[str, list[str]]] = defaultdict(dict)
    for sid in sids:
        try:
            session = await server.get_session(sid, namespace="/")
        except KeyError:
            continue  # gone meanwhile
        watched = [r for r in server.manager.get_rooms(sid, "/") if isinstance(r, str) and r != sid and not rooms.is_internal(r)]
        user_id = session.get("user_id") if isinstance(session, dict) else None
        if watched and isinstance(user_id, int):
            by_user[user_id][sid] = watched
    for user_id, watching in by_user.items():
        candidates = {room for watched in watching.values() for room in watched}
        # The database is read off the event loop; the rooms are left on it.
        lost = set(await database_sync_to_async(room_kinds.rooms_to_leave)(user_id=user_id, candidates=sorted(candidates)))
        for sid, watched in watching.items():
            for room in watched:
                if room in lost:
                    await server.leave_room(sid, room)
        if lost:
            log.info("user %s lost access: left %d room(s)", user_id, len(lost))
