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

Pings and acknowledgements still go through the queue; their order relative to events carries no
meaning. ``install()`` makes engine.io remember each websocket-born socket's websocket, which
python-socketio does not expose, and every websocket's transport (born or upgraded): what sits in
its write buffer counts towards REALTIME_MAX_BUFFERED_BYTES (see ``limits``), and a connection
that stays over that bound (past a grace, or over a hard ceiling) is dropped by aborting it.
"""

from typing import Any

from engineio import async_socket

_installed = False


def install() -> None:
    """Let each engine.io socket keep a reference to its websocket (idempotent)."""
    global _installed
    if _installed:
        return
    original = async_socket.AsyncSocket._websocket_handler

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
        return await original(self, ws)

    async_socket.AsyncSocket._websocket_handler = remembering
    _installed = True


def text_frame(text: str) -> bytes:
    """One unmasked, final websocket text frame (RFC 6455 §5.2)."""
    data = text.encode()
    size = len(data)
    if size < 126:
        return bytes((0x81, size)) + data
    if size < 1 << 16:
        return bytes((0x81, 126)) + size.to_bytes(2, "big") + data
    return bytes((0x81, 127)) + size.to_bytes(8, "big") + data


def protocol_for(socket: Any) -> Any | None:
    """The uvicorn websocket protocol to write to directly, or None when this connection uses the queue."""
    ws = getattr(socket, "realtime_ws", None)
    protocol = getattr(getattr(ws, "asgi_send", None), "__self__", None)
    if type(protocol).__name__ != "WebSocketsSansIOProtocol" or not protocol.handshake_complete:
        return None
    return protocol


def _transport_of(ws: Any) -> Any | None:
    """The asyncio transport under an engine.io ASGI websocket (uvicorn), or None (another server)."""
    transport = getattr(getattr(getattr(ws, "asgi_send", None), "__self__", None), "transport", None)
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
