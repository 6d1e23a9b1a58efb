"""Optional Channels interop: Channels-style code keeps working beside Socket.IO.

``async_to_sync(get_channel_layer().group_send)(room, {"type": "realtime.emit",
"event": ..., "data": ...})`` reaches the Socket.IO room of that name. Each server
process adds one channel per room it has members in to the group of that name,
and re-emits what arrives to its own members only (the other nodes do the same
for theirs), so there is no second broadcast bus. Active when ``CHANNEL_LAYERS``
is configured (``CHANNEL_LAYER_REDIS_URL``). Not for recoverable rooms (kinds with a
snapshot): their broadcasts must be numbered once, so they go through ``realtime.emit``.
"""

import asyncio
import logging
import re
from typing import Any

import socketio

from . import history

log = logging.getLogger(__name__)
GROUP_NAME = re.compile(r"^[A-Za-z0-9._-]{1,99}$")  # what Channels accepts as a group name
SWEEP_SECONDS = 60


class ChannelsBridge:
    def __init__(self, server: socketio.AsyncServer, layer: Any) -> None:
        self.server, self.layer = server, layer
        self.rooms: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self.sweeper: asyncio.Task[None] | None = None

    async def room_entered(self, room: str) -> None:
        """Make sure the group named ``room`` reaches this process."""
        if room in self.rooms or not GROUP_NAME.match(room):
            return
        channel = await self.layer.new_channel()
        if room in self.rooms:  # another join got there while we awaited
            return
        self.rooms[room] = (channel, asyncio.create_task(self._pump(room, channel)))
        await self.layer.group_add(room, channel)
        if self.sweeper is None:
            self.sweeper = asyncio.create_task(self._sweep())

    async def _pump(self, room: str, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("channel layer receive failed for %s", room)
                await asyncio.sleep(1)
                continue
            if message.get("type") == "realtime.emit" and isinstance(message.get("event"), str):
                if history.recoverable(room):
                    # Every node gets its own copy: none could number it once for all (``history``), and an
                    # unnumbered broadcast would be missing from what a reconnecting client is sent.
                    log.error("Channels group_send to %r refused: a recoverable room; use realtime.emit", room)
                    continue
                # ignore_queue: this node's members only; other nodes pump their own.
                await self.server.emit(message["event"], message.get("data"), room=room, ignore_queue=True)

    async def _sweep(self) -> None:
        """Leave the groups of rooms that no longer have members here."""
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            for room in [r for r in self.rooms if not any(True for _ in self.server.manager.get_participants("/", r))]:
                channel, task = self.rooms.pop(room)
                task.cancel()
                await self.layer.group_discard(room, channel)

    async def close(self) -> None:
        for _, task in self.rooms.values():
            task.cancel()
        if self.sweeper:
            self.sweeper.cancel()
        self.rooms.clear()


def build_bridge(server: socketio.AsyncServer) -> ChannelsBridge | None:
    from django.conf import settings

    if not getattr(settings, "CHANNEL_LAYERS", None):
        return None
    from channels.layers import get_channel_layer

    return ChannelsBridge(server, get_channel_layer())
