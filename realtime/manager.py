"""Client managers of a serving process: in memory, or python-socketio's Redis manager between nodes.

The Redis manager is python-socketio's own ``AsyncRedisManager``; this subclass
only adds what a fleet needs: room operations (see ``ops``) on every node, an
outage logged once rather than per message, and a reconnect backoff capped at a
few seconds so cross-node delivery resumes promptly.
"""

import asyncio
import logging
from typing import Any

import socketio
from django.conf import settings
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from . import direct_write, ops

log = logging.getLogger(__name__)
MAX_BACKOFF = 5.0


class FastManager(socketio.AsyncManager):
    """python-socketio's manager with a broadcast that costs one encoding, not one task per recipient.

    The stock ``emit`` creates an asyncio task (and awaits it) for every recipient. Here the
    packet is encoded once and, for each connection, either written straight to its websocket
    (uvicorn, see ``direct_write``) or put on its outgoing queue (what engine.io's ``socket.send``
    does, minus the task), whose writer sends it as usual. Emits with an acknowledgement
    callback (one recipient) take the stock path.
    """

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None, skip_sid: Any = None, callback: Any = None,
                   to: Any = None, **kwargs: Any) -> None:  # fmt: skip
        if callback is not None:
            return await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, to=to, **kwargs)
        room = to or room
        if namespace not in self.rooms:
            return None
        args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *args]).encode()
        packets = [eio_packet.Packet(eio_packet.MESSAGE, p) for p in (encoded if isinstance(encoded, list) else [encoded])]
        skip = set(skip_sid) if isinstance(skip_sid, list) else {skip_sid}
        sockets = self.server.eio.sockets
        frame: bytes | None = None
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            socket = sockets.get(eio_sid)
            if socket is None or socket.closed:
                continue
            protocol = direct_write.protocol_for(socket) if len(packets) == 1 else None
            if protocol is not None:  # a websocket-born connection: always direct, so always in order
                frame = frame or direct_write.text_frame(packets[0].encode())
                direct_write.send(protocol, frame)
                continue
            for pkt in packets:  # engine.io packets cache their encoding: shared by every recipient
                socket.queue.put_nowait(pkt)
        return None

    async def publish_op(self, op: dict[str, Any]) -> None:
        """Apply a room operation (see ``ops``) on every node: here, the only one."""
        await ops.apply(self.server, op)


class RedisManager(socketio.AsyncRedisManager, FastManager):
    def __init__(self, url: str, channel: str) -> None:
        super().__init__(url, channel=channel)
        self._outage = False

    async def publish_op(self, op: dict[str, Any]) -> None:
        """Apply a room operation here and on every other node."""
        await super().publish_op(op)
        await self._publish(
            {"method": "emit", "event": ops.OP_EVENT, "data": [op], "namespace": "/", "room": None, "host_id": self.host_id}
        )

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        if message.get("event") == ops.OP_EVENT:
            await ops.apply(self.server, message["data"][0])
        else:
            await super()._handle_emit(message)

    def _down(self, error: Exception) -> None:
        if not self._outage:
            self._outage = True
            log.error("Redis unreachable (%s): serving local clients only until it is back", error)

    def _up(self) -> None:
        if self._outage:
            self._outage = False
            log.warning("Redis is back: cross-node delivery resumed")

    async def _publish(self, data: Any) -> Any:
        # One attempt: local clients were already served; a lost cross-node message
        # during an outage is logged once, not once per message.
        try:
            if not self.connected:
                self._redis_connect()
            result = await self.redis.publish(self.channel, self.json.dumps(data))
        except Exception as error:
            self.connected = False
            self._down(error)
            return None
        self._up()
        return result

    async def _redis_listen_with_retries(self):  # type: ignore[no-untyped-def]
        backoff = 0.1
        while True:
            try:
                self._redis_connect()
                await self.pubsub.subscribe(self.channel)
                self._up()
                backoff = 0.1
                async for message in self.pubsub.listen():
                    yield message
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.connected = False
                self._down(error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)


def build_manager() -> socketio.AsyncManager:
    """Redis between nodes when ``REDIS_URL`` is set, else in memory (one process)."""
    if settings.REDIS_URL:
        return RedisManager(settings.REDIS_URL, channel=settings.REALTIME_REDIS_CHANNEL)
    return FastManager()
