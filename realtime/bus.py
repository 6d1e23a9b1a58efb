"""The one emit entry point: every event and room change leaves this process through here.

Two forms, one path:

* ``await emit(...)`` / ``await leave(...)`` / ``await disconnect(...)`` / ``await recheck(...)`` from async code;
* ``submit(coro)`` runs any of realtime's async helpers from sync code in any
  thread (a request thread under ASGI, a management command, the shell, tests),
  without waiting for delivery; under ``tracking_sends()`` the caller can wait for
  the ordered ones afterwards (``realtime.middleware``: a response waits for its broadcasts).

Inside a process that serves Socket.IO, events go straight to that server's
client manager (which, with Redis, also hands them to the other nodes).
Elsewhere they go to the remote path (see ``remote``): Redis when ``REDIS_URL``
is set, else a signed request to the server running on this machine.
"""

import asyncio
import concurrent.futures
import contextvars
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import socketio
from django.conf import settings

from . import lost, remote, room_ops, since_tokens

log = logging.getLogger(__name__)

_server: socketio.AsyncServer | None = None
_loop: asyncio.AbstractEventLoop | None = None
_loop_thread: int | None = None
# Strong references, so scheduled emits are not garbage-collected before they run.
_pending: set[asyncio.Future[Any]] = set()
# Set by realtime.testing.capture_broadcasts: while set, every emit and room operation is handed to it as a bus
# message (the shape ``remote`` carries) instead of being delivered, and ``submit`` runs in the caller's thread,
# so a test sees what was sent by the time the code under test returns, with no server running.
# A context variable, not a global: work another thread or the server loop already had in hand (its own
# context) is delivered as usual, so a capture records exactly what the code under it sent.
_capture: contextvars.ContextVar[Callable[[dict[str, Any]], None] | None] = contextvars.ContextVar("realtime_capture", default=None)
# Set by ``tracking_sends`` (for a request: realtime.middleware): one future per ordered submission made under it, done
# once that submission has finished on the server loop, so a response can wait until its broadcasts have left.
_tracked: contextvars.ContextVar[list[concurrent.futures.Future[None]] | None] = contextvars.ContextVar("realtime_tracked", default=None)


def attach(server: socketio.AsyncServer) -> None:
    """Called by the server on its event loop at startup: from now on this process delivers locally."""
    global _server, _loop, _loop_thread, _handed_over
    _server, _loop, _loop_thread = server, asyncio.get_running_loop(), threading.get_ident()
    with _handing:
        _handed_over = 0  # what a previous loop (stopped before starting it) never took is not this one's


def detach() -> None:
    global _server, _loop, _loop_thread
    _server, _loop, _loop_thread = None, None, None


def local_server() -> socketio.AsyncServer | None:
    """The Socket.IO server of this process when called on its event loop, else None."""
    if _server is None:
        return None
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return _server if running is _loop else None


async def emit(event: str, data: Any, *, room: str, skip_sid: str | None = None) -> None:
    """Send ``event`` with ``data`` to every connection in ``room``, on every node."""
    if not isinstance(room, str) or not room:
        # python-socketio reads room None as "everyone": never let a missing room broadcast.
        raise ValueError(f"emit of {event!r} without a room refused")
    if (capture := _capture.get()) is not None:
        capture({"op": "emit", "event": event, "data": data, "room": room})
        return
    server = local_server()
    if server is not None:
        await server.emit(event, data, room=room, skip_sid=skip_sid)  # numbered by its client manager (``history``)
    else:
        await remote.publish({"op": "emit", "event": event, "data": data, "room": room})


async def _operate(op: dict[str, Any]) -> None:
    reason = room_ops.problem(op)
    if reason is not None:
        raise ValueError(f"room operation refused: {reason}")
    if (capture := _capture.get()) is not None:
        capture(op)
        return
    server = local_server()
    if server is None:
        await remote.publish(op)
    else:
        # The operation first (a broadcast sent after it must not overtake it), then the since tokens it voids.
        await server.manager.publish_op(op)  # this node, and with Redis every other one
        try:
            await since_tokens.bump_for(op)
        except Exception as error:  # noqa: BLE001  (Redis away: the epoch is replaced once it is back)
            log.warning("could not void since tokens for %s: %s", room_ops.describe(op), error)


