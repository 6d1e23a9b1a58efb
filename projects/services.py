"""Writes. Each service is one transaction; broadcasts follow on commit via realtime's receivers.

``QuerySet.update()`` bypasses model signals and therefore sends nothing: use the
services here (for example ``tasks_reorder``) for bulk moves, so every change is saved
through ``Model.save()`` and reaches the watchers.
"""

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from typing import Any
from uuid import UUID

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from realtime import runner_gone

from . import selectors
from .models import MAX_MEMBERS, MAX_REORDER_IDS, Project, ProjectImport, Task

User = get_user_model()


class VersionConflict(Exception):
    """The row changed since the client read it (its ``If-Match`` is stale); ``current`` is the row now."""

    def __init__(self, current: Task | Project) -> None:
        super().__init__("version conflict")
        self.current = current


def _check_if_match(current: Task | Project, if_match: Collection[str] | None) -> None:
    """``if_match``: the ETags (``Model.etag``) the client accepts; None writes unconditionally."""
    if if_match is not None and current.etag not in if_match:
        raise VersionConflict(current)


def _field_names(model: type[models.Model], names: Iterable[str]) -> set[str]:
    """Concrete field names (``parent_task_id`` → ``parent_task``); anything else (m2m, DELETE…) is dropped."""
    concrete = {f.name: f.name for f in model._meta.concrete_fields if not f.primary_key}
    concrete |= {f.attname: f.name for f in model._meta.concrete_fields if not f.primary_key}
    return {concrete[n] for n in names if n in concrete}


def _validate_fields(instance: models.Model, names: set[str]) -> None:
    """``full_clean`` of the named fields only: a write is judged by what it changes, not by the rest of the row."""
    instance.full_clean(exclude=[f.name for f in type(instance)._meta.concrete_fields if f.name not in names])


@transaction.atomic
def save_changed_fields(*, instance: models.Model, fields: Iterable[str]) -> None:
    """Write only ``fields`` of an edited (already validated) ``instance``, e.g. an admin form's ``changed_data``.

    Every other field is first re-read under the row lock (SQLite: the IMMEDIATE write lock), so
    neither the row nor the broadcast built from this instance loses what someone else changed meanwhile.
    """
    model = type(instance)
    names = _field_names(model, fields)
    if not names:
        return  # nothing changed: no write, no new version
    others = [f.name for f in model._meta.concrete_fields if not f.primary_key and f.name not in names]
    if others:
        instance.refresh_from_db(fields=others, from_queryset=model._base_manager.select_for_update(of=("self",)))
    instance.save(update_fields=names)


def _members(usernames: Sequence[str]) -> list[AbstractBaseUser]:
    if len(usernames) > MAX_MEMBERS:
        raise ValidationError({"member_usernames": [f"at most {MAX_MEMBERS} members (got {len(usernames)})"]})
    users = list(User.objects.filter(username__in=set(usernames)))
    missing = sorted(set(usernames) - {u.get_username() for u in users})
    if missing:
        raise ValidationError({"member_usernames": [f"unknown user: {name}" for name in missing]})
    return users


@transaction.atomic
def project_create(*, owner: AbstractBaseUser, title: str, member_usernames: Sequence[str] = (), **fields: Any) -> Project:
    """Create a project owned by ``owner``, optionally shared with members."""
    members = _members(member_usernames)
    project = Project(owner=owner, title=title, **fields)
    project.full_clean()
    project.save()
    if members:
        project.members.set(members)
    return project


@transaction.atomic
def project_update(
    *, project: Project, member_usernames: Sequence[str] | None = None, if_match: Collection[str] | None = None, **fields: Any
) -> Project:
    """Change only the named fields of a project and, when given, replace its member list.

    The row is re-read under its lock, so a concurrent change of another field is kept;
    ``if_match`` (``Project.etag`` values) refuses a write based on a stale read: ``VersionConflict``.
    """
    current = Project.objects.select_for_update(of=("self",)).select_related("owner").get(pk=project.pk)
    _check_if_match(current, if_match)
    for name, value in fields.items():
        setattr(current, name, value)
    names = _field_names(Project, fields)
    _validate_fields(current, names)
    if names or member_usernames is not None:
        current.save(update_fields=names)  # Project.save adds updated_at: a member change moves the ETag too
    if member_usernames is not None:
        current.members.set(_members(member_usernames))
    return current


