"""Testing helpers for projects that use realtime: see what your code broadcasts, and talk to a live server.

Capture broadcasts, no server needed::

    from realtime.testing import capture_broadcasts

    def test_a_new_note_is_announced(db):
        with capture_broadcasts() as sent:
            note = Note.objects.create(board=board, text="hi")
        assert sent == [("note_created", f"board_{board.pk}", note_json(note))]

or, with ``pytest_plugins = ["realtime.testing"]`` in your root ``conftest.py``, the ``broadcasts`` fixture
(the same capture, for the whole test)::

    def test_a_new_note_is_announced(db, broadcasts):
        Note.objects.create(board=board, text="hi")
        assert broadcasts.events() == ["note_created"]

Each entry is a ``Broadcast(event, room, data)``, a named tuple, so it compares equal to a plain tuple. Room
operations are recorded beside emits, ``room`` being the room whose members they address:
``("realtime:leave", members_of, {"room": room})``, ``("realtime:disconnect", members_of, {})`` and
``("realtime:recheck", members_of, {})``.

While a capture is open, every broadcast sent from its thread (``emit``, ``emit_on_commit``, live models, progress
runs, framed snapshots sent to a room, room operations) is recorded instead of delivered: no server, Redis or
remote door is needed, and nothing reaches a connected client. Replies to one connection (acks, a joiner's
snapshot) are not broadcasts and are not recorded. Sync code's emits are recorded by the time it returns (sync
code called on a running event loop schedules them as a task: let the loop run once before reading).

Transactions behave as in production: a rolled-back ``transaction.atomic()`` records nothing. Inside a test
transaction (pytest-django's ``db``, Django's ``TestCase``), which never commits, the on-commit callbacks
registered while capturing are run as ``TestCase.captureOnCommitCallbacks(execute=True)`` would: when the
captured list is read while no atomic block of your own is open (as if each statement had committed), and
when the ``with`` block ends. Under ``transactional_db`` the real commits run them, so there open the capture
outside your own ``transaction.atomic()``: a callback still pending when the capture closes runs at that
commit, after the capture, and is delivered rather than recorded.

Talk to a live server (a real uvicorn in a thread, and python-socketio's client)::

    server = LiveServer().start()          # serves settings.ASGI_APPLICATION on a free loopback port
    client = await connect(server.url, token=token)          # or cookies={"sessionid": ...}
    assert (await client.call("join_board", {"board_id": 1}))["ok"]
    note = await client.wait_for("note_created", lambda note: note["text"] == "hi")
    await client.close(); server.stop()

realtime delivers in-process to the one server its process runs, so start one ``LiveServer`` per test process
(a session-scoped fixture), and give tests that use it ``transactional_db``: the server's threads only see
committed rows.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

import socketio
import uvicorn
from django.db import connections

from . import bus

log = logging.getLogger(__name__)

__all__ = [
    "Broadcast",
    "Broadcasts",
    "ConnectionRefused",
    "LiveServer",
    "SocketClient",
    "broadcasts",
    "capture_broadcasts",
    "connect",
    "free_port",
]

OP_PREFIX = "realtime:"  # the event name of a recorded room operation: "realtime:leave", ...


# ---------------------------------------------------------------------------------------------- capturing


class Broadcast(NamedTuple):
    """One recorded emit or room operation."""

    event: str
    room: str
    data: Any


def _as_broadcast(message: dict[str, Any]) -> Broadcast:
    """A bus message (``bus._capture``'s argument) as ``(event, room, data)``."""
    if message["op"] == "emit":
        return Broadcast(message["event"], message["room"], message["data"])
    rest = {key: value for key, value in message.items() if key not in ("op", "members_of")}
    return Broadcast(OP_PREFIX + message["op"], message["members_of"], rest)


class _PendingOnCommit:
    """The on-commit callbacks that a test transaction holds back, run from where a capture started.

    Django keeps them in ``connection.run_on_commit`` until the outermost atomic block commits; a test
    transaction never does, so they would never run. Like ``captureOnCommitCallbacks`` this runs the ones
    registered since ``start``; a rolled-back block has already removed its own from the list.
    """

    def __init__(self) -> None:
        self.thread = threading.get_ident()  # connections are per thread: only this thread's test transaction
        # What was registered before the capture is not its own. A test transaction that starts later (the
        # ``db`` fixture set up after ``broadcasts``) starts with an empty list: its mark is 0.
        self.marks = {conn.alias: len(conn.run_on_commit) for conn in connections.all(initialized_only=True) if _in_test_transaction(conn)}

    def run(self, *, inside_atomic: bool) -> None:
        """Run the callbacks registered since the last run; only at "committed" points unless ``inside_atomic``."""
        if threading.get_ident() != self.thread:
            return
        for conn in connections.all(initialized_only=True):
            if not _in_test_transaction(conn) or (not inside_atomic and len(conn.atomic_blocks) > _test_blocks(conn)):
                continue
            start = min(self.marks.get(conn.alias, 0), len(conn.run_on_commit))
            # A callback may register more (run_on_commit does): run until none is added, as Django does.
            while start < len(conn.run_on_commit):
                end = len(conn.run_on_commit)
                for _savepoints, callback, robust in conn.run_on_commit[start:end]:
                    if robust:
                        try:
                            callback()
                        except Exception:
                            log.exception("on-commit callback %r failed", callback)
                    else:
                        callback()
                start = end
            self.marks[conn.alias] = start


def _test_blocks(conn: Any) -> int:
    return sum(1 for block in conn.atomic_blocks if getattr(block, "_from_testcase", False))


def _in_test_transaction(conn: Any) -> bool:
    """True when the outermost open atomic block is a test case's: then nothing registered now will ever commit."""
    return bool(conn.atomic_blocks) and getattr(conn.atomic_blocks[0], "_from_testcase", False)


class Broadcasts:
    """What a capture recorded, in order: a sequence of ``Broadcast(event, room, data)``.

    Reading it first runs the on-commit callbacks a test transaction holds back (see the module's docstring).
    """

    def __init__(self, pending: _PendingOnCommit) -> None:
        self._pending = pending
        self._items: list[Broadcast] = []
        self._lock = threading.Lock()  # a server loop or a worker thread may record while the test reads

    def _record(self, item: Broadcast) -> None:
        with self._lock:
            self._items.append(item)

    def _settle(self) -> list[Broadcast]:
        self._pending.run(inside_atomic=False)
        with self._lock:
            return list(self._items)

    def all(self) -> list[Broadcast]:
        """Every recorded broadcast and room operation, oldest first."""
        return self._settle()

    def events(self, *, room: str | None = None) -> list[str]:
        """The event names, oldest first (only those sent to ``room`` when given)."""
        return [b.event for b in self._settle() if room is None or b.room == room]

    def data(self, event: str, *, room: str | None = None) -> list[Any]:
        """The payloads of ``event``, oldest first (only those sent to ``room`` when given)."""
        return [b.data for b in self._settle() if b.event == event and (room is None or b.room == room)]

    def clear(self) -> None:
        """Forget what was recorded so far (the on-commit callbacks already due are run and recorded first)."""
        self._settle()
        with self._lock:
            self._items.clear()

    def __iter__(self) -> Iterator[Broadcast]:
        return iter(self._settle())

    def __len__(self) -> int:
        return len(self._settle())

    def __getitem__(self, index: int) -> Broadcast:
        return self._settle()[index]

    def __contains__(self, item: object) -> bool:
        return item in self._settle()

    def __eq__(self, other: object) -> bool:
        return self._settle() == (list(other) if isinstance(other, list | tuple) else other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Broadcasts({self._settle()!r})"


# The captures open in this context, outermost first: a message is recorded by each of them.
_open: contextvars.ContextVar[tuple[Broadcasts, ...]] = contextvars.ContextVar("realtime_open_captures", default=())


def _fan_out(message: dict[str, Any]) -> None:
    item = _as_broadcast(message)
    for capture in _open.get():
        capture._record(item)


@contextmanager
def capture_broadcasts() -> Iterator[Broadcasts]:
    """Record every broadcast and room operation sent from this thread instead of delivering it, for the ``with`` block.

    Yields a ``Broadcasts``; captures may nest (each records what was sent while it was open).
    """
    captured = Broadcasts(_PendingOnCommit())
    # Context variables: this thread's context (and the tasks it starts), never work that another thread
    # or the server's loop already had in hand, which is delivered as usual.
    opened = _open.set((*_open.get(), captured))
    token = bus._capture.set(_fan_out)
    try:
        yield captured
    finally:
        try:
            captured._pending.run(inside_atomic=True)  # the block's callbacks, as captureOnCommitCallbacks(execute=True)
        finally:
            bus._capture.reset(token)
            _open.reset(opened)


try:
    import pytest
except ImportError:  # pragma: no cover - the helpers work without pytest; only the fixture needs it
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def broadcasts() -> Iterator[Broadcasts]:
        """Every broadcast and room operation of the test, recorded instead of delivered (``capture_broadcasts``)."""
        with capture_broadcasts() as captured:
            yield captured


# ------------------------------------------------------------------------------------------ live server


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_app() -> str:
    from django.conf import settings

    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        raise ValueError("LiveServer needs an app: pass app='mysite.asgi:application' or set ASGI_APPLICATION")
    module, _, attribute = path.rpartition(".")
    return f"{module}:{attribute}"  # uvicorn spells "module:attribute"


class LiveServer:
    """A real uvicorn serving an ASGI app on a free loopback port, in a thread of this process.

    In the same process, so the test's ORM writes reach it through realtime's in-process path. ``app`` is
    uvicorn's ``"module:attribute"``; by default ``settings.ASGI_APPLICATION``.
    """

    def __init__(self, app: str | None = None, *, start_timeout: float = 20.0) -> None:
        self.app = app or _default_app()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="uvicorn", daemon=True)

    def start(self) -> LiveServer:
        """Start serving; returns once uvicorn accepts connections (``RuntimeError`` if it could not start)."""
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start serving {self.app}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving (the app's shutdown hooks run) and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------- clients


class ConnectionRefused(Exception):
    """The server refused the Socket.IO connection (a ``connect_error``): ``message`` is its reason."""

    def __init__(self, message: str, data: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class SocketClient:
    """python-socketio's ``AsyncClient`` for tests: acks as return values, received events kept in order."""

    def __init__(self) -> None:
        self._sio = socketio.AsyncClient(reconnection=False)
        self._cond = asyncio.Condition()
        self._pending: list[tuple[str, Any]] = []  # received, not yet taken by wait_for
        self._received: dict[str, list[Any]] = collections.defaultdict(list)
        self._sio.on("*", self._on_event)
        self._sio.on("connect_error", self._on_connect_error)
        self._refusal: Any = None
        self.sid: str | None = None

    async def _on_connect_error(self, data: Any = None) -> None:
        self._refusal = data

    async def _on_event(self, event: str, *args: Any) -> None:
        first = args[0] if args else None
        async with self._cond:
            self._pending.append((event, first))
            self._received[event].append(first)
            self._cond.notify_all()

    @property
    def connected(self) -> bool:
        return self._sio.connected

    async def connect(
        self,
        url: str,
        *,
        auth: dict | None = None,
        headers: dict | None = None,
        transports: list[str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Connect to ``url``; ``ConnectionRefused`` with the server's reason when it refuses."""
        try:
            await self._sio.connect(url, auth=auth, headers=headers or {}, transports=transports, wait_timeout=timeout)
        except socketio.exceptions.ConnectionError as error:
            info = self._refusal
            message = info.get("message") if isinstance(info, dict) else str(error)
            raise ConnectionRefused(message, info) from None
        self.sid = self._sio.sid

    async def call(self, event: str, *args: Any, timeout: float = 5.0) -> Any:
        """Send ``event`` with its payload and return the server's acknowledgement (``TimeoutError`` without one)."""
        data: Any = args[0] if len(args) == 1 else (tuple(args) if args else None)
        try:
            return await self._sio.call(event, data, timeout=timeout)
        except socketio.exceptions.TimeoutError:
            raise TimeoutError(f"no ack for {event!r} within {timeout}s") from None

    async def send(self, event: str, *args: Any) -> None:
        """Send ``event`` without waiting for an acknowledgement."""
        await self._sio.emit(event, args[0] if len(args) == 1 else (tuple(args) if args else None))

    async def wait_for(self, event: str, predicate: Callable[[Any], bool] | None = None, timeout: float = 5.0) -> Any:
        """The oldest received ``event`` (matching ``predicate``) not yet taken, waiting up to ``timeout`` for it."""

        def find() -> int | None:
            for i, (name, arg) in enumerate(self._pending):
                if name == event and (predicate is None or predicate(arg)):
                    return i
            return None

        try:
            async with asyncio.timeout(timeout):
                async with self._cond:
                    while (index := find()) is None:
                        await self._cond.wait()
                    return self._pending.pop(index)[1]
        except TimeoutError:
            seen = [name for name, _ in self._pending]
            raise TimeoutError(f"event {event!r} not received within {timeout}s (pending: {seen})") from None

    def received(self, event: str) -> list[Any]:
        """Every payload of ``event`` received so far, taken by ``wait_for`` or not."""
        return list(self._received.get(event, ()))

    async def disconnect(self) -> None:
        if self._sio.connected:
            await self._sio.disconnect()

    async def close(self) -> None:
        await self.disconnect()

    async def __aenter__(self) -> SocketClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect(
    url: str,
    *,
    token: str | None = None,
    cookies: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    transports: list[str] | None = None,
) -> SocketClient:
    """A connected ``SocketClient``, authenticated by an API ``token`` or by ``cookies`` (e.g. the session's).

    ``ConnectionRefused`` when the server refuses (its ``message`` says why). Close it with ``await client.close()``
    or ``async with await connect(...) as client``.
    """
    sent = dict(headers or {})
    if cookies:
        sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    client = SocketClient()
    await client.connect(url, auth={"token": token} if token is not None else None, headers=sent, transports=transports)
    return client
