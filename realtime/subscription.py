"""The Redis subscription's liveness: confirmed before it counts, and pinged when it has been quiet.

A subscription connection can die without failing: Redis moved or restarted behind a proxy or
NAT that dropped the connection without a reset (half-open). python-socketio reads it with
``listen()``, which then waits forever, and the node misses every broadcast other nodes publish
while its own publishes (other connections) still succeed: its clients silently go stale. Here a
subscription quiet for ``QUIET_BEFORE_PING`` seconds is pinged. If the answer does not come in
time, Redis is asked on another connection: answering there, this connection is dead and
``messages`` raises (the listener subscribes afresh, then its watchers resync); not answering,
Redis itself hangs and the subscription is kept, since it delivers everything once Redis resumes.
"""

import asyncio
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


async def messages(pubsub: Any, *, timeout: float, redis_answers: Callable[[], Awaitable[bool]]) -> AsyncIterator[dict[str, Any]]:
    """``pubsub``'s messages, as ``listen()`` yields them, pongs left out.

    Raises ``redis.exceptions.ConnectionError`` when a ping sent after ``QUIET_BEFORE_PING`` quiet
    seconds has had no answer (nor any message) for ``timeout`` seconds while ``redis_answers()``
    (a ping on another connection) is True. While it is False, keeps waiting and asks again.
    """
    loop = asyncio.get_running_loop()
    heard, pinged = loop.time(), None
    while True:
        due = heard + QUIET_BEFORE_PING if pinged is None else pinged + timeout
        # Raw: anything read counts as heard (handle_message hides some replies, e.g. a pong decoded to str).
        reply = await pubsub.parse_response(block=False, timeout=max(due - loop.time(), 0))
        if reply is None and pinged is not None and loop.time() >= pinged + timeout and await redis_answers():
            # Redis answers elsewhere: this connection's pong, sent before, is due now too (or was read late: a busy
            # event loop). A last short read for it before the connection counts as dead.
            reply = await pubsub.parse_response(block=False, timeout=min(timeout, ANSWER_GRACE))
            if reply is None:
                raise RedisConnectionError(f"the subscription did not answer a ping within {timeout:g} s; Redis does")
        now = loop.time()
        if reply is not None:
            heard, pinged = now, None
            message = await pubsub.handle_message(reply)
            if message is not None and message["type"] != "pong":
                yield message
        elif pinged is not None and now >= pinged + timeout:
            pinged = now  # Redis hangs (redis_answers() was False): the ping stays sent; wait again, then ask again
        elif pinged is None and now >= heard + QUIET_BEFORE_PING:
            try:
                async with asyncio.timeout(timeout):
                    await pubsub.ping()
            except TimeoutError as error:  # the send itself stuck: the connection's buffers are full
                raise RedisConnectionError(f"could not send a ping on the subscription within {timeout:g} s") from error
            pinged = now
