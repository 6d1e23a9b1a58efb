"""The process's one Socket.IO server (default namespace) and its connection lifecycle."""

import logging
from typing import Any

import engineio
import socketio
from asgiref.sync import sync_to_async
from django.conf import settings
from socketio import packet as sio_packet

from . import bus, direct_write, handlers, lifecycle, limits, rooms  # noqa: F401  (handlers registers the client events)
from .auth import Refused, authenticate
from .channels_bridge import build_bridge
from .events import Dispatcher, Reject
from .manager import build_manager

log = logging.getLogger(__name__)
BINARY_PACKETS = (str(sio_packet.BINARY_EVENT), str(sio_packet.BINARY_ACK))


def _refuse(sid: str, reason: str) -> socketio.exceptions.ConnectionRefusedError:
    log.warning("refused connection %s: %s", sid, reason)
    return socketio.exceptions.ConnectionRefusedError(reason)


class Realtime(Dispatcher):
    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Refuse anonymous or bad credentials with a reason; remember who this is."""
        address = limits.client_address(environ)
        if limits.auth_failures.blocked(address):  # checked before anything touches the database
            raise _refuse(sid, "too many failed attempts: try again in a minute") from None
        try:
            identity = await sync_to_async(authenticate)(environ, auth)
        except Refused as refusal:
            limits.auth_failures.record(address)
            raise _refuse(sid, str(refusal)) from None
        except Exception:
            log.exception("authentication failed")
            raise socketio.exceptions.ConnectionRefusedError("server error during authentication") from None
        if not limits.connections.add(identity.user_id, sid):
            limit = settings.REALTIME_MAX_CONNECTIONS_PER_USER
            raise _refuse(sid, f"too many connections for this user (limit {limit}): close one first") from None
        try:
            await self.save_session(sid, {"user_id": identity.user_id, "username": identity.username})
            await self.enter_room(sid, rooms.user(identity.user_id))
            if identity.token_id is not None:
                await self.enter_room(sid, rooms.token(identity.token_id))
            if identity.session_key is not None:  # logout and password changes close these (revocation)
                await self.enter_room(sid, rooms.session(identity.session_key))
                await self.enter_room(sid, rooms.user_cookies(identity.user_id))
            socket = self.server.eio.sockets.get(self.server.manager.eio_sid_from_sid(sid, self.namespace))
            if socket is not None:
                socket.realtime_sid = sid  # logs name connections by their Socket.IO sid
        except BaseException:
            limits.connections.remove(sid)
            raise

    async def on_disconnect(self, sid: str, reason: str) -> None:
        limits.connections.remove(sid)  # Socket.IO removes the connection from its rooms

    async def enter_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        """Enter ``room``; a client room beyond REALTIME_MAX_ROOMS_PER_CONNECTION is refused (``Reject``)."""
        if not rooms.is_internal(room):
            self._claim_room(sid, await self.get_session(sid), room)
        await super().enter_room(sid, room, namespace=namespace)
        if bridge is not None and not rooms.is_internal(room):
            await bridge.room_entered(room)

    async def leave_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        await super().leave_room(sid, room, namespace=namespace)
        if not rooms.is_internal(room):
            try:
                (await self.get_session(sid)).get("_rooms", set()).discard(room)
            except KeyError:  # the connection is gone
                pass

    def _claim_room(self, sid: str, session: dict[str, Any], room: str) -> None:
        # No await in here: the check and the claim are one step, even for concurrent joins.
        joined: set[str] = session.setdefault("_rooms", set())
        limit = settings.REALTIME_MAX_ROOMS_PER_CONNECTION
        if room not in joined and len(joined) >= limit:
            # Rooms can also be left without this namespace (revocations go through the server):
            # recount against the real membership, which costs O(limit) and only at the cap.
            members = self.server.manager.rooms.get(self.namespace, {})
            joined.intersection_update([r for r in joined if sid in members.get(r, ())])
            if len(joined) >= limit:
                raise Reject(f"too many rooms (limit {limit}): leave one first")
        joined.add(room)


class EngineServer(engineio.AsyncServer):
    """engine.io with a byte-counted send queue per connection (see ``limits.OutgoingQueue``)."""

    def create_queue(self, *args: Any, **kwargs: Any) -> Any:
        return limits.OutgoingQueue() if not args and not kwargs else super().create_queue(*args, **kwargs)


class Server(socketio.AsyncServer):
    """python-socketio's server, refusing binary packets: nothing in this protocol uses them.

    The library would keep every attachment a packet announces until the last one arrived: a
    client announcing many and streaming megabytes made the server hold them all.
    """

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return EngineServer

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> None:
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and isinstance(socket.queue, limits.OutgoingQueue):
            socket.queue.socket = socket  # from now on the queue can drop its connection
        await super()._handle_eio_connect(eio_sid, environ)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        socket = self.eio.sockets.get(eio_sid)
        if socket is None or socket.closed or getattr(socket, "realtime_dropped", False):
            return  # what was already read from a dropped connection is ignored
        if isinstance(data, bytes | bytearray) or data[:1] in BINARY_PACKETS:
            kind = "binary engine.io message" if isinstance(data, bytes | bytearray) else "binary Socket.IO packet"
            limits.drop(socket, f"{kind} refused (this protocol uses none)")
            return
        await super()._handle_eio_message(eio_sid, data)


def build_server() -> socketio.AsyncServer:
    direct_write.install()
    server = Server(
        async_mode="asgi",
        # None = same origin only (engine.io compares Origin with Host); never "*" by default.
        cors_allowed_origins=settings.REALTIME_CORS_ORIGINS or None,
        ping_interval=settings.REALTIME_PING_INTERVAL,
        ping_timeout=settings.REALTIME_PING_TIMEOUT,
        max_http_buffer_size=settings.REALTIME_MAX_MESSAGE_BYTES,
        logger=False,
        engineio_logger=False,
        client_manager=build_manager(),
    )
    server.register_namespace(Realtime("/"))
    return server


sio = build_server()
bridge = build_bridge(sio)


async def on_startup() -> None:
    """ASGI lifespan startup: this process now delivers events itself."""
    bus.attach(sio)
    for hook in lifecycle.startup_hooks:
        await hook()
    if settings.REALTIME_GC_TUNING:
        lifecycle.tune_gc()


async def on_shutdown() -> None:
    bus.detach()
    if bridge is not None:
        await bridge.close()
    await sio.shutdown()
