"""Sending from application code: to a room now or when the transaction commits, from sync or async code.

Every path ends in ``bus`` (this server's rooms, other nodes through Redis, or, from a
process that serves no Socket.IO, the remote path). Room operations address connections
by a room they are in: every connection is in ``user_room(user_id)``.
"""

from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from django.db import transaction

from . import bus, rooms

AsyncHelper = Callable[..., Coroutine[Any, Any, None]]


async def emit(event: str, data: Any, *, room: str) -> None:
    """From async code: send ``event`` to every connection in ``room``, on every node, now."""
    await bus.emit(event, data, room=room)


def run_on_commit(helper: AsyncHelper, *args: Any, **kwargs: Any) -> None:
    """Run an async helper once the current transaction commits (at once in autocommit); never on rollback."""
    # The coroutine is created at commit time: a rollback leaves nothing un-awaited behind.
    transaction.on_commit(lambda: bus.submit(helper(*args, **kwargs), ordered=True))


def emit_on_commit(event: str, data: Any, *, room: str) -> None:
    """From sync code: send ``event`` to ``room`` once the current transaction commits; nothing on rollback."""
    if not isinstance(room, str) or not room:
        raise ValueError(f"emit of {event!r} without a room refused")  # said here, where the caller is
    run_on_commit(bus.emit, event, data, room=room)


def emit_now_ignoring_transaction(event: str, data: Any, *, room: str) -> None:
    """From sync code: send ``event`` to ``room`` at once, even inside a transaction that may still roll back.

    For what is not database state (a progress tick, a notice); a model change goes ``emit_on_commit``.
    """
    bus.submit(bus.emit(event, data, room=room), ordered=True)


async def leave_rooms(pairs: Iterable[tuple[int, str]]) -> None:
    """Take each ``(user_id, room)`` user's connections out of that room, on every node."""
    for user_id, room in pairs:
        await bus.leave(members_of=rooms.user(user_id), room=room)


def leave_rooms_on_commit(pairs: Iterable[tuple[int, str]]) -> None:
    """``leave_rooms`` once the current transaction commits (a membership was revoked)."""
    run_on_commit(leave_rooms, list(pairs))


async def close_room(room: str) -> None:
    """Take every connection out of ``room`` (its subject is gone), on every node."""
    await bus.leave(members_of=room, room=room)


def close_room_on_commit(room: str) -> None:
    run_on_commit(close_room, room)


async def disconnect_room(room: str) -> None:
    """Close every connection in ``room`` (a revoked token, a deactivated user), on every node."""
    await bus.disconnect(members_of=room)


def disconnect_on_commit(room: str) -> None:
    run_on_commit(disconnect_room, room)


async def recheck_user(user_id: int) -> None:
    """Each connection of the user leaves every room its room kind no longer allows, on every node."""
    await bus.recheck(members_of=rooms.user(user_id))


def recheck_user_on_commit(user_id: int) -> None:
    """Once committed, each connection of the user leaves every room its room kind no longer allows, on every node."""
    run_on_commit(recheck_user, user_id)


def submit(coro: Coroutine[Any, Any, Any], *, ordered: bool = False) -> None:
    """Run a coroutine on this process's server loop (or to completion here, without one); never waits for delivery.

    ``ordered``: after whatever this thread submitted before in order (as everything sent on commit is).
    """
    bus.submit(coro, ordered=ordered)
