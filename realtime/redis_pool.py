"""redis-py's blocking connection pool, first come first served.

redis-py's ``BlockingConnectionPool`` wakes a waiter when a connection comes back, but a caller
that arrives meanwhile (often the one that just released it, calling again) takes it first, and
the woken waiter goes back to waiting. A few callers sending back to back can so keep one waiter
out until its timeout: in a storm of joins, the outage watcher's ping (Redis taken for silent
while it answers) or its drain (a held room operation's SETTLE starting over). Here callers take
turns from a FIFO semaphore of ``max_connections`` first: a newcomer queues behind every waiter.
"""

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.maint_notifications import MaintNotificationsConfig


def without_maintenance_notifications() -> dict[str, Any]:
    """Pool options that keep redis-py's check of an idle connection before it is lent.

    With RESP3, redis-py 8 turns on "maintenance notifications" (a managed service's push messages
    about failovers) and then skips that check: a connection Redis closed while it sat idle (Redis
    restarted, a proxy's idle timeout) fails the next command instead of reconnecting first.
    """
    return {"maint_notifications_config": MaintNotificationsConfig(enabled=False)}


class FairBlockingConnectionPool(aioredis.BlockingConnectionPool):
    """A ``BlockingConnectionPool`` whose waiters get connections in the order they asked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(self.max_connections)  # FIFO: a newcomer waits while anyone waits
        self._holding: set[Any] = set()  # connections lent with a turn (redis-py also releases some it never lent)

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if not self._turns.locked():
            await self._turns.acquire()  # free: taken without suspending (and without a timer per command)
        else:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._turns.acquire()
            except TimeoutError as error:
                raise RedisConnectionError("No connection available.") from error
        try:
            connection = await super().get_connection(*args, **kwargs)
        except BaseException:
            self._turns.release()  # lent nothing (a connection it made and could not connect, it released itself)
            raise
        self._holding.add(connection)
        return connection

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)
        finally:
            if connection in self._holding:
                self._holding.discard(connection)
                self._turns.release()
