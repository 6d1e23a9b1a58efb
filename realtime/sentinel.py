"""With a Sentinel ``REDIS_URL``: leave a master Sentinel has replaced as soon as Sentinel says so.

redis-py's Sentinel pool asks Sentinel for the master only when it opens a connection. After a
failover, its open connections (the subscription's among them) stay on the old master until
Sentinel demotes it and closes its clients: about 10 s in the tests. Meanwhile this server numbers
broadcasts there that servers already on the new master never get, with nothing recorded. So a
subscription to Sentinel's ``+switch-master`` event (on the first Sentinel that answers, pinged
when quiet like the server's own subscription, see ``subscription``) calls ``on_switch`` the moment the
master of this service changes; the manager then drops every connection of the pool.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.utils import str_if_bytes

from . import subscription

log = logging.getLogger(__name__)
SWITCH = "+switch-master"  # Sentinel's event: "<service> <old ip> <old port> <new ip> <new port>"


async def follow_failovers(pool: Any, *, on_switch: Callable[[str], Awaitable[None]], timeout: float, max_backoff: float) -> None:
    """Run for good: ``await on_switch(event)`` each time Sentinel switches the master of ``pool``'s service.

    ``pool`` is a redis-py ``SentinelConnectionPool``. Its Sentinels are tried in turn; one that fails or is
    found dead is left for the next, after a backoff once all have failed (at most ``max_backoff`` seconds).
    """
    service, backoff = pool.service_name, 0.1
    while True:
        # A copy: redis-py moves the Sentinel that answered a master lookup to the front of its list meanwhile.
        for sentinel in list(pool.sentinel_manager.sentinels):
            pubsub = sentinel.pubsub(ignore_subscribe_messages=True)
            try:
                await subscription.subscribe_confirmed(pubsub, SWITCH, timeout=timeout)
                backoff = 0.1
                async for message in subscription.messages(pubsub, timeout=timeout, redis_answers=_leave_it):
                    event = str_if_bytes(message["data"])
                    if message["type"] == "message" and event.split(" ", 1)[0] == service:
                        await on_switch(event)
            except Exception as error:  # noqa: BLE001  (this Sentinel is away: the next one, then a backoff)
                log.warning("could not follow Sentinel's failovers of %r there: %s", service, error)
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(timeout):
                        await pubsub.aclose()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)


async def _leave_it() -> bool:
    """A Sentinel whose subscription stopped answering is left for the next, hung or dead alike (unlike Redis, whose
    subscription is kept through a hang: any Sentinel will do)."""
    return True
