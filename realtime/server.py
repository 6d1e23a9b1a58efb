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
from .eio import EngineServer
from .events import Dispatcher, Reject
from .manager import build_manager

log = logging.getLogger(__name__)
BINARY_PACKETS = (str(sio_packet.BINARY_EVENT), str(sio_packet.BINARY_ACK))
# What a client may send: binary packets are refused before decoding, CONNECT_ERROR is the server's.
CLIENT_PACKETS = (sio_packet.CONNECT, sio_packet.DISCONNECT, sio_packet.EVENT, sio_packet.ACK)


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
            try:
                session = await self.get_session(sid)
            except KeyError:  # the connection closed while its join was running
                raise Reject("the connection is closed") from None
            self._claim_room(sid, session, room)
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


class MalformedPacket(ValueError):
    """A client's Engine.IO message that is not a Socket.IO packet this server accepts."""


class Packet(sio_packet.Packet):
    """python-socketio's packet, refusing (``MalformedPacket``) what its server would trip over.

    python-socketio 5.18 decodes outside any error handling, then indexes ``data[0]`` of an event
    and raises for packet types a client must not send: all logged with a traceback. Decoded
    here inside a try and checked, such a packet ends its connection with one warning line.
    """

    def decode(self, encoded_packet: str) -> int:
        try:
            attachments = super().decode(encoded_packet)
        except Exception as error:  # noqa: BLE001  (ValueError, RecursionError...: not a packet, whatever the cause)
            raise MalformedPacket(f"{type(error).__name__}: {str(error)[:100]}") from None
        if self.packet_type not in CLIENT_PACKETS:
            raise MalformedPacket(f"unexpected packet type {str(self.packet_type)[:10]}")
        if self.packet_type == sio_packet.EVENT and not (isinstance(self.data, list) and self.data):
            raise MalformedPacket("an event needs a data array starting with its name")
        if self.packet_type == sio_packet.ACK and not isinstance(self.data, list):
            raise MalformedPacket("an acknowledgement needs a data array")
        return attachments


class Server(socketio.AsyncServer):
    """python-socketio's server, refusing binary packets (nothing in this protocol uses them) and malformed ones.

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
        if isinstance(data, bytes | bytearray):
            limits.drop(socket, "binary engine.io message refused (this protocol uses none)")
            return
        if not isinstance(data, str) or not data:
            # engine.io hands over what it decoded as JSON ('4{}', '4-1', '4true'); a Socket.IO packet
            # starts with its type digit and stays text. And an empty message ('4') is no packet at all.
            what = f"engine.io decoded the message as {type(data).__name__}" if data != "" else "an empty message"
            limits.drop(socket, f"malformed Socket.IO packet ({what})")
            return
        if data[:1] in BINARY_PACKETS:
            limits.drop(socket, "binary Socket.IO packet refused (this protocol uses none)")
            return
        try:
            await super()._handle_eio_message(eio_sid, data)
        except MalformedPacket as error:  # raised by ``Packet`` while decoding, before anything is dispatched
            limits.drop(socket, f"malformed Socket.IO packet ({error})")


def build_server() -> socketio.AsyncServer:
    direct_write.install()
    server = Server(
        async_mode="asgi",
        serializer=Packet,
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
    lifecycle.install_log_filters()
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
