"""ASGI entrypoint: Django first, then the Socket.IO server wrapped around it.

Run with ``uvicorn archon_site.asgi:application`` (or granian).
"""

import os

import socketio
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "archon_site.settings")
django_app = get_asgi_application()

from realtime.server import on_shutdown, on_startup, sio  # noqa: E402  (needs Django set up)

application = socketio.ASGIApp(sio, other_asgi_app=django_app, on_startup=on_startup, on_shutdown=on_shutdown)
