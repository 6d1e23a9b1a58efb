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
python-socketio does not expose.
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


def send(protocol: Any, frame: bytes) -> None:
    """Write the frame, unless the connection is closing (then it is dropped, as engine.io would)."""
    if not protocol.close_sent and not protocol.transport.is_closing():
        protocol.transport.write(frame)
