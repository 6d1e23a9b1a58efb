"""Where long operations are looked up: apps register a source per kind of progress room.

``subscribe_progress`` asks the ``"project"`` source, ``crawl_subscribe`` the
``"crawl"`` source. A source answers who started the operation and its current
state, so a late subscriber sees where it stands.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Operation:
    started_by_id: int | None
    state: dict[str, Any] | None  # the payload of the latest progress event, if any

    def may_watch(self, user: Any) -> bool:
        """Its starter and staff may watch (and stop) an operation; nobody else."""
        return may_watch(self.started_by_id, user)


def may_watch(started_by_id: int | None, user: Any) -> bool:
    """The rule for any operation with a starter: the starter, or staff."""
    return started_by_id == user.pk or user.is_staff


Lookup = Callable[[str], Operation | None]  # sync: may use the ORM
Live = Callable[[str], dict[str, Any] | None]  # in memory, called on the event loop: must not block

_sources: dict[str, Lookup] = {}
_live: dict[str, Live] = {}


def register(kind: str, lookup: Lookup, live: Live | None = None) -> None:
    """Called from an app's ``ready()``: ``lookup(progress_id)`` finds its operations.

    ``live(progress_id)``, when given, returns the last state sent by an operation
    running in this process: read with no await before the snapshot is emitted, so
    the snapshot can never overtake a newer live event.
    """
    _sources[kind] = lookup
    if live is not None:
        _live[kind] = live


def find(kind: str, progress_id: str) -> Operation | None:
    lookup = _sources.get(kind)
    return lookup(progress_id) if lookup else None


def live_state(kind: str, progress_id: str) -> dict[str, Any] | None:
    live = _live.get(kind)
    return live(progress_id) if live else None
