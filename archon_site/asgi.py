"""ASGI entrypoint: Django first, then the Socket.IO server wrapped around it.

Run with ``uvicorn archon_site.asgi:application`` (or granian).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "archon_site.settings")
django_app = get_asgi_application()

from django.conf import settings  # noqa: E402

from archon_site.body_limit import BodyLimit  # noqa: E402
from realtime import asgi_app  # noqa: E402  (needs Django set up)

live_app = asgi_app(django_app)
# Outermost: bodies over their cap are refused before Django or engine.io reads them.
application = BodyLimit(
    live_app,
    default=settings.REQUEST_MAX_BYTES,
    caps=[("/socket.io/", settings.REALTIME_MAX_MESSAGE_BYTES), ("/_realtime/publish", settings.REALTIME_PUBLISH_MAX_BYTES)],
)
