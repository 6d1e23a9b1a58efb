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


Lookup = Callable[[str], Operation | None]  # sync: may use the ORM

_sources: dict[str, Lookup] = {}


def register(kind: str, lookup: Lookup) -> None:
    """Called from an app's ``ready()``: ``lookup(progress_id)`` finds its operations."""
    _sources[kind] = lookup


def find(kind: str, progress_id: str) -> Operation | None:
    lookup = _sources.get(kind)
    return lookup(progress_id) if lookup else None
