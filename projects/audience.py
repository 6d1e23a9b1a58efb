"""Who sees which project changed: on commit, resend the affected users' project lists and revoke lost rooms.

Every change to projects, members or users of one transaction is collected and sent
once, when it commits: rooms first (whoever lost a project leaves its room), lists
second (whoever receives a list without a project is already out of its room).
"""

import asyncio
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from realtime import close_room_on_commit, emit_frames, leave_rooms, m2m_changed_ids, snapshot_frames, submit

from . import selectors
from .models import Project
from .schemas import project_json


def list_room(user_id: int) -> str:
    """The user's connections that subscribed to ``project_list`` (each user sees their own list)."""
    return f"project_list_user_{user_id}"


def project_room(project_id: UUID | str) -> str:
    from .live import PROJECT  # imported here: live.py imports this module for its receivers

    return PROJECT.room(project_id)


@dataclass
class _Changes:
    project_ids: set[UUID] = field(default_factory=set)
    user_ids: set[int] = field(default_factory=set)  # may have lost access: checked at commit
    audience: set[int] = field(default_factory=set)  # saw a now-deleted project


# Changes of the current transaction, per thread (each thread has its own connection).
# After a rollback they linger until the thread's next commit, which then sends one
# extra refresh: harmless, since lists and access are read fresh at that moment.
_pending = threading.local()


def access_changed(*, project_ids: Iterable[UUID | str], user_ids: Iterable[int] = (), audience: Iterable[int] = ()) -> None:
    """Projects or who may see them changed: on commit, resend the lists and revoke lost rooms (once per transaction)."""
    changes = getattr(_pending, "access", None) or _Changes()
    _pending.access = changes
    changes.project_ids.update(p if isinstance(p, UUID) else UUID(str(p)) for p in project_ids)
    changes.user_ids.update(user_ids)
    changes.audience.update(audience)
    # Registered every time (the flush is idempotent): a callback dropped with a
    # rolled-back savepoint must not take the rest of the transaction's changes with it.
    transaction.on_commit(_flush)


def _flush() -> None:
    changes, _pending.access = getattr(_pending, "access", None), None
    if changes is None:
        return
    concerned = changes.user_ids | changes.audience | selectors.project_audience_ids(project_ids=changes.project_ids)
    lists: dict[int, list[dict[str, Any]]] = {}
    revoked: list[tuple[int, str]] = []
    for user in selectors.users_by_ids(user_ids=concerned):
        visible = list(selectors.visible_projects(user=user))
        lists[user.pk] = [project_json(p) for p in visible]
        if user.pk in changes.user_ids:
            seen = {p.pk for p in visible}
            revoked += [(user.pk, project_room(pid)) for pid in changes.project_ids if pid not in seen]
    if lists or revoked:
        submit(_send(lists, revoked), ordered=True)  # after the rechecks committed before it (realtime's revocations)


async def _send(lists: dict[int, list[dict[str, Any]]], revoked: list[tuple[int, str]]) -> None:
    if revoked:
        await leave_rooms(revoked)
    if lists:
        async with _ordered():
            framed = await asyncio.to_thread(_frame, lists)
            for user_id, frames in framed.items():
                await emit_frames("projects_update", frames, room=list_room(user_id))


def _frame(lists: Mapping[int, list[dict[str, Any]]]) -> dict[int, list[dict[str, Any]]]:
    return {user_id: snapshot_frames({}, "projects", projects) for user_id, projects in lists.items()}


# Lists are framed in a worker thread; this lock (one per event loop, taken in submission
# order) keeps them in the order they were submitted, so an older list never lands last.
_order: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def _ordered() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _order.get(loop)
    if lock is None:
        lock = _order[loop] = asyncio.Lock()
    return lock


def project_saved(project: Project) -> None:
    previous_owner = getattr(project, "_loaded_owner_id", None)
    access_changed(project_ids=[project.pk], user_ids={previous_owner} - {None, project.owner_id})
    project._loaded_owner_id = project.owner_id


def project_deleting(project: Project) -> None:
    # Captured now: after the delete nobody can be found through the project any more.
    project._realtime_audience = selectors.project_audience_ids(project_ids=[project.pk])


def project_deleted(project: Project) -> None:
    access_changed(project_ids=[], audience=getattr(project, "_realtime_audience", ()))
    close_room_on_commit(project_room(project.pk))


def members_changed(instance: Project | AbstractBaseUser, *, action: str, reverse: bool, pk_set: set[Any] | None) -> None:
    """``Project.members`` changed from either side (``project.members`` or ``user.projects``)."""
    changed = m2m_changed_ids(instance, action=action, pk_set=pk_set, related="projects" if reverse else "members")
    if changed is None:
        return
    if reverse:  # instance is a user, changed holds project ids
        access_changed(project_ids=changed, user_ids={instance.pk})
    else:  # instance is a project, changed holds user ids
        access_changed(project_ids=[instance.pk], user_ids=changed)


def user_saved(user: AbstractBaseUser, *, update_fields: Iterable[str] | None) -> None:
    """A user changed (staff, activity): their list is sent again. A login alone changes nothing they see."""
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return
    if user.is_active:
        access_changed(project_ids=[], user_ids={user.pk})
