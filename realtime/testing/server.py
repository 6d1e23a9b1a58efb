"""A real uvicorn serving the project's ASGI app on a free loopback port, in a thread (see ``realtime.testing``)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_app() -> str:
    from django.conf import settings

    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        raise ValueError("LiveServer needs an app: pass app='mysite.asgi:application' or set ASGI_APPLICATION")
    module, _, attribute = path.rpartition(".")
    return f"{module}:{attribute}"  # uvicorn spells "module:attribute"


class LiveServer:
    """A real uvicorn serving an ASGI app on a free loopback port, in a thread of this process.

    In the same process, so the test's ORM writes reach it through realtime's in-process path. ``app`` is
    uvicorn's ``"module:attribute"``; by default ``settings.ASGI_APPLICATION``.
    """

    def __init__(self, app: str | None = None, *, start_timeout: float = 20.0) -> None:
        self.app = app or _default_app()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        # No uvicorn websocket pings, as the project serves (engine.io pings every connection itself).
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", ws_ping_interval=0)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="uvicorn", daemon=True)

    def start(self) -> LiveServer:
        """Start serving; returns once uvicorn accepts connections (``RuntimeError`` if it could not start)."""
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start serving {self.app}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving (the app's shutdown hooks run) and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
