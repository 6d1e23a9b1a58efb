"""Room operations that travel on the bus beside emits: "take these connections out of a room", "close them".

They address connections by a room they are in (every connection is in its
user's room, and its token's), so a process that knows no session ids can still
revoke access on every node.
"""

from typing import Any

import socketio

# A reserved event name: bus messages carrying it are operations, never sent to a client.
OP_EVENT = "realtime:op"


def leave(*, members_of: str, room: str) -> dict[str, Any]:
    return {"op": "leave", "members_of": members_of, "room": room}


def disconnect(*, members_of: str) -> dict[str, Any]:
    return {"op": "disconnect", "members_of": members_of}


async def apply(server: socketio.AsyncServer, op: dict[str, Any]) -> None:
    """Carry out ``op`` on this node's own connections."""
    members = [sid for sid, _ in server.manager.get_participants("/", op.get("members_of"))]
    if op.get("op") == "leave":
        for sid in members:
            await server.leave_room(sid, op["room"])
    elif op.get("op") == "disconnect":
        for sid in members:
            await server.disconnect(sid, ignore_queue=True)
