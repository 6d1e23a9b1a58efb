"""The Redis subscription's liveness: confirmed before it counts, and pinged when it has been quiet.

A subscription connection can die without failing: Redis moved or restarted behind a proxy or
NAT that dropped the connection without a reset (half-open). python-socketio reads it with
``listen()``, which then waits forever, and the node misses every broadcast other nodes publish
while its own publishes (other connections) still succeed: its clients silently go stale. Here a
watchdog pings a subscription quiet for ``QUIET_BEFORE_PING`` seconds. If the answer does not
come in time, Redis is asked on a new connection: answering there, this connection is dead, so
the watchdog closes it and ``messages`` raises (the listener subscribes afresh, then its watchers
resync); not answering, Redis itself hangs and the subscription is kept, since it delivers
everything once Redis resumes. The reads themselves wait without a timer: a timed read cost
~5 µs more per message (+25%), on every message every process reads. Worst cases: a half-open
subscription is replaced about 16 s after it died; a hang starts the outage within about 20 s.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.utils import str_if_bytes

QUIET_BEFORE_PING = 5.0  # seconds without a message; then one PING (a busy node hears its own publishes instead)
ANSWER_GRACE = 1.0  # seconds the subscription's pong may trail Redis's answer on another connection


async def subscribe_confirmed(pubsub: Any, channel: str, *, timeout: float) -> None:
    """Subscribe ``pubsub`` to ``channel`` and wait for Redis's confirmation; raise if none comes within ``timeout``.

    Until Redis confirms, a publish elsewhere may not reach this node, so the caller counts itself
    subscribed (and resyncs its watchers) only once this returns.
    """
    try:
        async with asyncio.timeout(timeout):
            await pubsub.subscribe(channel)
            # Read raw: get_message would drop the confirmation (ignore_subscribe_messages). Bounded by the timeout above.
            reply = await pubsub.parse_response(block=True)
    except TimeoutError as error:
        raise RedisConnectionError(f"Redis did not confirm the subscription within {timeout:g} s") from error
    if not reply or str_if_bytes(reply[0]) != "subscribe":
        raise RedisConnectionError(f"Redis answered SUBSCRIBE with {reply!r:.100}, not a confirmation")


class SubscriptionLost(RedisConnectionError):
    """The subscription's connection went silent while Redis answered on another one (half-open): closed by the
    watchdog, to subscribe afresh."""


class _Heard:
    """What the reader tells the watchdog: how many replies it has read, and whether the watchdog closed the connection."""

    def __init__(self) -> None:
        self.replies = 0
        self.dead = ""  # why the watchdog closed the connection
        self.half_open = False  # closed because it was silent while Redis answered elsewhere

    def error(self) -> RedisConnectionError:
        """What the reader raises once the watchdog has closed the connection."""
        return SubscriptionLost(self.dead) if self.half_open else RedisConnectionError(self.dead)


async def messages(pubsub: Any, *, timeout: float, redis_answers: Callable[[], Awaitable[bool]]) -> AsyncIterator[dict[str, Any]]:
    """``pubsub``'s messages, as ``listen()`` yields them, pongs left out.

    Raises ``SubscriptionLost`` (a ``redis.exceptions.ConnectionError``) when a ping sent after ``QUIET_BEFORE_PING`` quiet
    seconds has had no answer (nor any message) for ``timeout`` seconds while ``redis_answers()``
    (a ping on another connection) is True. While it is False, keeps waiting and asks again.
    """
    heard = _Heard()
    watchdog = asyncio.ensure_future(_watch(pubsub, heard, timeout=timeout, redis_answers=redis_answers))
    try:
        while True:
            if heard.dead:  # closed while a message was being handled: parse_response would reconnect silently
                raise heard.error()
            connection = pubsub.connection
            if connection is None or not connection.is_connected:  # closed by anyone else meanwhile (a pool dropped)
                raise RedisConnectionError("the subscription's connection was closed while a message was handled")
            try:
                # Raw: any reply counts as heard (handle_message hides some, e.g. a pong decoded to str).
                reply = await pubsub.parse_response(block=True)
            except Exception as error:
                if heard.dead:
                    raise heard.error() from error
                raise
            heard.replies += 1
            if not isinstance(reply, list):  # a bare reply: a RESP3 pong (bytes, or str when decoded), never a message
                continue
            message = await pubsub.handle_message(reply)
            if message is not None and message["type"] != "pong":
                yield message
    finally:
        watchdog.cancel()


async def _watch(pubsub: Any, heard: _Heard, *, timeout: float, redis_answers: Callable[[], Awaitable[bool]]) -> None:
    """Ping the subscription when quiet; close its connection once it is silent while Redis answers elsewhere."""
    connection = pubsub.connection
    while True:
        seen = heard.replies
        await asyncio.sleep(QUIET_BEFORE_PING)
        if heard.replies != seen:
            continue
        try:
            async with asyncio.timeout(timeout):
                await pubsub.ping()
        except Exception as error:  # noqa: BLE001  (the reader meets the same fault, or the close below)
            heard.dead = f"could not send a ping on the subscription within {timeout:g} s: {error!r:.200}"
        else:
            await asyncio.sleep(timeout)
            # Silent, and Redis answers no one either: it hangs, and the subscription is kept; asked again after a while.
            while heard.replies == seen and not await redis_answers():  # noqa: ASYNC110  (each round asks Redis)
                await asyncio.sleep(timeout)
            if heard.replies == seen:
                # Redis answers elsewhere: this connection's pong, sent before, is due now too (or is read late: a
                # busy event loop). A last moment for it before the connection counts as dead.
                await asyncio.sleep(min(timeout, ANSWER_GRACE))
            if heard.replies != seen:
                continue
            heard.dead = f"the subscription did not answer a ping within {timeout:g} s while Redis answered elsewhere"
            heard.half_open = True
        # The reader waits without a timer: closing the connection under it ends its read (end of stream).
        with contextlib.suppress(Exception):  # closing a socket hardly fails, and nothing else is left to try
            await connection.disconnect(nowait=True)
        return
