"""Per-room sequence numbers and a bounded recent history: a client that reconnects gets just what it missed.

Every broadcast to a recoverable room (a keyed room kind with a snapshot: project tasks,
progress, chat) is stamped ``_live: {room, epoch, seq}``: ``seq`` counts the room's
broadcasts, ``epoch`` names this history (a new one whenever history is lost: a restart).
The last ``REALTIME_HISTORY_SIZE`` broadcasts of each room are kept, for at most
``REALTIME_HISTORY_ROOMS`` rooms and ``REALTIME_HISTORY_BYTES`` of JSON in all (the least
recently used rooms are forgotten first), so a join that names the ``{epoch, seq}`` it saw
last receives the events it missed instead of a snapshot.

One process only: with ``REDIS_URL`` several nodes would number a room's broadcasts each on
their own, so nothing is stamped and every join gets its snapshot (as without recovery).
"""

import itertools
import json
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from django.conf import settings

META = "_live"
Entry = tuple[str, dict[str, Any], int]  # (event, stamped data, its size in bytes of JSON)


class History:
    def __init__(self, *, size: int, rooms: int, budget: int) -> None:
        self.epoch = secrets.token_hex(8)  # this process's history: gone with it
        self.size, self.rooms, self.budget = size, rooms, budget
        self.bytes = 0  # JSON bytes held, all rooms
        self._seq: OrderedDict[str, tuple[str, int]] = OrderedDict()  # room -> (its epoch, its last seq)
        self._log: dict[str, deque[Entry]] = {}
        self._generations = itertools.count(1)

    def current(self, room: str) -> tuple[str, int]:
        """The room's epoch and last sequence number (0: nothing sent to it yet).

        A room's epoch is this history's plus the room's generation: a room forgotten (over a bound)
        and numbered again from 1 has another epoch, so no joiner's old ``since`` can match it.
        """
        found = self._seq.get(room)
        if found is None:
            found = self._seq[room] = (f"{self.epoch}.{next(self._generations)}", 0)
            self._trim()
        return found

    def _trim(self) -> None:
        """Over a bound: forget the least recently used rooms (their next joiners get a snapshot)."""
        while len(self._seq) > self.rooms or (self.bytes > self.budget and len(self._seq) > 1):
            forgotten, _ = self._seq.popitem(last=False)
            self.bytes -= sum(entry[2] for entry in self._log.pop(forgotten, ()))

    def stamp(self, room: str, event: str, data: Any) -> Any:
        """``data`` with its ``_live`` stamp, recorded; data that is not an object goes unstamped."""
        if not isinstance(data, dict):
            return data
        epoch, seq = self.current(room)
        seq += 1
        self._seq.move_to_end(room)  # most recently used last
        self._seq[room] = (epoch, seq)
        stamped = {**data, META: {"room": room, "epoch": epoch, "seq": seq}}
        log = self._log.setdefault(room, deque())
        # Measured once per broadcast (not per recipient): a join is sent what it missed only while that is small.
        size = len(json.dumps(stamped, separators=(",", ":"), default=str))
        log.append((event, stamped, size))
        self.bytes += size
        if len(log) > self.size:
            self.bytes -= log.popleft()[2]
        self._trim()
        return stamped

    def missed(self, room: str, *, epoch: Any, seq: Any, budget: int) -> list[tuple[str, dict[str, Any]]] | None:
        """The events after ``seq``, in order; None when they cannot all be given (another epoch, gone already,
        bad values) or weigh more than ``budget`` bytes of JSON (a snapshot is then cheaper to send)."""
        room_epoch, current = self.current(room)
        if epoch != room_epoch or not isinstance(seq, int) or isinstance(seq, bool):
            return None
        if not 0 <= seq <= current:
            return None
        if seq == current:
            return []
        log = self._log.get(room)
        if not log or log[0][1][META]["seq"] > seq + 1:
            return None  # some are gone already
        missed = [entry for entry in log if entry[1][META]["seq"] > seq]
        if sum(size for _, _, size in missed) > budget:
            return None
        return [(event, data) for event, data, _ in missed]


_history: History | None = None


def _nothing_recoverable(room: str) -> bool:
    return False


_recoverable: Callable[[str], bool] = _nothing_recoverable  # set by room_kinds: rooms of a keyed kind with a snapshot


def history() -> History | None:
    """This process's history, or None when recovery is off (``REDIS_URL``, or ``REALTIME_HISTORY_SIZE`` 0)."""
    global _history
    if settings.REDIS_URL or settings.REALTIME_HISTORY_SIZE <= 0:
        return None
    if _history is None:
        _history = History(
            size=settings.REALTIME_HISTORY_SIZE, rooms=settings.REALTIME_HISTORY_ROOMS, budget=settings.REALTIME_HISTORY_BYTES
        )
    return _history


def recoverable(test: Callable[[str], bool]) -> None:
    global _recoverable
    _recoverable = test


def stamp(room: str, event: str, data: Any) -> Any:
    """Called for every broadcast this server sends to a room: stamped and kept when the room is recoverable."""
    found = history()
    if found is None or not _recoverable(room):
        return data
    return found.stamp(room, event, data)
