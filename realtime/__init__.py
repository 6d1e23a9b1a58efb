"""realtime: live Django over Socket.IO. This module is its public API; the rest of the package is internal.

    from realtime import live_model, room_kind, emit_on_commit

Each application declares its live models, room kinds, client events and progress
kinds in its own ``live.py``, which realtime imports at startup (as the admin does
``admin.py``). Names are resolved on first use, so importing ``realtime`` never
loads Django models before the app registry is ready.

Settings name two of its modules by dotted path, as Django's own do: ``realtime.middleware``
(``MIDDLEWARE``) and ``realtime.urls`` (the URLconf).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

_API = {
    # sending
    "emit": "realtime.broadcast",
    "emit_on_commit": "realtime.broadcast",
    "emit_now_ignoring_transaction": "realtime.broadcast",
    "run_on_commit": "realtime.broadcast",
    "submit": "realtime.broadcast",
    "leave_rooms": "realtime.broadcast",
    "leave_rooms_on_commit": "realtime.broadcast",
    "close_room": "realtime.broadcast",
    "close_room_on_commit": "realtime.broadcast",
    "disconnect_room": "realtime.broadcast",
    "disconnect_on_commit": "realtime.broadcast",
    "recheck_user": "realtime.broadcast",
    "recheck_user_on_commit": "realtime.broadcast",
    "flush": "realtime.remote",
    # declaring
    "live_model": "realtime.live_models",
    "room_kind": "realtime.room_kinds",
    "RoomKind": "realtime.room_kinds",
    "Snapshot": "realtime.snapshots",
    "Frames": "realtime.snapshots",
    "snapshot_frames": "realtime.snapshots",
    "emit_frames": "realtime.snapshots",
    "client_event": "realtime.dispatcher",
    "Client": "realtime.dispatcher",
    "Payload": "realtime.dispatcher",
    "Reject": "realtime.dispatcher",
    "progress_kind": "realtime.progress",
    "ProgressKind": "realtime.progress",
    "ProgressRun": "realtime.progress",
    "ProgressState": "realtime.progress",
    "Operation": "realtime.progress",
    "may_watch": "realtime.progress",
    "runner_id": "realtime.progress",
    "runner_gone": "realtime.progress",
    "at_startup": "realtime.lifecycle",
    "m2m_changed_ids": "realtime.m2m",
    "leave_when_removed": "realtime.m2m",
    # rooms realtime keeps for every connection
    "user_room": "realtime.rooms",
    # credentials and serving
    "token_user": "realtime.tokens",
    "asgi_app": "realtime.asgi",
}
_RENAMED = {"user_room": "user", "token_user": "token_owner"}

__all__ = sorted(_API)

if TYPE_CHECKING:  # what type checkers and editors see: the same names, resolved eagerly
    from .asgi import asgi_app
    from .broadcast import (
        close_room,
        close_room_on_commit,
        disconnect_on_commit,
        disconnect_room,
        emit,
        emit_now_ignoring_transaction,
        emit_on_commit,
        leave_rooms,
        leave_rooms_on_commit,
        recheck_user,
        recheck_user_on_commit,
        run_on_commit,
        submit,
    )
    from .dispatcher import Client, Payload, Reject, client_event
    from .lifecycle import at_startup
    from .live_models import live_model
    from .m2m import leave_when_removed, m2m_changed_ids
    from .progress import (
        Operation,
        ProgressKind,
        ProgressRun,
        ProgressState,
        may_watch,
        progress_kind,
        runner_gone,
        runner_id,
    )
    from .remote import flush
    from .room_kinds import RoomKind, room_kind
    from .rooms import user as user_room
    from .snapshots import Frames, Snapshot, emit_frames, snapshot_frames
    from .tokens import token_owner as token_user


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'realtime' has no attribute {name!r}")
    value = getattr(import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
