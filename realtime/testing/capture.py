"""Capturing what code broadcasts, with no server (see ``realtime.testing``)."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from django.db import connections

from .. import bus

log = logging.getLogger(__name__)

OP_PREFIX = "realtime:"  # the event name of a recorded room operation: "realtime:leave", ...


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
