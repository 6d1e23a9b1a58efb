"""The process's one Socket.IO server (default namespace) and its connection lifecycle."""

import asyncio
import logging
from typing import Any

import engineio
import socketio
from channels.db import database_sync_to_async
from django.conf import settings
from socketio import packet as sio_packet

from . import bus, direct_write, lifecycle, limits, lost, rooms
from .auth import Identity, Refused, authenticate
from .channels_bridge import build_bridge
from .dispatcher import Dispatcher, Reject
from .eio import EngineServer, slim_environ
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
            identity = await self._authenticate(environ, auth)
        except Refused as refusal:
            limits.auth_failures.record(address)
            raise _refuse(sid, str(refusal)) from None
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
            await self._check_again(sid, environ, auth, identity)
            socket = self.server.eio.sockets.get(self.server.manager.eio_sid_from_sid(sid, self.namespace))
            if socket is None or socket.closed:
                raise KeyError("Session is disconnected")  # closed during the second check
            socket.realtime_sid = sid  # logs name connections by their Socket.IO sid
        except KeyError:
            # The client closed the connection while it was authenticating (its session is gone).
            # python-socketio skipped the disconnect handler (the connection was not connected yet);
            # a refusal makes it forget the connection, and the user's count is given back here.
            limits.connections.remove(sid)
            raise _refuse(sid, "connection closed") from None
        except BaseException:
            limits.connections.remove(sid)
            raise

    async def _authenticate(self, environ: dict[str, Any], auth: Any) -> Identity:
        """``authenticate`` off the event loop; ``Refused`` passes through, any other failure is a refusal."""
        try:
            return await database_sync_to_async(authenticate)(environ, auth)
        except Refused:
            raise
        except Exception:
            log.exception("authentication failed")
            raise socketio.exceptions.ConnectionRefusedError("server error during authentication") from None

    async def _check_again(self, sid: str, environ: dict[str, Any], auth: Any, identity: Identity) -> None:
        """Refuse a connection whose credentials were revoked while it was being set up.

        A revocation (token deleted, logout, password change, deactivation) closes the members of
        the connection's rooms: one committed before this connection entered them closed nothing
        here. So, as ``join_project`` does: check, enter, check again. One committed after the rooms
        were entered reaches this connection while it is still connecting (``Server.disconnect``).
        """
        try:
            again = await self._authenticate(environ, auth)
        except Refused as refusal:  # not a failed attempt of this address: the credentials were good a moment ago
            raise _refuse(sid, str(refusal)) from None
        if again.user_id != identity.user_id:
            raise _refuse(sid, "credentials changed while connecting")
        if self.server.revoked_while_connecting(sid):
            raise _refuse(sid, "access revoked while connecting")

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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # engine.io sids of connections told to disconnect while still connecting; an entry lives
        # only as long as that connection's connect handling (``_handle_connect``).
        self._revoked_connecting: set[str] = set()

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return EngineServer

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        address = limits.client_address(environ)
        if limits.handshakes.busy():
            # No log line per refusal: in a storm there are thousands, and each client simply retries.
            return {"detail": f"server busy: {settings.REALTIME_MAX_PENDING} connections are being set up, retry shortly"}
        if not limits.handshakes.add(eio_sid, address, self._connect_timed_out):
            limit = settings.REALTIME_MAX_PENDING_PER_ADDRESS
            reason = f"too many connections not yet authenticated from this address (limit {limit})"
            log.warning("refused handshake from %s: %s", address, reason)
            return {"detail": reason}  # engine.io answers 401 with this body and forgets the socket
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and isinstance(socket.queue, limits.OutgoingQueue):
            socket.queue.socket = socket  # from now on the queue can drop its connection
        await super()._handle_eio_connect(eio_sid, environ)
        return None

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        limits.handshakes.remove(eio_sid)
        await super()._handle_eio_disconnect(eio_sid, reason)

    def _connect_timed_out(self, eio_sid: str) -> None:
        """REALTIME_CONNECT_TIMEOUT after its handshake, the connection has not connected the namespace: closed."""
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and not socket.closed:
            limits.drop(socket, f"no Socket.IO connect within {settings.REALTIME_CONNECT_TIMEOUT:g} s")

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        """python-socketio's connect handling, then: is the connection still wanted now that it is connected?

        python-socketio ignores a disconnect of a connection that is still connecting, and does not
        notice its engine.io connection closing meanwhile: either would leave it connected.
        """
        namespace = namespace or "/"
        if self.manager.sid_from_eio_sid(eio_sid, namespace) is not None:
            # Connected or connecting already: python-socketio refuses this one ("Unable to connect").
            return await super()._handle_connect(eio_sid, namespace, data)
        try:
            await super()._handle_connect(eio_sid, namespace, data)
        finally:
            revoked = eio_sid in self._revoked_connecting
            self._revoked_connecting.discard(eio_sid)
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not self.manager.is_connected(sid, namespace):
            return None  # refused: python-socketio has forgotten it
        socket = self.eio.sockets.get(eio_sid)
        if socket is None or socket.closed or revoked:
            log.warning("disconnected %s: %s while connecting", sid, "access revoked" if revoked else "connection closed")
            await self.disconnect(sid, namespace=namespace, ignore_queue=True)
        else:
            limits.handshakes.remove(eio_sid)  # connected: no longer pending, no timeout
            environ = self.environ.get(eio_sid)
            if environ is not None:
                slim_environ(environ)  # authenticated: the request's headers are no longer read
        return None

    async def disconnect(self, sid: str, namespace: str | None = None, ignore_queue: bool = False) -> None:
        """python-socketio's disconnect; a connection still connecting is remembered and refused (see ``_handle_connect``)."""
        namespace = namespace or "/"
        if sid in self.manager.pending_connect.get(namespace, ()):
            eio_sid = self.manager.eio_sid_from_sid(sid, namespace)
            if eio_sid is not None:
                self._revoked_connecting.add(eio_sid)
        await super().disconnect(sid, namespace=namespace, ignore_queue=ignore_queue)

    def revoked_while_connecting(self, sid: str, namespace: str = "/") -> bool:
        """Whether a disconnect reached ``sid`` while it was still connecting."""
        return self.manager.eio_sid_from_sid(sid, namespace) in self._revoked_connecting

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
        try:
            await hook()
        except Exception:
            # engine.io's lifespan handler swallows the exception: say here which hook failed, and why.
            log.exception("startup hook %s.%s failed: the server does not start", hook.__module__, hook.__qualname__)
            raise
    if settings.REALTIME_GC_TUNING:
        lifecycle.tune_gc()
    global _lost_watch
    _lost_watch = asyncio.get_running_loop().create_task(lost.watch())


_lost_watch: asyncio.Task[None] | None = None  # repairs broadcasts other processes lost (``lost``)


async def on_shutdown() -> None:
    """ASGI lifespan shutdown: what was sent on commit goes out (or is recorded as lost) before this process stops delivering."""
    if _lost_watch is not None:
        _lost_watch.cancel()
    await bus.finish_sends(settings.REALTIME_RESPONSE_WAIT_SECONDS)
    bus.detach()
    if bridge is not None:
        await bridge.close()
    await sio.shutdown()