@transaction.atomic
def project_delete(*, project: Project, if_match: Collection[str] | None = None) -> None:
    """Delete a project; with ``if_match``, only if nobody changed it since (else ``VersionConflict``)."""
    current = Project.objects.select_for_update(of=("self",)).select_related("owner").get(pk=project.pk)
    _check_if_match(current, if_match)
    current.delete()


def _archive_stamp(task: Task, archived: bool | None) -> None:
    if archived is None:
        return
    task.archived = archived
    task.archived_at = timezone.now() if archived else None


def _check_parent(project: Project | UUID, parent_task_id: UUID | None) -> None:
    project_id = project.pk if isinstance(project, Project) else project
    if parent_task_id is not None and not Task.objects.filter(pk=parent_task_id, project_id=project_id).exists():
        raise ValidationError({"parent_task_id": ["no such task in this project"]})


def _check_no_cycle(task: Task, parent_task_id: UUID | None) -> None:
    """The new parent may not be the task itself or one of its descendants."""
    seen: set[Any] = set()
    current = parent_task_id
    while current is not None and current not in seen:
        if current == task.pk:
            raise ValidationError({"parent_task_id": ["a task cannot be its own ancestor"]})
        seen.add(current)
        current = Task.objects.filter(pk=current).values_list("parent_task_id", flat=True).first()


@transaction.atomic
def task_create(*, project: Project, title: str, parent_task_id: UUID | None = None, **fields: Any) -> Task:
    """Create a task in ``project``."""
    _check_parent(project, parent_task_id)
    task = Task(project=project, title=title, parent_task_id=parent_task_id, **fields)
    task.full_clean()
    task.save()
    return task


def _locked_task(task: Task | UUID | str, visible_to: AbstractBaseUser | None) -> Task:
    """The task's row read under its lock; with ``visible_to``, only if that user may see it (else ``Task.DoesNotExist``).

    One query for the permission and the locked read: the check cannot go stale before the write.
    """
    tasks = Task.objects.select_for_update()
    if visible_to is not None:
        tasks = tasks.filter(project__in=selectors.visible_projects(user=visible_to).values("pk"))
    return tasks.get(pk=task.pk if isinstance(task, Task) else task)


@transaction.atomic
def task_update(
    *,
    task: Task | UUID | str,
    visible_to: AbstractBaseUser | None = None,
    archived: bool | None = None,
    if_match: Collection[str] | None = None,
    **fields: Any,
) -> Task:
    """Change only the named fields of a task; archiving stamps ``archived_at``. Returns the saved row.

    ``task`` (the task or its id) only says which row: it is re-read under its lock, so a
    concurrent change of another field is kept; ``visible_to`` refuses a task that user may not
    see (``Task.DoesNotExist``, in the same read). ``if_match`` (``Task.etag`` = version values)
    refuses a write based on a stale read: ``VersionConflict``. Nothing named: nothing written.
    """
    current = _locked_task(task, visible_to)
    _check_if_match(current, if_match)
    if "parent_task_id" in fields:
        _check_parent(current.project_id, fields["parent_task_id"])
        _check_no_cycle(current, fields["parent_task_id"])
    for name, value in fields.items():
        setattr(current, name, value)
    names = _field_names(Task, fields)
    if archived is not None:
        _archive_stamp(current, archived)
        names |= {"archived", "archived_at"}
    if not names:
        return current
    _validate_fields(current, names)
    # Read above under the lock, in this transaction: Task.save need not read the version again. Marked only here,
    # just before the save that uses the mark, so an instance returned unsaved carries none.
    current._version_read_under_lock = True
    current.save(update_fields=names)  # Task.save adds version and updated_at
    return current


