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
    recheck: set[int] = field(default_factory=set)  # lost a privilege: every room of theirs is checked again


# Changes of the current transaction, per thread (each thread has its own connection).
# After a rollback they linger until the thread's next commit, which then sends one
# extra refresh: harmless, since lists and access are read fresh at that moment.
_pending = threading.local()


def access_changed(
    *, project_ids: Iterable[UUID | str], user_ids: Iterable[int] = (), audience: Iterable[int] = (), recheck: Iterable[int] = ()
) -> None:
    """Projects or who may see them changed: on commit, resend lists and revoke lost rooms.

    ``recheck`` names users who lost a privilege (staff): each of their connections'
    rooms is checked against the database on every node (``ops.recheck``).

    All such changes of one transaction are sent together, once, when it commits.
    """
    changes = getattr(_pending, "access", None) or _AccessChanges()
    _pending.access = changes
    changes.project_ids.update(_uuid(p) for p in project_ids)
    changes.user_ids.update(user_ids)
    changes.audience.update(audience)
    changes.recheck.update(recheck)
    # Registered every time (the flush is idempotent): a callback dropped with a
    # rolled-back savepoint must not take the rest of the transaction's changes with it.
    transaction.on_commit(_flush_access)


def _flush_access() -> None:
    changes, _pending.access = getattr(_pending, "access", None), None
    if changes is None:
        return
    concerned = changes.user_ids | changes.recheck | changes.audience | selectors.project_audience_ids(project_ids=changes.project_ids)
    lists: dict[int, list[dict[str, Any]]] = {}
    revoked: list[tuple[int, str]] = []
    for user in selectors.users_by_ids(user_ids=concerned):
        visible = list(selectors.visible_projects(user=user))
        lists[user.pk] = [project_json(p) for p in visible]
        if user.pk in changes.user_ids:
            seen = {p.pk for p in visible}
            revoked += [(user.pk, rooms.project(pid)) for pid in changes.project_ids if pid not in seen]
    if lists or revoked or changes.recheck:
        bus.submit(_send_access(lists, revoked, sorted(changes.recheck)))


async def _send_access(lists: dict[int, list[dict[str, Any]]], revoked: list[tuple[int, str]], recheck: list[int]) -> None:
    # Rooms first, lists second: whoever receives a list without a project is already out of its room.
    if revoked:
        await broadcasts.revoke_rooms(revoked)
    for user_id in recheck:
        await bus.recheck(members_of=rooms.user(user_id))
    if lists:
        await broadcasts.broadcast_project_update(lists)


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


def _only_login(update_fields: Iterable[str] | None) -> bool:
    return update_fields is not None and set(update_fields) <= {"last_login"}


def user_saving(user: AbstractBaseUser, *, update_fields: Iterable[str] | None) -> None:
    """Before a save: remember what the database holds, so ``user_saved`` sees a lost privilege or a new password."""
    if user._state.adding or user.pk is None or _only_login(update_fields):
        user._realtime_before = None
        return
    # Read, not remembered from loading: exact whatever the instance went through (refresh_from_db, a stale copy).
    user._realtime_before = type(user)._default_manager.filter(pk=user.pk).values("is_staff", "is_superuser", "password").first()


def user_saved(user: AbstractBaseUser, *, update_fields: Iterable[str] | None) -> None:
    """A deactivated user is disconnected; any other change refreshes their project list.

    Losing staff (or superuser) takes their connections out of every room they may no longer
    be in; a new password closes their cookie connections (token connections stay: a token is
    its own credential, revoked on its own).
    """
    before = user.__dict__.pop("_realtime_before", None)
    if _only_login(update_fields):
        return  # a login, nothing they may see has changed
    if not user.is_active:
        on_commit(broadcasts.disconnect_all, rooms.user(user.pk))
        return
    lost_privilege = before is not None and (
        (before["is_staff"] and not user.is_staff) or (before["is_superuser"] and not user.is_superuser)
    )
    access_changed(project_ids=[], user_ids={user.pk}, recheck={user.pk} if lost_privilege else ())
    if before is not None and before["password"] != user.password:
        # Django already refuses those sessions (their auth hash no longer matches); close their sockets too.
        on_commit(broadcasts.disconnect_all, rooms.user_cookies(user.pk))


def user_deleted(user_id: int) -> None:
    """A deleted user's connections are closed (their token and sessions are gone with them)."""
    on_commit(broadcasts.disconnect_all, rooms.user(user_id))


def logged_out(session_key: str | None) -> None:
    """Logout closes the connections authenticated by that browser session (and only those)."""
    if session_key:
        on_commit(broadcasts.disconnect_all, rooms.session(session_key))


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
