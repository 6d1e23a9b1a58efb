"""The ASGI app: the project's Django app with the Socket.IO server around it."""

from typing import Any

import socketio


def asgi_app(django_app: Any) -> socketio.ASGIApp:
    """Serve Socket.IO at ``/socket.io/`` and everything else with ``django_app`` (call after Django is set up)."""
    from .server import on_shutdown, on_startup, sio

    return socketio.ASGIApp(sio, other_asgi_app=django_app, on_startup=on_startup, on_shutdown=on_shutdown)
