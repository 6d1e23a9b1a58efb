"""The Redis subscription's liveness: confirmed before it counts, and pinged when it has been quiet.

A subscription connection can die without failing: Redis moved or restarted behind a proxy or
NAT that dropped the connection without a reset, a half-open TCP connection. python-socketio
reads it with ``listen()``, which then waits for ever, and the node misses every broadcast other
nodes publish while its own publishes (other connections) still succeed: its clients silently
stale. Here a subscription quiet for ``QUIET`` seconds is pinged; one that does not answer within
the timeout raises, and the listener treats it as broken (reconnects, then its watchers resync).
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.utils import str_if_bytes

QUIET = 5.0  # seconds without a message before the subscription is pinged (one PING per node per QUIET when idle)


async def confirmed(pubsub: Any, channel: str, *, timeout: float) -> None:
    """Subscribe ``pubsub`` to ``channel`` and wait for Redis's confirmation; raise if none comes within ``timeout``.

    Until Redis confirms, a message published elsewhere may not reach this node: a node that counted
    itself subscribed earlier (a hung Redis) resynced its watchers before it was, and missed what came between.
    """
    async with asyncio.timeout(timeout):
        await pubsub.subscribe(channel)
        reply = await pubsub.parse_response(block=False, timeout=timeout)  # raw: get_message hides the confirmation
    if not reply or str_if_bytes(reply[0]) != "subscribe":
        raise RedisConnectionError(f"Redis did not confirm the subscription within {timeout:g} s (got {reply!r:.100})")


async def messages(pubsub: Any, *, timeout: float) -> AsyncIterator[dict[str, Any]]:
    """``pubsub``'s messages, as ``listen()`` yields them; raises ``ConnectionError`` once a ping sent after ``QUIET``
    seconds without a message has had no answer (nor any message) for ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    heard, pinged = loop.time(), None
    while True:
        due = heard + QUIET if pinged is None else pinged + timeout
        message = await pubsub.get_message(timeout=max(due - loop.time(), 0.001))  # None: nothing, or nothing to show
        now = loop.time()
        if message is not None:
            heard, pinged = now, None
            if message["type"] != "pong":
                yield message
        elif pinged is not None and now >= pinged + timeout:
            raise RedisConnectionError(f"the subscription did not answer a ping within {timeout:g} s")
        elif pinged is None and now >= heard + QUIET:
            async with asyncio.timeout(timeout):
                await pubsub.ping()
            pinged = now