async def leave(*, members_of: str, room: str) -> None:
    """Take every connection in room ``members_of`` out of ``room``, on every node."""
    await _operate(room_ops.leave(members_of=members_of, room=room))


async def disconnect(*, members_of: str) -> None:
    """Close every connection in room ``members_of``, on every node."""
    await _operate(room_ops.disconnect(members_of=members_of))


async def resync(*, room: str | None) -> None:
    """Broadcasts to ``room`` (None: to any room) were lost: a new history for it, and its watchers reload, on every node."""
    await _operate(room_ops.resync(room))


async def recheck(*, members_of: str) -> None:
    """Every connection in room ``members_of`` leaves the rooms the database no longer allows it, on every node."""
    await _operate(room_ops.recheck(members_of=members_of))


async def deliver(message: dict[str, Any]) -> None:
    """Carry out one bus message as written by ``remote`` (emit or a room operation); ``ValueError`` if malformed."""
    reason = room_ops.problem(message)
    if reason is not None:
        raise ValueError(reason)
    if message["op"] == "emit":
        await emit(message["event"], message["data"], room=message["room"])
    else:
        await _operate(message)


def _keep(future: asyncio.Future[Any]) -> None:
    _pending.add(future)
    future.add_done_callback(_done)


def _done(future: asyncio.Future[Any]) -> None:
    _pending.discard(future)
    if not future.cancelled() and future.exception() is not None:
        log.error("broadcast failed", exc_info=future.exception())


# Per submitting thread, its last submission still running on the server loop (touched on the loop only).
_tails: dict[int, asyncio.Task[Any]] = {}
# Every ordered submission still running on the server loop (touched on the loop only): what ``finish_sends`` waits for,
# with those handed to the loop from another thread and not started yet (counted under _handing, from any thread).
_ordered: set[asyncio.Task[Any]] = set()
_handing = threading.Lock()
_handed_over = 0


def _arrived(start: Callable[[], Any]) -> Any:
    """On the server loop: an ordered submission handed over from another thread starts (no longer counted as on its way)."""
    global _handed_over
    with _handing:
        _handed_over -= 1
    return start()


# A submission waits at most this long for its predecessor: order is kept for the short work submitted
# here (emits, room operations, a list framed), and one stuck coroutine cannot hold back a thread's later ones.
IN_TURN_WAIT = 5.0


