"""uvicorn fast path: a broadcast frame written straight to each websocket's transport.

With python-socketio every recipient has an engine.io writer task: a broadcast wakes one task
per connection, each of which frames the same text again and writes it. Measured with 1,000
watchers (``make bench``), that per-recipient work is what limits the full Django path. A frame
from server to client is never masked, so it is the same bytes for every recipient: here it is
built once and written directly.

Order is what must not change, so a connection takes one path for its whole life:

* opened as a websocket (no long-polling first) on uvicorn's default websockets protocol: every
  broadcast is written directly, in call order (a slow client's data waits in its transport's
  buffer, as it would have waited in engine.io's queue);
* anything else (long-polling, upgraded from long-polling, granian or another server): every
  broadcast goes through engine.io's queue as usual. Mixing the two on one connection could let
  a direct write overtake a packet the writer task has already taken from the queue.

Pings and acknowledgements still go through the queue. An acknowledgement is queued after the
events its handler sent, which were written already, so it never arrives before them (the recovery
protocol counts on it: a join's ack comes after its snapshot); a broadcast may overtake an ack
queued before it, which carries no meaning. ``install()`` makes engine.io remember each
websocket-born socket's websocket, which python-socketio does not expose, and every websocket's transport (born or upgraded): what sits in
its write buffer counts towards REALTIME_MAX_BUFFERED_BYTES (see ``limits``), and a connection
that stays over that bound (past a grace, or over a hard ceiling) is dropped by aborting it.

Everything here leans on private engine.io and uvicorn details. ``verify()`` checks each of them on
the classes, once, before the server serves (``install()``, called by ``build_server``). When one
does not hold (an upgrade renamed or reshaped something), one error names what is missing and the
fast path stays off for the process: every broadcast goes through engine.io's queue as python-socketio
does by default (and what the wrapper above needs missing, nothing is patched at all). A broadcast
never aborts half-way either: should a direct write still fail for one connection, that connection
alone takes the queue from then on (``abandon``).
"""

import asyncio
import dis
import importlib
import inspect
import logging
from typing import Any

log = logging.getLogger(__name__)

# Where each private detail lives (module, name): looked up, not imported, so that a move is reported, not fatal.
ENGINEIO_SOCKET = ("engineio.async_socket", "AsyncSocket")
ENGINEIO_ASGI = "engineio.async_drivers.asgi"
UVICORN_PROTOCOL = ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol")
TRANSPORT_METHODS = ("write", "is_closing", "get_write_buffer_size", "abort")

_installed = False
_protocol_class: type | None = None  # uvicorn's websocket protocol once verified; None: the fast path is off
abandoned_connections = 0  # connections moved to the queue after a failed direct write (the first is logged)


# --- startup: every assumption checked once ----------------------------------------------------


def verify() -> list[str]:
    """What the fast path assumes of engine.io, uvicorn and asyncio that does not hold here (empty: all of it holds).

    Checked on the classes, without a connection: each one exists, each method that ``install`` wraps
    is a coroutine taking exactly the arguments its wrapper passes on, and each attribute read on a
    live connection is assigned by its class's ``__init__``.
    """
    hook, direct = _problems()
    return hook + direct