@transaction.atomic
def task_delete(*, task: Task | UUID | str, visible_to: AbstractBaseUser | None = None, if_match: Collection[str] | None = None) -> None:
    """Delete a task (given as in ``task_update``); with ``if_match``, only if nobody changed it since (else ``VersionConflict``)."""
    current = _locked_task(task, visible_to)
    _check_if_match(current, if_match)
    current.delete()


def _reorder_ids(task_ids: Sequence[UUID | str]) -> list[UUID]:
    """The ids as UUIDs, checked in linear time before any lock is taken: bounded, well-formed, no repeats."""
    if len(task_ids) > MAX_REORDER_IDS:
        raise ValidationError({"task_ids": [f"at most {MAX_REORDER_IDS} ids (got {len(task_ids)})"]})
    try:
        ids = [i if isinstance(i, UUID) else UUID(str(i)) for i in task_ids]
    except ValueError:
        raise ValidationError({"task_ids": ["not a list of task ids"]}) from None
    duplicates = sorted(str(i) for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        shown = [f"listed more than once: {i}" for i in duplicates[:20]]
        raise ValidationError({"task_ids": shown + ([f"…and {len(duplicates) - 20} more"] if len(duplicates) > 20 else [])})
    return ids


def tasks_reorder(*, project: Project, task_ids: Sequence[UUID | str]) -> list[Task]:
    """Give the listed tasks ``task_order`` 0, 1, 2… in that order; every moved task broadcasts.

    Saves each changed task (no ``QuerySet.update()``), so each gets a new version and a
    ``task_updated`` event once the transaction commits. The input is checked first, outside
    the transaction; inside it: one read of the listed rows under the lock, then one save per
    moved task — linear, and the write lock is held no longer than that.
    """
    ids = _reorder_ids(task_ids)
    with transaction.atomic():
        tasks = {t.pk: t for t in Task.objects.select_for_update().filter(project=project, pk__in=ids)}
        unknown = [str(i) for i in ids if i not in tasks]
        if unknown:
            shown = [f"not a task of this project: {i}" for i in unknown[:20]]
            raise ValidationError({"task_ids": shown + ([f"…and {len(unknown) - 20} more"] if len(unknown) > 20 else [])})
        moved = []
        for order, task_id in enumerate(ids):
            task = tasks[task_id]
            if task.task_order != order:
                task.task_order = order
                task._version_read_under_lock = True  # read above, in this transaction, under the lock
                task.save(update_fields=["task_order"])
                moved.append(task)
    return moved


@transaction.atomic
def project_import_create(
    *,
    started_by: AbstractBaseUser,
    project: dict[str, Any],
    template: str | None = None,
    fmt: str | None = None,
    content: str | None = None,
) -> ProjectImport:
    """Record a tracked creation; ``projects.tracked`` runs it and reports progress."""
    if template is None and content is None:
        raise ValidationError({"template": ["give a template or import_tasks"]})
    _members(project.get("member_usernames", ()))  # fail now, not in the background
    request = {"project": project, "template": template, "format": fmt, "content": content}
    return ProjectImport.objects.create(started_by=started_by, request=request, log="queued")


def project_imports_mark_interrupted() -> int:
    """Fail tracked creations left unfinished by a dead process (at server start): ours by pid, anyone's by a stale heartbeat.

    Their watchers then get ``status: "error"``, ``error: "interrupted"`` on subscribe. Returns how many.
    """
    from .tracked import STALE_AFTER  # tracked imports this module

    now = timezone.now()
    unfinished = ProjectImport.objects.exclude(status__in=[ProjectImport.Status.COMPLETED, ProjectImport.Status.ERROR])
    dead = [
        pk
        for pk, runner, updated_at in unfinished.values_list("pk", "request__runner", "updated_at")
        if runner_gone(runner or "") or now - updated_at > STALE_AFTER
    ]
    return ProjectImport.objects.filter(pk__in=dead).update(
        status=ProjectImport.Status.ERROR, step="error", error="interrupted", log="interrupted: its server stopped", updated_at=now
    )
