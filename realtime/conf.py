"""realtime's settings and their defaults: a project sets only what it wants to change.

Applied in ``RealtimeConfig.ready()`` for every name the project's settings leave out.
The meaning of each is in the README's "Limits and security" and "Settings" sections.
"""

import os
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "REALTIME_CORS_ORIGINS": [],  # same origin only
    "REALTIME_PING_INTERVAL": 25,
    "REALTIME_PING_TIMEOUT": 60,
    "REALTIME_MAX_MESSAGE_BYTES": 65_536,
    "REALTIME_MAX_EVENT_PAYLOAD_BYTES": 16_384,
    "REALTIME_GC_TUNING": True,
    "REALTIME_EVENT_RATE": 20.0,
    "REALTIME_EVENT_BURST": 40,
    "REALTIME_EVENT_ABUSE_DISCONNECT": 100,
    "REALTIME_MAX_ROOMS_PER_CONNECTION": 100,
    "REALTIME_MAX_CONNECTIONS_PER_USER": 50,
    "REALTIME_AUTH_FAILURES_PER_MINUTE": 30,
    "REALTIME_CONNECT_TIMEOUT": 10.0,
    "REALTIME_MAX_PENDING_PER_ADDRESS": 20,
    "REALTIME_MAX_EVENTS_IN_FLIGHT": 4,
    "REALTIME_MAX_BUFFERED_BYTES": 4_000_000,
    "REALTIME_BUFFER_GRACE_SECONDS": 5.0,
    "REALTIME_SNAPSHOT_FRAME_BYTES": 256_000,
    "REALTIME_PUBLISH_MAX_BYTES": 4_000_000,
    "REALTIME_MAX_PENDING": 200,  # connections being set up at once, all addresses; beyond, a handshake is refused (retry)
    "REALTIME_HISTORY_SIZE": 500,  # broadcasts kept per room for recovery (0: off; every join gets its snapshot)
    "REALTIME_HISTORY_ROOMS": 10_000,  # rooms whose history is kept (least recently used forgotten)
    "REALTIME_HISTORY_BYTES": 32_000_000,  # JSON bytes of history kept, all rooms together (in one process)
    "REALTIME_HISTORY_TTL": 86_400,  # seconds a room's history stays in Redis after its last broadcast
    "REALTIME_LOST_POLL_SECONDS": 2.0,  # how often a server looks for broadcasts other processes recorded as lost
    # realtime.middleware: how long a write's answer waits at most for its broadcasts to leave the process. Redis not
    # answering costs up to 5 s (manager.PUBLISH_TIMEOUT) before the loss is recorded in the database; then it goes.
    # Also how long shutdown waits for the broadcasts still under way (bus.finish_sends).
    "REALTIME_RESPONSE_WAIT_SECONDS": 10.0,
    "REDIS_URL": None,  # set: several server processes share rooms through Redis
    "REALTIME_REDIS_CHANNEL": "realtime",
    # A server process's Redis connections at most (a burst waits for one); with REDIS_URL, at least
    # manager.MIN_REDIS_CONNECTIONS (6), or the server refuses to start.
    "REALTIME_REDIS_CONNECTIONS": 64,
    # Where commands on this machine publish without Redis: the server on this machine (its PORT).
    "REALTIME_SERVER_URL": os.environ.get("REALTIME_SERVER_URL") or f"http://127.0.0.1:{os.environ.get('PORT', '8000')}",
}


def apply_defaults() -> None:
    """Give every realtime setting the project did not set its default."""
    for name, value in DEFAULTS.items():
        if not hasattr(settings, name):
            setattr(settings, name, value)
