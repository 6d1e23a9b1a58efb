"""uvicorn fast path: a broadcast frame written straight to each websocket's transport.

With python-socketio every recipient has an engine.io writer task: a broadcast wakes one task
per connection, each of which frames the same text again and writes it. Measured with 1,000
watchers (``make bench``), that per-recipient work is what limits the full Django path. A frame
from server to client is never masked, so it is the same bytes for every recipient: here it is
built once and written directly, when — and only when — that cannot reorder or lose anything:

* the connection is an established websocket served by uvicorn's default websockets protocol;
* nothing is waiting in its engine.io queue (so nothing sent earlier can be overtaken);
* its transport is writable (not paused by back-pressure) and not closing.

Otherwise (long-polling, an upgrade in progress, a slow client, granian or another server) the
packet goes through engine.io's queue as usual. ``install()`` makes engine.io remember each
socket's websocket, which python-socketio does not expose.
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


def transport_for(socket: Any) -> Any | None:
    """The transport to write a frame to directly, or None when the queue must be used."""
    ws = getattr(socket, "realtime_ws", None)
    if ws is None or not socket.upgraded or socket.upgrading or not socket.queue.empty():
        return None
    protocol = getattr(getattr(ws, "asgi_send", None), "__self__", None)
    if type(protocol).__name__ != "WebSocketsSansIOProtocol":
        return None
    if not protocol.handshake_complete or protocol.close_sent or not protocol.writable.is_set() or protocol.transport.is_closing():
        return None
    return protocol.transport