def _problems() -> tuple[list[str], list[str]]:
    """(what ``install``'s wrapper needs and lacks, what only the direct writes need and lack)."""
    hook: list[str] = []
    socket_class = _find(*ENGINEIO_SOCKET, hook)
    if socket_class is not None:
        _coroutine(socket_class, "_websocket_handler", ["self", "ws"], hook)  # replaced by install()'s wrapper
        _assigned(socket_class, ["connected", "upgraded", "queue"], hook)  # read by that wrapper
    websocket = _find(ENGINEIO_ASGI, "WebSocket", hook)
    if websocket is not None:
        drivers = _find(ENGINEIO_ASGI, "_async", hook)
        if drivers is not None and (not isinstance(drivers, dict) or drivers.get("websocket") is not websocket):
            hook.append(f"{ENGINEIO_ASGI}._async['websocket'] is no longer its WebSocket class")
        _coroutine(websocket, "send", ["self", "message"], hook)  # wrapped per connection to count what it writes
        _assigned(websocket, ["asgi_send"], hook)  # uvicorn's bound ``send``: its ``__self__`` is the protocol
    for method in TRANSPORT_METHODS[2:]:  # the unsent bound reads a transport's buffer and aborts it
        if not callable(getattr(asyncio.WriteTransport, method, None)):
            hook.append(f"asyncio.WriteTransport.{method} is missing")

    direct: list[str] = []
    protocol = _find(*UVICORN_PROTOCOL, direct)
    if protocol is not None:
        if not inspect.isfunction(getattr(protocol, "send", None)):
            direct.append(f"{_name(protocol)}.send is not a plain method (its bound method leads to the protocol)")
        _assigned(protocol, ["transport", "handshake_complete", "close_sent"], direct)
    for method in TRANSPORT_METHODS[:2]:  # a direct write checks the transport is open, then writes to it
        if not callable(getattr(asyncio.WriteTransport, method, None)):
            direct.append(f"asyncio.WriteTransport.{method} is missing")
    return hook, direct


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _find(module: str, name: str, problems: list[str]) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        problems.append(f"{module}.{name} cannot be imported ({type(error).__name__}: {error})")
        return None


def _coroutine(cls: type, name: str, parameters: list[str], problems: list[str]) -> None:
    method = getattr(cls, name, None)
    if method is None:
        problems.append(f"{_name(cls)}.{name} is missing")
    elif not inspect.iscoroutinefunction(method):
        problems.append(f"{_name(cls)}.{name} is no longer a coroutine function")
    elif list(inspect.signature(method).parameters) != parameters:
        problems.append(f"{_name(cls)}.{name} takes {inspect.signature(method)}, not ({', '.join(parameters)})")


def _assigned(cls: type, names: list[str], problems: list[str]) -> None:
    """Each of ``names`` must be assigned (``self.<name> = ...``) by an ``__init__`` of ``cls`` or of a base class."""
    assigned: set[str] = set()
    for klass in cls.__mro__:
        init = inspect.unwrap(vars(klass).get("__init__", object.__init__))
        if inspect.isfunction(init):
            assigned.update(i.argval for i in dis.get_instructions(init) if i.opname == "STORE_ATTR")
    missing = [name for name in names if name not in assigned]
    if missing:
        problems.append(f"{_name(cls)}.__init__ no longer sets {', '.join(missing)}")


def install() -> bool:
    """Verify the fast path's assumptions and install what holds; True when broadcasts are written directly.

    Once per process (later calls return the first answer). Each failed check is named in one error:

    * one that the wrapper of engine.io's websocket handler needs: nothing is patched, engine.io runs as
      shipped, and REALTIME_MAX_BUFFERED_BYTES sees only engine.io's queue (not what its writer holds);
    * one that only direct writes need: the wrapper is installed (the unsent bound is whole), and
      every broadcast goes through engine.io's queue.
    """
    global _installed, _protocol_class
    if _installed:
        return _protocol_class is not None
    _installed = True
    hook, direct = _problems()
    if hook or direct:
        log.error(
            "uvicorn fast path OFF for this process, every broadcast goes through engine.io's queue (correct, slower with "
            "many watchers)%s: %s. realtime/direct_write.py needs updating for these engine.io / uvicorn versions.",
            ", and websocket writes are not counted towards REALTIME_MAX_BUFFERED_BYTES" if hook else "",
            "; ".join(hook + direct),
        )
        if hook:
            return False
    socket_class = importlib.import_module(ENGINEIO_SOCKET[0]).AsyncSocket
    original = socket_class._websocket_handler

    async def remembering(self: Any, ws: Any) -> Any:
        if not self.connected:  # born a websocket; an upgrade from long-polling keeps the queue
            self.realtime_ws = ws
        self.realtime_transport = _transport_of(ws)
        send = ws.send

        async def counted(message: Any) -> None:
            await send(message)
            if self.upgraded:  # the writer's packets (not the upgrade's probe) now sit in the transport
                written = getattr(self.queue, "written", None)
                if written is not None:
                    written(len(message))

        ws.send = counted
        self.realtime_counted = True  # see ``counts_writes``
        try:
            return await original(self, ws)
        finally:
            del ws.send  # it refers to ws (its own send) and to this socket, which refers to ws: cycles

    socket_class._websocket_handler = remembering
    if direct:
        return False
    _protocol_class = getattr(importlib.import_module(UVICORN_PROTOCOL[0]), UVICORN_PROTOCOL[1])
    return True


