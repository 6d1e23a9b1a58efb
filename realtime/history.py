"""Per-room sequence numbers and a bounded recent history: a client that reconnects gets just what it missed.

Every broadcast to a recoverable room (a room of a kind with a snapshot: project tasks,
project lists, progress, chat) is stamped ``_live: {room, epoch, seq}``: ``seq`` counts the
room's broadcasts, ``epoch`` names its history (another one whenever history was lost). The
last ``REALTIME_HISTORY_SIZE`` broadcasts of each room are kept, so a join that names the
``{epoch, seq}`` it saw last (``since``) is sent what it missed instead of a snapshot.

Where it is kept: in this process (``MemoryHistory``, one server process) or, with
``REDIS_URL``, in Redis, shared by every node and surviving their restarts (``redis_history``).
The client managers stamp (``manager``): whatever path a broadcast takes, it is numbered once.
"""

import itertools
import json
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

META = "_live"


@dataclass(frozen=True)
class Position:
    """Where a room's broadcasts stand, as a joiner is told: its epoch, its last seq, and what it missed (None: a snapshot)."""

    epoch: str
    seq: int
    missed: list[tuple[str, dict[str, Any]]] | None = None


def stamped(data: Any, room: str, epoch: str, seq: int) -> dict[str, Any]:
    """``data`` (a JSON object) with its stamp."""
    return {**data, META: {"room": room, "epoch": epoch, "seq": seq}}


def unstamped_object(room: str, data: Any) -> dict[str, Any]:
    """The object a recoverable room's broadcast sends; ``ValueError`` for anything else (it could not be numbered)."""
    if not isinstance(data, dict):
        raise ValueError(f"a broadcast to {room!r} (a recoverable room) must be one JSON object, not {type(data).__name__}")
    return {k: v for k, v in data.items() if k != META}


def size_of(data: Any) -> int:
    return len(json.dumps(data, separators=(",", ":"), default=str))


