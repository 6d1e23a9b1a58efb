"""Writes. Each service is one transaction; broadcasts follow on commit via realtime's receivers.

``QuerySet.update()`` bypasses model signals and therefore sends nothing: use the
services here (for example ``tasks_reorder``) for bulk moves, so every change is saved
through ``Model.save()`` and reaches the watchers.
"""

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from .models import Project, ProjectImport, Task

User = get_user_model()


def _members(usernames: Sequence[str]) -> list[AbstractBaseUser]:
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
def project_update(*, project: Project, member_usernames: Sequence[str] | None = None, **fields: Any) -> Project:
    """Change a project's fields and, when given, replace its member list."""
    for name, value in fields.items():
        setattr(project, name, value)
    project.full_clean()
    project.save()
    if member_usernames is not None:
        project.members.set(_members(member_usernames))
    return project


@transaction.atomic
def project_delete(*, project: Project) -> None:
    project.delete()


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


@transaction.atomic
def task_update(*, task: Task, archived: bool | None = None, **fields: Any) -> Task:
    """Change a task's fields; archiving stamps ``archived_at``."""
    if "parent_task_id" in fields:
        _check_parent(task.project_id, fields["parent_task_id"])
        _check_no_cycle(task, fields["parent_task_id"])
    for name, value in fields.items():
        setattr(task, name, value)
    _archive_stamp(task, archived)
    task.full_clean()
    task.save()
    return task


@transaction.atomic
def task_delete(*, task: Task) -> None:
    task.delete()


@transaction.atomic
def tasks_reorder(*, project: Project, task_ids: Sequence[UUID | str]) -> list[Task]:
    """Give the listed tasks ``task_order`` 0, 1, 2… in that order; every moved task broadcasts.

    Saves each changed task (no ``QuerySet.update()``), so each gets a new version
    and a ``task_updated`` event once the transaction commits.
    """
    duplicates = sorted({str(i) for i in task_ids if list(map(str, task_ids)).count(str(i)) > 1})
    if duplicates:
        raise ValidationError({"task_ids": [f"listed more than once: {i}" for i in duplicates]})
    tasks = {str(t.pk): t for t in Task.objects.select_for_update().filter(project=project, pk__in=task_ids)}
    unknown = [str(i) for i in task_ids if str(i) not in tasks]
    if unknown:
        raise ValidationError({"task_ids": [f"not a task of this project: {i}" for i in unknown]})
    moved = []
    for order, task_id in enumerate(task_ids):
        task = tasks[str(task_id)]
        if task.task_order != order:
            task.task_order = order
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
