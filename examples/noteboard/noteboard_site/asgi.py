"""ASGI entrypoint: ``uvicorn noteboard_site.asgi:application`` (Django first, Socket.IO around it)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "noteboard_site.settings")
django_app = get_asgi_application()

from realtime import asgi_app  # noqa: E402  (after Django is set up)

application = asgi_app(django_app)
