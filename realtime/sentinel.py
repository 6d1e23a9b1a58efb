"""With a Sentinel ``REDIS_URL``: leave a master Sentinel has replaced as soon as Sentinel says so.

redis-py's Sentinel pool asks Sentinel for the master only when it opens a connection. After a
failover, its open connections (the subscription's among them) stay on the old master until
Sentinel demotes it and closes its clients: about 10 s in the tests. Meanwhile this server numbers
broadcasts there that servers already on the new master never get, with nothing recorded. So a
subscription to Sentinel's ``+switch-master`` event, on the first Sentinel that answers, calls
``on_switch`` the moment the master of this service changes (the manager then drops every
connection of its pool).

The subscription is a connection of its own, read with a timer: events are rare, so a timer per
read costs nothing here. Quiet for ``subscription.QUIET_BEFORE_PING`` seconds, it is pinged; a
Sentinel that does not answer within ``timeout``, hung or dead alike, is left for the next (any
Sentinel will do). No redis-py ``PubSub``: it reconnects by itself, with a handshake that could
wait forever on a hung Sentinel.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.utils import str_if_bytes

from . import subscription

log = logging.getLogger(__name__)
SWITCH = "+switch-master"  # Sentinel's event: "<service> <old ip> <old port> <new ip> <new port>" (names have no spaces)


async def follow_failovers(
    pool: Any,
    *,
    on_switch: Callable[[str], Awaitable[None]],
    current: Callable[[], tuple[str, int] | None],
    timeout: float,
    max_backoff: float,
) -> None:
    """Run for good: ``await on_switch(event)`` each time Sentinel switches the master of ``pool``'s service.

    ``pool`` is a redis-py ``SentinelConnectionPool``. Its Sentinels are tried in turn; once all have
    failed, again after a backoff (at most ``max_backoff`` seconds; reset by one that served a while).
    A switch while no Sentinel was followed is found on subscribing again: the master this Sentinel
    names is not the one ``current()`` says the server's subscription is connected to.
    """
    loop, backoff = asyncio.get_running_loop(), 0.1
    while True:
        # A copy: redis-py moves the Sentinel that answered a master lookup to the front of its list meanwhile.
        for sentinel in list(pool.sentinel_manager.sentinels):
            began = loop.time()
            try:
                await _follow(sentinel, pool, on_switch, current, timeout)
            except Exception as error:  # noqa: BLE001  (this Sentinel is away: the next one)
                log.warning("could not follow Sentinel's failovers of %r there: %s", pool.service_name, error)
            if loop.time() - began > max_backoff:
                backoff = 0.1
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)


async def _follow(
    sentinel: Any, pool: Any, on_switch: Callable[[str], Awaitable[None]], current: Callable[[], tuple[str, int] | None], timeout: float
) -> None:
    """Subscribe on ``sentinel`` and pass on its switches of ``pool``'s service; returns only by raising."""
    service = pool.service_name
    connection = sentinel.connection_pool.make_connection()
    try:
        async with asyncio.timeout(timeout):
            await connection.connect()
            await connection.send_command("SUBSCRIBE", SWITCH)
            reply = await connection.read_response(push_request=True)
        if not isinstance(reply, list) or str_if_bytes(reply[0]) != "subscribe":
            raise RedisConnectionError(f"Sentinel answered SUBSCRIBE with {reply!r:.100}")
        await _switched_meanwhile(sentinel, service, on_switch, current, timeout)
        pinged = False
        while True:
            # A timer of our own (None when it runs out), not the connection's socket timeout: that would close it.
            reply = await connection.read_response(timeout=timeout if pinged else subscription.QUIET_BEFORE_PING, push_request=True)
            if reply is None:
                if pinged:
                    raise RedisConnectionError(f"Sentinel did not answer a ping within {timeout:g} s")
                async with asyncio.timeout(timeout):
                    await connection.send_command("PING")
                pinged = True
                continue
            pinged = False  # any reply: it is alive
            if isinstance(reply, list) and len(reply) == 3 and str_if_bytes(reply[0]) == "message":
                event = str_if_bytes(reply[2])
                if event.split(" ", 1)[0] == service:
                    await _pass_on(on_switch, event)
    finally:
        with contextlib.suppress(Exception):
            await connection.disconnect(nowait=True)


async def _switched_meanwhile(
    sentinel: Any, service: str, on_switch: Callable[[str], Awaitable[None]], current: Callable[[], tuple[str, int] | None], timeout: float
) -> None:
    """Just subscribed on ``sentinel``: if the master it names is not the one the server's subscription is connected
    to, a switch came while no Sentinel was followed (its announcement went nowhere): passed on as Sentinel would
    have announced it. Asked of this Sentinel, the one whose announcements are followed from now on; if it cannot
    tell (no master while one is being elected), the next announcement will."""
    on = current()
    if on is None:  # not connected: the next connection asks Sentinel for the master anyway
        return
    try:
        async with asyncio.timeout(timeout):
            named = await sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service)
    except Exception as error:  # noqa: BLE001
        log.warning("could not ask Sentinel for the master of %r after subscribing: %s", service, error)
        return
    if named and (str_if_bytes(named[0]), int(named[1])) != (on[0], int(on[1])):
        await _pass_on(on_switch, f"{service} {on[0]} {on[1]} {str_if_bytes(named[0])} {int(named[1])}")


async def _pass_on(on_switch: Callable[[str], Awaitable[None]], event: str) -> None:
    try:
        await on_switch(event)
    except Exception:  # noqa: BLE001  (the Sentinel still serves: its next events matter too)
        log.exception("could not leave the old master after Sentinel's %r", event)
