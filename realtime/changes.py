"""From model changes to broadcasts: payloads are built at save time, sent once the transaction commits.

A rolled-back transaction discards its on-commit callbacks, so it never broadcasts.
"""

import threading
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from chat.schemas import message_json
from projects import selectors
from projects.models import Project, Task
from projects.schemas import project_json, task_json

from . import broadcasts, bus, rooms

AsyncHelper = Callable[..., Coroutine[Any, Any, None]]


def on_commit(helper: AsyncHelper, *args: Any, **kwargs: Any) -> None:
    """Run an async emit helper once the current transaction commits (at once in autocommit)."""
    # The coroutine is created at commit time: a rollback leaves nothing un-awaited behind.
    transaction.on_commit(lambda: bus.submit(helper(*args, **kwargs)))


def task_saved(task: Task, *, created: bool) -> None:
    payload = task_json(task)
    on_commit(broadcasts.broadcast_task_update, "task_created" if created else "task_updated", payload, project_id=task.project_id)
    previous = getattr(task, "_loaded_project_id", None)
    if previous is not None and previous != task.project_id:
        # Moved to another project: the old room sees it leave.
        on_commit(
            broadcasts.broadcast_task_update, "task_deleted", {"task_id": str(task.pk), "project_id": str(previous)}, project_id=previous
        )
    task._loaded_project_id = task.project_id


def task_deleted(task: Task) -> None:
    payload = {"task_id": str(task.pk), "project_id": str(task.project_id)}
    on_commit(broadcasts.broadcast_task_update, "task_deleted", payload, project_id=task.project_id)


@dataclass
class _AccessChanges:
    project_ids: set[UUID] = field(default_factory=set)
    user_ids: set[int] = field(default_factory=set)  # may have lost access: checked at commit
    audience: set[int] = field(default_factory=set)  # saw a now-deleted project


# Changes of the current transaction, per thread (each thread has its own connection).
# After a rollback they linger until the thread's next commit, which then sends one
# extra refresh: harmless, since lists and access are read fresh at that moment.
_pending = threading.local()


def access_changed(*, project_ids: Iterable[UUID | str], user_ids: Iterable[int] = (), audience: Iterable[int] = ()) -> None:
    """Projects or who may see them changed: on commit, resend lists and revoke lost rooms.

    All such changes of one transaction are sent together, once, when it commits.
    """
    changes = getattr(_pending, "access", None) or _AccessChanges()
    _pending.access = changes
    changes.project_ids.update(_uuid(p) for p in project_ids)
    changes.user_ids.update(user_ids)
    changes.audience.update(audience)
    # Registered every time (the flush is idempotent): a callback dropped with a
    # rolled-back savepoint must not take the rest of the transaction's changes with it.
    transaction.on_commit(_flush_access)


def _flush_access() -> None:
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
            revoked += [(user.pk, rooms.project(pid)) for pid in changes.project_ids if pid not in seen]
    if lists:
        bus.submit(broadcasts.broadcast_project_update(lists))
    if revoked:
        bus.submit(broadcasts.revoke_rooms(revoked))


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def project_saved(project: Project) -> None:
    previous_owner = getattr(project, "_loaded_owner_id", None)
    access_changed(project_ids=[project.pk], user_ids={previous_owner} - {None, project.owner_id})
    project._loaded_owner_id = project.owner_id


def project_deleting(project: Project) -> None:
    # Captured now: after the delete nobody can be found through the project any more.
    project._realtime_audience = selectors.project_audience_ids(project_ids=[project.pk])


def project_deleted(project: Project) -> None:
    access_changed(project_ids=[], audience=getattr(project, "_realtime_audience", ()))
    on_commit(broadcasts.close_room, rooms.project(project.pk))


def members_changed(instance: Project | AbstractBaseUser, *, action: str, reverse: bool, pk_set: set[Any] | None) -> None:
    """``Project.members`` changed from either side (``project.members`` or ``user.projects``)."""
    changed = _m2m_ids(instance, action=action, pk_set=pk_set, related="projects" if reverse else "members")
    if changed is None:
        return
    if reverse:  # instance is a user, changed holds project ids
        access_changed(project_ids=changed, user_ids={instance.pk})
    else:  # instance is a project, changed holds user ids
        access_changed(project_ids=[instance.pk], user_ids=changed)


def _m2m_ids(instance: Any, *, action: str, pk_set: set[Any] | None, related: str) -> set[Any] | None:
    """The ids on the other side that an ``m2m_changed`` add, remove or clear touched; None for other actions.

    ``related`` names the instance's accessor for the other side: a clear reports no ids
    afterwards, so they are remembered at ``pre_clear``.
    """
    if action == "pre_clear":
        instance._realtime_cleared = set(getattr(instance, related).values_list("pk", flat=True))
        return None
    if action == "post_clear":
        return getattr(instance, "_realtime_cleared", set())
    if action in ("post_add", "post_remove"):
        return set(pk_set or ())
    return None


def token_revoked(token_id: int) -> None:
    on_commit(broadcasts.disconnect_all, rooms.token(token_id))


def user_saved(user: AbstractBaseUser, *, update_fields: Iterable[str] | None) -> None:
    """A deactivated user is disconnected; any other change (staff, say) refreshes their project list."""
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # a login, nothing they may see has changed
    if not user.is_active:
        on_commit(broadcasts.disconnect_all, rooms.user(user.pk))
    else:
        access_changed(project_ids=[], user_ids={user.pk})


def chat_message_saved(message: Any, *, created: bool) -> None:
    if created:
        on_commit(broadcasts.broadcast_chat_message, message.session_id, message_json(message))


def chat_participants_changed(instance: Any, *, action: str, reverse: bool, pk_set: set[Any] | None) -> None:
    """A participant removed (from either side) leaves the session's room at once."""
    changed = _m2m_ids(instance, action=action, pk_set=pk_set, related="chat_sessions" if reverse else "participants")
    if changed is None or action == "post_add":
        return
    pairs = [(instance.pk, rooms.chat(s)) for s in changed] if reverse else [(u, rooms.chat(instance.pk)) for u in changed]
    on_commit(broadcasts.revoke_rooms, pairs)
