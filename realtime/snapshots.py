"""Snapshots: what a joiner is sent after entering a room, cut into frames of bounded size.

A snapshot is one event (``Snapshot``) or a list of items sent in frames
``{**fields, key: [...], part, parts, snapshot}`` (``Frames``): a large list
never becomes one huge message, and a slow reader is waited for between frames.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from . import bus, limits

SNAPSHOT_DRAIN_WAIT = 30.0  # seconds a snapshot waits, between two frames, for a slow reader to catch up


@dataclass(frozen=True)
class Snapshot:
    """One event with its data, sent as it is."""

    event: str
    data: Any


@dataclass(frozen=True)
class Frames:
    """``items`` sent as ``event`` in frames of about ``REALTIME_SNAPSHOT_FRAME_BYTES``.

    Each frame is ``{**fields, key: [...], part, parts, snapshot}``.
    """

    event: str
    key: str
    items: list[Any]
    fields: dict[str, Any] = field(default_factory=dict)

    def frames(self) -> list[dict[str, Any]]:
        return snapshot_frames(self.fields, self.key, self.items)


def snapshot_frames(fields: dict[str, Any], key: str, items: list[Any], *, limit: int | None = None) -> list[dict[str, Any]]:
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
    chunks: list[list[Any]] = [[]]
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


async def emit_frames(event: str, frames: list[dict[str, Any]], *, room: str) -> None:
    """A snapshot's frames to a room, in order; other work runs between them (each frame is encoded on the loop)."""
    for index, frame in enumerate(frames):
        if index:
            await asyncio.sleep(0)
        await bus.emit(event, frame, room=room)


async def send_frames(
    event: str,
    frames: list[dict[str, Any]],
    *,
    emit: Callable[..., Any],
    unsent: Callable[[], int | None],
    still_connected: Callable[[], None],
) -> None:
    """A snapshot's frames to one connection, in order; other work runs between them.

    Backpressure: a connection may hold at most REALTIME_MAX_BUFFERED_BYTES unsent, or it is
    dropped. A snapshot larger than that, to a slow reader (or a long-polling one between polls),
    would be dropped, reconnect and ask for it again, forever; so the next frame waits until the
    connection has read enough to take it (at most SNAPSHOT_DRAIN_WAIT, then it goes anyway).
    ``unsent()`` is None once the connection is gone; ``still_connected()`` raises then.
    """
    bound = settings.REALTIME_MAX_BUFFERED_BYTES
    room = max(bound - 2 * settings.REALTIME_SNAPSHOT_FRAME_BYTES, bound // 2)
    for index, frame in enumerate(frames):
        still_connected()
        if index:
            await asyncio.sleep(0)
            deadline = time.monotonic() + SNAPSHOT_DRAIN_WAIT
            # Polled: neither engine.io's queue nor uvicorn's transport tells when it has drained.
            while (waiting := unsent()) is not None and waiting > room and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            still_connected()  # gone: the rest would go nowhere
        await emit(event, frame)


def unsent_bytes(server: Any, sid: str, namespace: str = "/") -> int | None:
    """Bytes sent to this connection that it has not read yet (its queue and its transport); None once it is gone."""
    eio_sid = server.manager.eio_sid_from_sid(sid, namespace)
    socket = server.eio.sockets.get(eio_sid) if eio_sid else None
    if socket is None or socket.closed:
        return None
    return limits.unsent(socket)
