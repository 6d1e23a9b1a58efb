"""Broadcasts a process gave up delivering: recorded in the database, repaired by whichever server finds them.

A command whose server (or Redis) is out of reach loses its broadcasts after a short retry.
The database has the change, but a client that rejoins with ``since`` would be told it missed
nothing: the lost broadcast is in no room's history. So the loss is written down (``record``,
one row per room) in the database all servers share, and every server process looks for rows
every ``REALTIME_LOST_POLL_SECONDS`` (``watch``): the one that deletes a row forgets that room's
history (a new epoch: no ``since`` from before is honoured) and has its watchers resync, on
every node. It works even when the process that lost them has exited.
"""

import asyncio
import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from . import history

log = logging.getLogger(__name__)
MAX_ROOMS = 100  # named one by one; beyond, one row for every room


def record(messages: Iterable[dict[str, Any]]) -> None:
    """Sync, in the process that gave up: note the recoverable rooms ``messages`` were broadcasts to."""
    record_rooms(sorted({m["room"] for m in messages if m.get("op") == "emit" and history.recoverable(m.get("room"))}))


def record_rooms(rooms: list[str], *, repair_after: float = 0.0) -> list[int]:
    """Sync: note ``rooms`` ("" : every room) as having lost broadcasts, to be repaired by any server after
    ``repair_after`` seconds; the rows' ids (a server that repairs its own losses deletes them, see ``forget``)."""
    from .models import LostBroadcast

    if not rooms:
        return []
    after = timezone.now() + timedelta(seconds=repair_after)
    rows = (
        [LostBroadcast(room=room, repair_after=after) for room in rooms] if len(rooms) <= MAX_ROOMS else [LostBroadcast(repair_after=after)]
    )
    try:
        created = LostBroadcast.objects.bulk_create(rows)
    except Exception:
        log.exception("could not record lost broadcasts to %d room(s): their watchers may stay stale until they reload", len(rooms))
        return []
    log.warning("recorded %d room(s) whose broadcasts were lost: a server will have their watchers resync", len(rooms))
    return [row.pk for row in created if row.pk is not None]


async def record_rooms_within(rooms: list[str], timeout: float) -> None:
    """``record_rooms`` from the event loop, off asgiref's one ORM thread (written even while joins queue there),
    waited for at most ``timeout`` seconds; a write not done by then is logged (it may still land)."""
    try:
        async with asyncio.timeout(timeout):
            await database_sync_to_async(record_rooms, thread_sensitive=False)(rooms)  # logs its own outcome
    except TimeoutError:
        log.error("lost broadcasts to %d room(s) could not be recorded within %g s: their watchers may stay stale", len(rooms), timeout)


def forget(ids: list[int]) -> None:
    """Sync: the server that recorded these repaired them itself."""
    from .models import LostBroadcast

    LostBroadcast.objects.filter(pk__in=ids).delete()


def _claim() -> list[str]:
    """Sync: the rooms of the rows this process deleted first (another server deleting them gets nothing)."""
    from .models import LostBroadcast

    claimed = []
    for row in LostBroadcast.objects.filter(repair_after__lte=timezone.now())[:1000]:
        if LostBroadcast.objects.filter(pk=row.pk).delete()[0]:
            claimed.append(row.room)
    return claimed


async def repair(rooms: list[str]) -> None:
    """Forget the rooms' histories and have their watchers resync, on every node ("" : every room)."""
    from . import bus

    for room in sorted(set(rooms)):
        await bus.resync(room=room or None)


async def watch() -> None:
    """A server's background task: repair what other processes recorded as lost."""
    while True:
        await asyncio.sleep(settings.REALTIME_LOST_POLL_SECONDS)
        try:
            rooms = await database_sync_to_async(_claim)()
            if rooms:
                log.warning("repairing broadcasts another process lost: %d room(s)", len(set(rooms)))
                await repair(rooms)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001  (the database away for a moment: look again later)
            log.exception("could not look for lost broadcasts")
