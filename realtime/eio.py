"""The engine.io layer under the Socket.IO server: a byte-counted send queue, and client frames decoded inside a try.

python-engineio 4.15 decodes what a client sends outside any error handling: a frame that is not an
Engine.IO packet (empty, ``x``, ``b!``, ``4`` + JSON nested 10,000 deep, types 7-9) escapes a websocket's
handler as "Exception in ASGI application" or "Unknown receive error", and a long-polling POST that does
not decode (over 16 packets, invalid UTF-8, a bad packet) is logged with a traceback and answered 200.
Here every client frame is decoded first, inside a try, by engine.io's own decoder; one that does not
decode ends that connection with one warning line (a POST is answered 400, as engine.io answers its
other bad requests). Valid frames take engine.io's path unchanged.

It also keeps an idle connection small (issue 14; docs/scaling.md, "Memory per connection"): the
request environ slimmed once connected (``slim_environ``), uvicorn's handshake objects released and its
receive queue made lean (``release_handshake``, ``lean_receive_queue``), the writer waiting without an
extra task or timer (``Socket.poll``), and the next ping a timer rather than a sleeping task.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import weakref
from typing import Any

import engineio
from engineio import async_socket, exceptions, packet, payload

from . import direct_write, limits

log = logging.getLogger(__name__)


class MalformedFrame(ConnectionError):
    """A client frame that is not an Engine.IO packet.

    An ``OSError`` because that is what engine.io's websocket handler treats as the end of the
    transport (also during an upgrade from long-polling).
    """


class BadRequest(exceptions.EngineIOError):
    """A long-polling POST that is not an Engine.IO payload: engine.io disconnects the session and answers 400."""


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:100]}"


def _check(packets: list[packet.Packet]) -> None:
    """Raise ``ValueError`` for a decoded packet engine.io would trip over, or that no Socket.IO client sends."""
    for pkt in packets:
        # engine.io names packets by indexing ``packet_names``: types 7-9 would raise IndexError there.
        if not 0 <= pkt.packet_type < len(packet.packet_names):
            raise ValueError(f"unknown packet type {pkt.packet_type}")
        # A client's packets carry text or bytes; engine.io decodes a payload that is not a number as JSON
        # ('4{}', '3[[...]]'), which no Socket.IO client sends. Refused here because on a websocket engine.io
        # decodes the frame again, deeper in the stack: JSON nested just under the recursion limit here could
        # raise RecursionError there.
        if not isinstance(pkt.data, str | bytes):
            raise ValueError(f"{packet.packet_names[pkt.packet_type]} packet with JSON data ({type(pkt.data).__name__})")
        # Nor one that opens a JSON array or object and does not decode ('4[[[' unclosed): here that failed as
        # invalid JSON, but there, deeper in the stack, the same nesting can hit the recursion limit first.
        if isinstance(pkt.data, str) and pkt.data.lstrip(" \t\n\r")[:1] in ("[", "{"):
            raise ValueError(f"{packet.packet_names[pkt.packet_type]} packet with undecodable JSON data")


# What an environ keeps once its connection is set up (``slim_environ``): what engine.io reads when
# the request ends (the scope, to answer), the client address (``limits.client_address``) and the
# cookie (a client may leave the namespace and connect it again on the same connection:
# ``auth.authenticate`` reads it then).
KEPT_ENVIRON_KEYS = (
    "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "REMOTE_ADDR", "HTTP_COOKIE",
    "asgi.scope", "asgi.receive", "asgi.send", "wsgi.url_scheme",
)  # fmt: skip


def slim_environ(environ: dict[str, Any]) -> None:
    """Reduce, in place, an environ engine.io and python-socketio keep for a connection's whole life.

    engine.io's ASGI driver translates every request to a WSGI environ: each header decoded again,
    and ``wsgi.input``, an instance of a class it builds per request (a class costs 2.5 KB). A
    websocket's environ lives as long as the connection (the request's coroutines hold it, and
    python-socketio keeps the handshake's for ``get_environ``): about 4 KB per idle connection,
    read by nothing once the connection is set up. Cleared and refilled rather than deleted from,
    because a dict never shrinks its table on deletion; the same object, so every holder sees it.
    """
    kept = {key: environ[key] for key in KEPT_ENVIRON_KEYS if key in environ}
    environ.clear()
    environ.update(kept)


def _sansio_protocol(ws: Any) -> Any | None:
    """The uvicorn websockets-sansio protocol under an engine.io ASGI websocket, or None (another server or protocol)."""
    protocol = direct_write.asgi_protocol(ws)
    return protocol if type(protocol).__name__ == "WebSocketsSansIOProtocol" else None


def release_handshake(ws: Any) -> None:
    """Let uvicorn's websocket protocol forget its handshake once it is complete (about 2.5 KB per connection).

    uvicorn 0.54's websockets-sansio protocol keeps the handshake's request and response (websockets
    objects, every header parsed) and the scope's header list for the connection's whole life; it
    reads them only until the handshake completes, which it has once engine.io's handler runs (the
    accept was sent). The scope is this application's (engine.io's environ holds it too), and nothing
    here reads its headers later (``limits.client_address`` reads ``client``). Anything else (another
    server, another protocol, an incomplete handshake) is left alone.
    """
    protocol = _sansio_protocol(ws)
    if protocol is None or getattr(protocol, "handshake_complete", False) is not True:
        return
    for name in ("request", "response"):
        if hasattr(protocol, name):
            setattr(protocol, name, None)
    scope = getattr(protocol, "scope", None)
    if isinstance(scope, dict) and "headers" in scope:
        scope["headers"] = []


def lean_receive_queue(ws: Any) -> None:
    """Give uvicorn's websocket protocol a ``limits.LeanQueue`` for its incoming events (about 3 KB per connection).

    uvicorn 0.54's websockets-sansio protocol makes an ``asyncio.Queue`` per connection (four deques up
    front) and only ever calls ``put_nowait``, ``get`` and ``empty`` on it, all of which the lean queue
    has. Swapped when engine.io's handler starts, before it first reads: with nobody waiting on the old
    queue, whatever it holds is moved over in order. Anything else (another server or protocol, a
    queue of another type, a reader already waiting) is left alone.
    """
    protocol = _sansio_protocol(ws)
    if protocol is None:
        return
    queue = getattr(protocol, "queue", None)
    if type(queue) is not asyncio.Queue or getattr(queue, "_getters", None) != collections.deque():
        return
    lean = limits.LeanQueue()
    while not queue.empty():
        lean.put_nowait(queue.get_nowait())
    protocol.queue = lean


def _ping_due(ref: weakref.ref[Socket]) -> None:
    socket = ref()
    if socket is not None and not socket.closing and not socket.closed:
        socket.last_ping = time.time()
        socket.queue.put_nowait(packet.Packet(packet.PING))  # what engine.io's ``send`` does after its checks


def _cut(transport: Any) -> None:
    if not transport.is_closing():
        transport.abort()


class Socket(async_socket.AsyncSocket):
    """engine.io's socket: each client frame decoded before engine.io does, and less kept per idle connection (module docstring)."""

    def _refuse(self, reason: str) -> None:
        log.warning("disconnected %s: %s", getattr(self, "realtime_sid", None) or self.sid, reason)

    async def _websocket_handler(self, ws: Any) -> Any:
        wait = ws.wait

        async def checked_wait() -> Any:
            try:
                data = await wait()
            except OSError:
                if not self.upgraded:
                    raise  # the upgrade handshake's own handling
                # The client went away (engine.io's ASGI driver raises on the disconnect): engine.io's "closed by
                # client", which ends its loop the same way. Raised, the exception stayed on the read's task, and
                # its traceback held the handler's frame, which holds that task: a cycle of ~55 objects per
                # connection (its tasks, closures, request environ), left for the garbage collector.
                return None
            if isinstance(data, bytes):
                # Nothing in this protocol is binary: refused whatever its size, before anything reads it.
                limits.drop(self, "binary engine.io message refused (this protocol uses none)")
                raise MalformedFrame("binary message")
            if data is not None and len(data) > self.server.max_http_buffer_size:
                # engine.io would only stop reading and send a close frame: a client that ignores it keeps
                # streaming into a half-closed connection. The transport is aborted instead.
                limits.drop(self, f"message of {len(data)} bytes over the {self.server.max_http_buffer_size}-byte limit")
                raise MalformedFrame("message too large")
            if data is not None:
                try:
                    _check([packet.Packet(encoded_packet=data)])
                except Exception as error:  # noqa: BLE001  (any failure to decode means: not a packet)
                    self._refuse(f"malformed engine.io packet ({_describe(error)})")
                    raise MalformedFrame(str(error)) from None
            return data

        release_handshake(ws)
        lean_receive_queue(ws)
        ws.wait = checked_wait  # per connection: engine.io's handler reads every frame through ws.wait()
        try:
            return await super()._websocket_handler(ws)
        finally:
            del ws.wait  # it refers to ws (its own wait): a cycle, left for the garbage collector

    async def poll(self) -> list[packet.Packet]:
        """engine.io's ``poll``, waiting with the queue's own timeout instead of ``asyncio.wait_for``.

        On Python 3.11 ``wait_for`` wraps the wait in one more task: one per idle connection, for as
        long as it is idle (``limits.LeanQueue.get``). Otherwise as engine.io's: the packets queued,
        ``[]`` once the queue is closed (``None``), ``QueueEmpty`` when nothing came in time.
        """
        # A websocket's writer waits without a timer: its reader already ends the connection when the client
        # falls silent for as long, and then queues ``None`` for the writer. A long-polling GET keeps the timeout.
        timeout = None if self.upgraded else self.server.ping_interval + self.server.ping_timeout
        try:
            first = await self.queue.get(timeout=timeout)
            self.queue.task_done()
        except (TimeoutError, asyncio.CancelledError):
            raise exceptions.QueueEmpty() from None
        if first is None:
            return []
        packets = [first]
        while True:
            try:
                pkt = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self.queue.task_done()
            if pkt is None:
                self.queue.put_nowait(None)  # left for the next poll, which then reports the end
                break
            packets.append(pkt)
        return packets

    def schedule_ping(self) -> None:
        """engine.io's ping schedule with a timer, not a task sleeping ``ping_interval`` per connection."""
        if self.last_ping:  # only once the previous ping was answered
            self.last_ping = None
            # A weak reference: a connection that ends meanwhile is freed now, not when its next ping was due.
            asyncio.get_running_loop().call_later(self.server.ping_interval, _ping_due, weakref.ref(self))

    async def _upgrade_websocket(self, environ: dict[str, Any]) -> Any:
        """engine.io's upgrade; an upgrade from long-polling slims its request's environ at once.

        That request lives as long as the connection, and nothing reads its headers again: the
        connection was set up by the handshake, whose environ python-socketio keeps.
        """
        if self.connected:
            slim_environ(environ)
        return await super()._upgrade_websocket(environ)

    async def handle_post_request(self, environ: dict[str, Any]) -> None:
        """engine.io's POST handling, with the payload decoded inside a try."""
        length = int(environ.get("CONTENT_LENGTH", "0"))  # as engine.io reads it (the HTTP server checked it)
        if length > self.server.max_http_buffer_size:
            raise exceptions.ContentTooLongError()
        body = await environ["wsgi.input"].read(length)
        try:
            packets = payload.Payload(encoded_payload=body.decode("utf-8")).packets
            _check(packets)
        except Exception as error:  # noqa: BLE001  (any failure to decode means: not a payload)
            if self.closed or self.closing or self.server.sockets.get(self.sid) is not self:
                return  # the session ended while the body was read: nothing left to refuse
            self._refuse(f"malformed engine.io payload ({_describe(error)})")
            raise BadRequest() from None
        try:
            for pkt in packets:
                await self.receive(pkt)
        except exceptions.EngineIOError:  # e.g. UnknownPacketError: a client's OPEN or PING
            if self.server.sockets.get(self.sid) is self:
                raise  # engine.io disconnects the session and answers 400
            # The session ended within this payload (its own CLOSE came first, or it was dropped): there is
            # nothing left to refuse, and engine.io, not finding the session, would fail (UnboundLocalError).

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        """engine.io's close; the session is forgotten at once, and only a websocket's queue is waited for.

        engine.io 4.15 leaves a closed socket in ``server.sockets`` until something removes it, and
        a long-polling POST to it in the meantime escapes as ``KeyError: 'Session is disconnected'``;
        forgotten at once, the POST is answered 400 "Invalid session" like any unknown one. A closed
        long-polling session's queue can only be drained by a GET already waiting (a new one is
        refused): waiting for it would hang the caller, e.g. the request being refused, forever.
        """
        was_open = not self.closed and not self.closing
        await super().close(wait=False, abort=abort, reason=reason)
        if self.closed and self.server.sockets.get(self.sid) is self:
            del self.server.sockets[self.sid]
        transport = getattr(self, "realtime_transport", None)
        if was_open and not abort and self.closed and transport is not None:
            # Closed by the server (a CLOSE packet was sent; ``abort`` is the client gone or dropped). The writer
            # waits without a timer (``poll``), so a client that ignores the CLOSE and keeps sending would keep its
            # websocket open: it is cut after ping interval + timeout, as engine.io's writer timeout did. The timer
            # holds the transport only, not this socket.
            asyncio.get_running_loop().call_later(self.server.ping_interval + self.server.ping_timeout, _cut, transport)
        if wait and self.closed and self.upgraded:
            await self.queue.join()


class EngineServer(engineio.AsyncServer):
    """engine.io with a byte-counted send queue per connection (``limits.OutgoingQueue``) and ``Socket``."""

    def create_queue(self, *args: Any, **kwargs: Any) -> Any:
        return limits.OutgoingQueue() if not args and not kwargs else super().create_queue(*args, **kwargs)

    async def _trigger_event(self, event: str, *args: Any, **kwargs: Any) -> Any:
        if event == "connect":
            # engine.io 4.15 builds every socket as AsyncSocket (it offers no class to override). Its
            # connect event is the first moment this server sees the new socket, before any client
            # frame is read: from here on it is a ``Socket`` (a subclass adding no state).
            socket = self.sockets.get(args[0])
            if type(socket) is async_socket.AsyncSocket:
                socket.__class__ = Socket
        return await super()._trigger_event(event, *args, **kwargs)
