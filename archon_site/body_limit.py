"""Request bodies capped before anyone reads them.

Django's ASGI handler, and engine.io's long-polling, read a whole request body into memory
(or a temporary file) before any view can look at its size: a 413 from a view comes after
the upload. This ASGI wrapper sits outside both and refuses a body over its path's cap as it
arrives — at once from ``Content-Length``, else as soon as the streamed bytes pass the cap.
"""

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Wrap ``app``; ``caps`` are ``(path prefix, bytes)``, first match wins, else ``default``."""

    def __init__(self, app: App, *, default: int, caps: Sequence[tuple[str, int]] = ()) -> None:
        self.app, self.default, self.caps = app, default, tuple(caps)

    def cap_for(self, path: str) -> int:
        return next((limit for prefix, limit in self.caps if path.startswith(prefix)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cap = self.cap_for(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            return await _too_large(send, cap)
        received, over, started = 0, False, False

        async def limited_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    # The app sees the client go away and stops reading; the 413 is sent below.
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            if not over:
                await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            if not over:
                raise  # a real error of the app, not the refusal (Django may raise on the disconnect)
        if over and not started:
            await _too_large(send, cap)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, cap: int) -> None:
    body = json.dumps({"detail": f"request body too large (limit {cap} bytes)"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