def enabled() -> bool:
    """Whether this process writes broadcasts directly (``install`` ran and every check passed)."""
    return _protocol_class is not None


# --- per connection, per broadcast ---------------------------------------------------------------


def text_frame(text: str) -> bytes:
    """One unmasked, final websocket text frame (RFC 6455 §5.2)."""
    data = text.encode()
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 1 << 16:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + data
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + data


def asgi_protocol(ws: Any) -> Any | None:
    """The server's protocol object under an engine.io ASGI websocket (uvicorn's: its bound ``send``'s owner), or None."""
    return getattr(getattr(ws, "asgi_send", None), "__self__", None)


def protocol_for(socket: Any) -> Any | None:
    """The uvicorn websocket protocol to write to directly, or None when this connection uses the queue."""
    ws = getattr(socket, "realtime_ws", None)
    if ws is None or _protocol_class is None:
        return None
    protocol = getattr(getattr(ws, "asgi_send", None), "__self__", None)  # asgi_protocol(ws), inline: once per recipient
    if not isinstance(protocol, _protocol_class) or not protocol.handshake_complete:
        return None
    return protocol


def abandon(socket: Any, error: BaseException) -> None:
    """A direct write to this connection failed: it takes engine.io's queue from now on (the first such failure is logged).

    For good, not just for this frame: a later direct write could overtake what waits in the queue.
    """
    global abandoned_connections
    socket.realtime_ws = None
    abandoned_connections += 1
    if abandoned_connections == 1:
        log.error(
            "direct write to %s failed (%s: %s): it, and any other connection that fails so (not logged again), "
            "now takes engine.io's queue; realtime/direct_write.py may not fit this uvicorn version",
            getattr(socket, "realtime_sid", None) or getattr(socket, "sid", "?"),
            type(error).__name__,
            error,
            exc_info=error,
        )


def counts_writes(socket: Any) -> bool:
    """Whether what this socket's websocket writer sends is counted as it reaches the transport (``install``'s wrapper).

    Then a packet the writer took from the queue stays counted there until it is written (see ``limits.OutgoingQueue``).
    """
    return bool(getattr(socket, "realtime_counted", False) and socket.upgraded)


def _transport_of(ws: Any) -> Any | None:
    """The asyncio transport under an engine.io ASGI websocket (uvicorn), or None (another server)."""
    transport = getattr(asgi_protocol(ws), "transport", None)
    if transport is None or not hasattr(transport, "get_write_buffer_size") or not hasattr(transport, "abort"):
        return None
    return transport


def transport_bytes(socket: Any) -> int:
    """Bytes waiting in the write buffer of the socket's websocket transport (0 without one)."""
    transport = getattr(socket, "realtime_transport", None)
    return transport.get_write_buffer_size() if transport is not None else 0


def closing(protocol: Any) -> bool:
    """True once the connection is closing: a frame for it is dropped, as engine.io would."""
    return bool(protocol.close_sent or protocol.transport.is_closing())


def send(protocol: Any, frame: bytes) -> None:
    """Write the frame to the transport (the caller checked ``closing`` and the unsent bound, ``limits.admit``)."""
    protocol.transport.write(frame)
