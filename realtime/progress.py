"""Long operations, watched live: one pipeline for every kind (crawls, tracked imports, yours).

A ``ProgressKind`` is a room kind (subscribe / unsubscribe events, keyed by
``progress_id``) plus the runs of this process:

* ``async with kind.run(progress_id, persist=save) as run``: ``await run.update(state)``
  is coalesced (at most ~10 events a second, never a lost first, status change or
  final state; percentages never move backwards), persisted by ``save`` before it
  is sent, and remembered, so a subscriber gets the current state at once;
  ``await run.close(final)`` sends the final state after anything held.
* subscribing: the starter or staff only (``may_watch``); the state of a run in this
  process (no await before it is sent) or else the stored one (``lookup``).
* stopping: ``kind.stop_local(progress_id)`` stops a run of this process (thread-safe);
  ``run.stop_requested`` tells the work to wind down.

Payloads are built by ``ProgressState.payload`` (subclass it to add fields): camelCase,
a timestamp, fields that are None left out.
"""

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any
from uuid import UUID

from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from . import bus
from .progress_stream import ProgressStream, State
from .room_kinds import RoomKind, room_kind
from .snapshots import Snapshot

log = logging.getLogger(__name__)


class ProgressState(BaseModel):
    """The fields every progress event has; subclass it to add a kind's own."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)
    progress_id: UUID
    status: str
    percentage: float
    log: str
    error: str | None = None
    timestamp: datetime = Field(default_factory=timezone.now)

    @classmethod
    def payload(cls, **fields: Any) -> State:
        """The event's JSON: validated, camelCase, None fields left out."""
        return cls.model_validate(fields).model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass(frozen=True)
class Operation:
    """What a kind's ``lookup`` answers: who started it, and its stored state (None: nothing sent yet)."""

    started_by_id: int | None
    state: State | None


def runner_id() -> str:
    """This process, as recorded on the operations it runs ("host:pid"): a later start can tell whether it died."""
    return f"{socket.gethostname()}:{os.getpid()}"


def runner_gone(runner: str) -> bool:
    """True if ``runner`` ("host:pid") is a process of this host that no longer runs (or is this one, just started).

    Another machine's runner cannot be told from here (False): only the operation's heartbeat can.
    """
    host, _, pid = runner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True  # at our start, an operation "run" by our pid was left by an earlier process with the same pid
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, under another user
    return False


def may_watch(started_by_id: int | None, user: Any) -> bool:
    """The rule for any operation with a starter: the starter, or staff, may watch and stop it."""
    return started_by_id == user.pk or bool(user.is_staff)


class ProgressRun:
    """One operation running in this process (see the module's docstring)."""

    def __init__(self, kind: "ProgressKind", progress_id: str, persist: Callable[[State], Awaitable[None]] | None) -> None:
        self.kind, self.progress_id, self._persist = kind, progress_id, persist
        self.state: State | None = None  # the last state sent: what a new subscriber gets at once
        self.stop_requested = False
        self._on_stop: list[Callable[[], None]] = []
        self._loop = asyncio.get_running_loop()
        self._stream = ProgressStream(self._send)

    async def __aenter__(self) -> "ProgressRun":
        self.kind._runs[self.progress_id] = self
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self.kind._runs.get(self.progress_id) is self:
            del self.kind._runs[self.progress_id]

    async def update(self, state: State, *, force: bool = False) -> None:
        """Offer a new state: sent now if due (or a status change, or ``force``), else held briefly."""
        await self._stream.update(state, force=force)

    async def close(self, final: State) -> None:
        """Send the final state, after anything held (which it replaces)."""
        await self._stream.close(final)

    async def emit(self, event: str, data: Any) -> None:
        """Another event to this operation's watchers (e.g. ``crawl:stopped``)."""
        await bus.emit(event, data, room=self.kind.room(self.progress_id))

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the run's loop when a stop is asked (at once if it already was)."""
        self._on_stop.append(callback)
        if self.stop_requested:
            callback()

    def stop(self) -> None:
        """Ask the run to stop: at once on the run's own loop, else (any other thread) as soon as that loop runs."""
        try:
            here = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            here = False
        if here:
            self._stop()
        else:
            self._loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        if self.stop_requested:
            return
        self.stop_requested = True
        for callback in self._on_stop:
            callback()

    async def _send(self, state: State) -> None:
        if self._persist is not None:
            try:
                await self._persist(state)  # stored first: a late subscriber reads the same
            except Exception:  # noqa: BLE001  (the watchers are told anyway: a lost save must not lose the event too)
                log.exception("progress %s: storing a state failed; it is sent all the same", self.progress_id)
        self.state = state  # no await between this and the emit: a subscriber gets this or a newer one
        await bus.emit(self.kind.event, state, room=self.kind.room(self.progress_id))


class ProgressKind:
    """A kind of long operation; see the module's docstring."""

    def __init__(self, *, subscribe: str, unsubscribe: str, event: str, lookup: Callable[[str], Operation | None]) -> None:
        self.event, self._lookup = event, lookup
        self._runs: dict[str, ProgressRun] = {}  # this process's runs (process state, not client state)
        self.room_kind: RoomKind = room_kind(
            join=subscribe,
            leave=unsubscribe,
            key="progress_id",
            may_join=self._may_join,
            snapshot=self._stored,
            live_snapshot=self._live,
            refusal="unknown progress id",  # the same answer for unknown and someone else's
        )

    def room(self, progress_id: UUID | str) -> str:
        return self.room_kind.room(progress_id)

    def find(self, progress_id: UUID | str) -> Operation | None:
        """Sync (ORM): the operation, wherever it runs, or None."""
        return self._lookup(str(progress_id))

    def run(self, progress_id: UUID | str, *, persist: Callable[[State], Awaitable[None]] | None = None) -> ProgressRun:
        """A run of this process, to use as ``async with``; ``persist(state)`` stores each state before it is sent."""
        return ProgressRun(self, str(progress_id), persist)

    def running(self, progress_id: UUID | str) -> ProgressRun | None:
        return self._runs.get(str(progress_id))

    def stop_local(self, progress_id: UUID | str) -> bool:
        """Stop the run if this process has it (thread-safe); False if it runs elsewhere or not at all."""
        run = self._runs.get(str(progress_id))
        if run is not None:
            run.stop()
        return run is not None

    def _may_join(self, user: Any, progress_id: UUID) -> bool:
        operation = self.find(progress_id)
        return operation is not None and may_watch(operation.started_by_id, user)

    def _stored(self, user: Any, progress_id: UUID) -> Snapshot | None:
        operation = self.find(progress_id)
        return Snapshot(self.event, operation.state) if operation is not None and operation.state is not None else None

    def _live(self, progress_id: UUID) -> Snapshot | None:
        run = self._runs.get(str(progress_id))
        return Snapshot(self.event, run.state) if run is not None and run.state is not None else None


def progress_kind(*, subscribe: str, unsubscribe: str, event: str, lookup: Callable[[str], Operation | None]) -> ProgressKind:
    """Declare a kind of long operation: its subscribe / unsubscribe events, its progress event, and ``lookup(progress_id)``."""
    return ProgressKind(subscribe=subscribe, unsubscribe=unsubscribe, event=event, lookup=lookup)
