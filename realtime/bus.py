"""The one emit entry point: every event and room change leaves this process through here.

Two forms, one path:

* ``await emit(...)`` / ``await leave(...)`` / ``await disconnect(...)`` / ``await recheck(...)`` from async code;
* ``submit(coro)`` runs any of realtime's async helpers from sync code in any
  thread (a request thread under ASGI, a management command, the shell, tests),
  without waiting for delivery.

Inside a process that serves Socket.IO, events go straight to that server's
client manager (which, with Redis, also hands them to the other nodes).
Elsewhere they go to the remote path (see ``remote``): Redis when ``REDIS_URL``
is set, else a signed request to the server running on this machine.
"""

import asyncio
import contextvars
import logging
import threading
from collections.abc import Coroutine
from typing import Any

import socketio

from . import ops, remote

log = logging.getLogger(__name__)

_server: socketio.AsyncServer | None = None
_loop: asyncio.AbstractEventLoop | None = None
_loop_thread: int | None = None
# Strong references, so scheduled emits are not garbage-collected before they run.
_pending: set[asyncio.Future[Any]] = set()


def attach(server: socketio.AsyncServer) -> None:
    """Called by the server on its event loop at startup: from now on this process delivers locally."""
    global _server, _loop, _loop_thread
    _server, _loop, _loop_thread = server, asyncio.get_running_loop(), threading.get_ident()


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
    server = local_server()
    if server is not None:
        await server.emit(event, data, room=room, skip_sid=skip_sid)
    else:
        await remote.publish({"op": "emit", "event": event, "data": data, "room": room})


async def _operate(op: dict[str, Any]) -> None:
    reason = ops.problem(op)
    if reason is not None:
        raise ValueError(f"room operation refused: {reason}")
    server = local_server()
    if server is None:
        await remote.publish(op)
    else:
        await server.manager.publish_op(op)  # this node, and with Redis every other one


async def leave(*, members_of: str, room: str) -> None:
    """Take every connection in room ``members_of`` out of ``room``, on every node."""
    await _operate(ops.leave(members_of=members_of, room=room))


async def disconnect(*, members_of: str) -> None:
    """Close every connection in room ``members_of``, on every node."""
    await _operate(ops.disconnect(members_of=members_of))


async def recheck(*, members_of: str) -> None:
    """Every connection in room ``members_of`` leaves the rooms the database no longer allows it, on every node."""
    await _operate(ops.recheck(members_of=members_of))


async def deliver(message: dict[str, Any]) -> None:
    """Carry out one bus message as written by ``remote`` (emit or a room operation); ``ValueError`` if malformed."""
    reason = ops.problem(message)
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


def submit(coro: Coroutine[Any, Any, Any]) -> None:
    """Run an async emit helper (or any coroutine) from sync code, in any thread, without waiting.

    In a server process it runs on the server's event loop. Calls from one thread
    are delivered in the order they were submitted.
    """
    loop = _loop
    if loop is not None and loop.is_running():
        if threading.get_ident() == _loop_thread:
            _keep(loop.create_task(coro))
        else:
            # A fresh context, not the caller's: a request thread's context (asgiref's
            # per-request executor) must not leak into work that outlives the request.
            loop.call_soon_threadsafe(lambda: _keep(loop.create_task(coro)), context=contextvars.Context())
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        _keep(running.create_task(coro))  # sync code on some other loop: run there
    else:
        asyncio.run(coro)  # no loop at all (command, shell, script): run to completion here