def _start_now(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(coro)
    _keep(task)
    return task


def _start_after_previous(thread: int, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """On the server loop: run ``coro`` once the thread's previous submission has finished (whatever its outcome)."""
    previous = _tails.get(thread)

    async def in_turn() -> Any:
        if previous is not None and not previous.done():
            await asyncio.wait([previous], timeout=IN_TURN_WAIT)  # never raises: a failed predecessor was logged by _done
            if not previous.done():
                log.warning("a broadcast waited %.0f s for the one submitted before it: sent now, out of order", IN_TURN_WAIT)
        return await coro

    task = asyncio.get_running_loop().create_task(in_turn())
    _tails[thread] = task
    task.add_done_callback(lambda done: _tails.pop(thread) if _tails.get(thread) is done else None)
    _ordered.add(task)
    task.add_done_callback(_ordered.discard)
    _keep(task)
    return task


def _start_and_notify(start: Callable[[], asyncio.Task[Any]], finished: concurrent.futures.Future[None]) -> None:
    """On the server loop: ``start()``, and ``finished`` done when its task is (whatever its outcome: ``_done`` logs it)."""
    try:
        task = start()
    except BaseException:
        finished.set_result(None)
        raise
    task.add_done_callback(lambda _: finished.set_result(None))


def _report_late(late: int) -> None:
    if late:
        waited = settings.REALTIME_RESPONSE_WAIT_SECONDS
        log.warning("an answer waited %.1f s for %d broadcast(s) and went first: they follow", waited, late)


def wait_sent(sent: list[concurrent.futures.Future[None]]) -> None:
    """Sync, never on the server loop: block until ``tracking_sends``'s futures are done (at most REALTIME_RESPONSE_WAIT_SECONDS)."""
    if sent:
        _report_late(len(concurrent.futures.wait(sent, timeout=settings.REALTIME_RESPONSE_WAIT_SECONDS).not_done))


async def all_sent(sent: list[concurrent.futures.Future[None]]) -> None:
    """``wait_sent`` for async code."""
    if sent:
        _, late = await asyncio.wait([asyncio.wrap_future(f) for f in sent], timeout=settings.REALTIME_RESPONSE_WAIT_SECONDS)
        _report_late(len(late))


async def finish_sends(timeout: float) -> int:
    """On the server loop, at shutdown before ``detach``: wait (at most ``timeout`` seconds) for the ordered submissions
    under way (what was sent on commit), including any submitted meanwhile; returns how many were still running then.

    uvicorn ends the process once the lifespan shutdown is over, with no task cancelled: a broadcast still waiting
    (Redis hung) would reach no node, and with nothing recorded no watcher would resync. Waited for, each is delivered
    or recorded as lost. Past ``timeout``, which rooms they were for is unknown: every room is recorded as lost, so
    another server has every watcher resync. Jobs (unordered submissions) are not waited for."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (_ordered or _handed_over) and (left := deadline - loop.time()) > 0:
        if _ordered:
            await asyncio.wait(set(_ordered), timeout=left)
        else:
            await asyncio.sleep(0.001)  # handed over by another thread: its start is queued on this loop
    if not _ordered and not _handed_over:
        return 0
    log.error("shutting down with %d submission(s) sent on commit still under way after %.1f s: every room recorded as lost",
              len(_ordered) + _handed_over, timeout)  # fmt: skip
    await lost.record_rooms_within([""], timeout)
    return len(_ordered) + _handed_over


@contextmanager
def tracking_sends() -> Iterator[list[concurrent.futures.Future[None]]]:
    """While inside: every ordered submission (everything sent on commit) adds a future to the list, done once it
    has finished on the server loop (a broadcast numbered and published by Redis, sent to this node's clients, or
    recorded as lost). The list is shared, not copied, with the contexts ``sync_to_async`` copies from this one."""
    futures: list[concurrent.futures.Future[None]] = []
    token = _tracked.set(futures)
    try:
        yield futures
    finally:
        _tracked.reset(token)


def submit(coro: Coroutine[Any, Any, Any], *, ordered: bool = False) -> None:
    """Run an async emit helper (or any coroutine) from sync code, in any thread, without waiting.

    In a server process it runs on the server's event loop. ``ordered`` submissions of one thread
    (everything sent on commit) are carried out in the order submitted, each after the previous
    one has finished: rooms revoked on commit are left before the list sent after them arrives,
    whatever each of them awaits. Unordered ones (launching a job) start at once.
    """
    global _handed_over
    loop = None if _capture.get() is not None else _loop  # captured: never handed to a server loop in another thread
    if loop is not None and loop.is_running():
        thread = threading.get_ident()
        start: Callable[[], Any] = partial(_start_after_previous, thread, coro) if ordered else partial(_start_now, coro)
        finished: concurrent.futures.Future[None] | None = None
        # Only ordered ones: an unordered submission launches a job, which a response must not wait for.
        if ordered and (tracked := _tracked.get()) is not None:
            finished = concurrent.futures.Future()
            tracked.append(finished)
            start = partial(_start_and_notify, start, finished)
        # A fresh context, not the caller's: a request's context (asgiref's per-request executor, the
        # tracking of its sends) must not leak into work that outlives the request.
        handed = ordered and thread != _loop_thread
        if handed:  # counted before it is handed over: shutdown (``finish_sends``) must not miss it on its way
            with _handing:
                _handed_over += 1
            start = partial(_arrived, start)
        try:
            if thread == _loop_thread:
                contextvars.Context().run(start)
            else:
                loop.call_soon_threadsafe(start, context=contextvars.Context())
        except BaseException:
            if handed:
                with _handing:
                    _handed_over -= 1
            if finished is not None and not finished.done():
                finished.set_result(None)  # never started (the loop is closing): nothing to wait for
            raise
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        _keep(running.create_task(coro))  # sync code on some other loop: run there
    else:
        asyncio.run(coro)  # no loop at all (command, shell, script): run to completion here