class MemoryHistory:
    """The history of one server process (no ``REDIS_URL``): gone with it, so its epoch is new at every start.

    Bounded three ways: ``size`` events per room, ``rooms`` rooms (the least recently used
    room is forgotten whole: its next broadcast starts a new epoch), and ``budget`` bytes of
    JSON in all (the oldest events of the least recently used rooms are dropped first; their
    counters stay, so only joiners that needed those events get a snapshot).
    """

    def __init__(self, *, size: int, rooms: int, budget: int, room_budget: int | None = None) -> None:
        self.epoch = secrets.token_hex(8)
        self.size, self.rooms, self.budget = size, rooms, budget
        self.room_budget = budget if room_budget is None else room_budget  # more than a joiner may be sent is never kept
        self.bytes = 0
        self._seq: OrderedDict[str, tuple[str, int]] = OrderedDict()  # room -> (its epoch, its last seq); LRU first
        self._log: dict[str, deque[tuple[str, dict[str, Any], int]]] = {}
        self._generations = itertools.count(1)
        self._generation: dict[int | None, int] = {}  # user id (None: everyone) -> access generation
        self._room_bytes: dict[str, int] = {}

    def _current(self, room: str) -> tuple[str, int]:
        found = self._seq.get(room)
        if found is None:
            # This history's epoch plus the room's generation: a room forgotten and numbered again from 1
            # has another epoch, so no joiner's old ``since`` can match it.
            found = self._seq[room] = (f"{self.epoch}.{next(self._generations)}", 0)
            while len(self._seq) > self.rooms:
                self.forget(next(iter(self._seq)))
        self._seq.move_to_end(room)
        return found

    def forget(self, room: str) -> None:
        """Drop a room's history and counter (its subject is gone, or over a bound)."""
        self._seq.pop(room, None)
        self._room_bytes.pop(room, None)
        self.bytes -= sum(entry[2] for entry in self._log.pop(room, ()))

    async def forget_room(self, room: str) -> None:
        self.forget(room)

    async def replace_epoch(self) -> None:
        self.reset()

    async def generation(self, user_id: int) -> str:
        """The user's access generation (see ``since_tokens``)."""
        return f"{self._generation.get(None, 0)}:{self._generation.get(user_id, 0)}"

    async def bump(self, user_id: int | None) -> None:
        """A user's access may have shrunk (None: anyone's): ``since`` tokens issued before are void."""
        self._generation[user_id] = self._generation.get(user_id, 0) + 1

    def stamp(self, room: str, event: str, data: dict[str, Any]) -> dict[str, Any]:
        epoch, seq = self._current(room)
        seq += 1
        self._seq[room] = (epoch, seq)
        out = stamped(data, room, epoch, seq)
        log = self._log.setdefault(room, deque())
        size = size_of(out)  # measured once per broadcast, not per recipient
        log.append((event, out, size))
        self.bytes += size
        held = self._room_bytes[room] = self._room_bytes.get(room, 0) + size
        while log and (len(log) > self.size or held > self.room_budget):
            dropped = log.popleft()[2]
            self.bytes -= dropped
            held = self._room_bytes[room] = held - dropped
        self._shed()
        return out

    def reset(self) -> None:
        """Broadcasts were lost (a publish that never arrived): a new epoch for every room, no ``since`` from before."""
        self.epoch = secrets.token_hex(8)
        self._seq.clear()
        self._log.clear()
        self._room_bytes.clear()
        self.bytes = 0

    def _shed(self) -> None:
        """Over the byte budget: drop the oldest events, least recently used rooms first (their counters stay)."""
        rooms = iter(list(self._seq))
        while self.bytes > self.budget:
            room = next(rooms, None)
            if room is None:
                return
            log = self._log.get(room)
            while log and self.bytes > self.budget:
                dropped = log.popleft()[2]
                self.bytes -= dropped
                self._room_bytes[room] -= dropped

    async def position(self, room: str, *, since: tuple[str, int] | None, budget: int) -> Position:
        """The room's epoch and last seq; with ``since``, the events after it (None when they cannot all be given)."""
        epoch, seq = self._current(room)
        return Position(epoch, seq, None if since is None else self._missed(room, epoch, seq, since, budget))

    def _missed(self, room: str, epoch: str, seq: int, since: tuple[str, int], budget: int) -> list[tuple[str, dict[str, Any]]] | None:
        if since[0] != epoch or not 0 <= since[1] <= seq:
            return None
        if since[1] == seq:
            return []
        log = self._log.get(room)
        if not log or log[0][1][META]["seq"] > since[1] + 1:
            return None  # some are gone already
        missed = [entry for entry in log if entry[1][META]["seq"] > since[1]]
        if sum(entry[2] for entry in missed) > budget:
            return None  # a snapshot is cheaper to send
        return [(event, data) for event, data, _ in missed]


_memory: MemoryHistory | None = None


def memory() -> MemoryHistory:
    """This process's history (used when ``REDIS_URL`` is not set)."""
    global _memory
    if _memory is None:
        _memory = MemoryHistory(
            size=settings.REALTIME_HISTORY_SIZE,
            rooms=settings.REALTIME_HISTORY_ROOMS,
            budget=settings.REALTIME_HISTORY_BYTES,
            room_budget=settings.REALTIME_SNAPSHOT_FRAME_BYTES,
        )
    return _memory


class Backend(Protocol):
    """Where a serving process keeps history: ``MemoryHistory``, or ``redis_history.RedisHistory``."""

    async def position(self, room: str, *, since: tuple[str, int] | None, budget: int) -> Position: ...
    async def generation(self, user_id: int) -> str: ...
    async def bump(self, user_id: int | None) -> None: ...
    async def forget_room(self, room: str) -> None: ...
    async def replace_epoch(self) -> None: ...


_backend: Backend | None = None


def use(backend: Backend | None) -> None:
    """Called by the client manager when the server starts: the history its broadcasts are numbered in."""
    global _backend
    _backend = backend


def backend() -> Backend:
    return _backend if _backend is not None else memory()


def _nothing_recoverable(room: str) -> bool:
    return False


_recoverable: Callable[[str], bool] = _nothing_recoverable


def set_recoverable(test: Callable[[str], bool]) -> None:
    """Called by ``room_kinds``: which rooms are recoverable (those of a kind with a snapshot)."""
    global _recoverable
    _recoverable = test


def recoverable(room: Any) -> bool:
    """Whether broadcasts to ``room`` are numbered and kept (recovery on)."""
    return settings.REALTIME_HISTORY_SIZE > 0 and isinstance(room, str) and _recoverable(room)
