"""ASGI entrypoint: Django first, then the Socket.IO server wrapped around it.

Run with ``uvicorn archon_site.asgi:application`` (or granian).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "archon_site.settings")

from archon_site.request_threads import get_asgi_application  # noqa: E402

django_app = get_asgi_application()  # Django's, with reused request threads

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
