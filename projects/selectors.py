"""Reads: who may see what, and the snapshots clients load."""

from collections.abc import Iterable
from uuid import UUID

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from .models import Project, Task

User = get_user_model()


def visible_projects(*, user: AbstractBaseUser) -> QuerySet[Project]:
    """Projects the user may see: owned, shared with them, or all for staff."""
    if not user.is_active:
        return Project.objects.none()
    projects = Project.objects.select_related("owner")
    if user.is_staff:
        return projects.all()
    # A subquery, not a join: a join on members would repeat rows.
    shared = Project.members.through.objects.filter(user_id=user.pk).values("project_id")
    return projects.filter(Q(owner_id=user.pk) | Q(pk__in=shared))


def project_for_user(*, user: AbstractBaseUser, project_id: UUID | str) -> Project:
    """The project if the user may see it; ``Project.DoesNotExist`` otherwise."""
    return visible_projects(user=user).get(pk=project_id)


def can_see_project(*, user: AbstractBaseUser, project_id: UUID | str) -> bool:
    return visible_projects(user=user).filter(pk=project_id).exists()


def project_tasks(*, project_id: UUID | str) -> QuerySet[Task]:
    """The unarchived tasks of a project, in board order."""
    return Task.objects.filter(project_id=project_id, archived=False).order_by("task_order", "created_at")


def task_for_user(*, user: AbstractBaseUser, task_id: UUID | str) -> Task:
    """The task if the user may see its project; ``Task.DoesNotExist`` otherwise."""
    return Task.objects.select_related("project").get(pk=task_id, project__in=visible_projects(user=user))


def project_audience_ids(*, project_ids: Iterable[UUID | str]) -> set[int]:
    """Ids of active users who may see any of these projects (owners, members, staff)."""
    ids = list(project_ids)
    if not ids:
        return set()
    return set(
        User.objects.filter(is_active=True)
        .filter(Q(is_staff=True) | Q(owned_projects__in=ids) | Q(projects__in=ids))
        .values_list("pk", flat=True)
        .distinct()
    )


def users_by_ids(*, user_ids: Iterable[int]) -> QuerySet:
    return User.objects.filter(pk__in=list(user_ids))
