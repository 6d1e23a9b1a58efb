"""The project's live server: ``realtime.testing.LiveServer`` serving ``archon_site.asgi:application``."""

from realtime.testing import LiveServer, free_port

__all__ = ["LiveServer", "free_port"]
