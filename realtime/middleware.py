"""A request's response leaves once the broadcasts it sent on commit have left this process.

Without it, a write is answered while its broadcasts still wait their turn on the event loop (a
reorder's twenty ``task_updated`` go one after another): a server killed the moment it answers
loses them, and every watcher on every node keeps the old versions with nothing to tell them.
With it, the answer means each broadcast was numbered and published by Redis (or sent to this
node's clients, or recorded as lost for a server to repair).

The wait is bounded (``REALTIME_RESPONSE_WAIT_SECONDS``: longer than a Redis call may take before
the loss is recorded), so a Redis that stopped answering delays a write's answer by that much at
most; past it the response goes and the broadcasts follow. It holds the request's thread while it
waits, not a pooled database connection. First in ``MIDDLEWARE``, so it wraps whatever commits.
Client events over Socket.IO get the same from realtime's dispatcher: acked once their sends have left.
"""

from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.db import connections
from django.http import HttpRequest, HttpResponseBase

from . import bus


def _release_pooled_connections() -> None:
    """Give pooled database connections back before waiting: a Redis that stopped answering must not hold the
    pool's connections too, with every write waiting at once (and recording a loss needs one). A persistent
    connection (``CONN_MAX_AGE``) is kept: closing it would only cost the next request a new one."""
    for connection in connections.all(initialized_only=True):
        if getattr(connection, "pool", None) is not None and not connection.in_atomic_block:
            connection.close()


class BroadcastsSentMiddleware:
    """Each response waits (bounded) until the broadcasts its request submitted on commit have left the process."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        with bus.tracking_sends() as sent:
            response = self.get_response(request)
        if sent:  # in a thread of the request: blocking here holds no event loop
            _release_pooled_connections()
            bus.wait_sent(sent)
        return response  # type: ignore[return-value]

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        with bus.tracking_sends() as sent:
            response = await self.get_response(request)  # type: ignore[misc]
        await bus.all_sent(sent)
        return response
