"""projects, live: tasks in their project's room, each user's project list, tracked imports' progress.

Declared here, run by realtime (see the README's "Event reference" for the wire protocol).
"""

from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete
from django.dispatch import receiver

from realtime import Frames, Operation, at_startup, live_model, progress_kind, room_kind

from . import audience, schemas, selectors, services
from .models import Project, ProjectImport, Task

PROJECT = room_kind(
    join="join_project",
    leave="leave_project",
    key="project_id",
    may_join=lambda user, project_id: selectors.can_see_project(user=user, project_id=project_id),
    snapshot=lambda user, project_id: Frames(
        "initial_tasks",
        "tasks",
        [schemas.task_json(t) for t in selectors.project_tasks(project_id=project_id)],
        {"project_id": str(project_id)},
    ),
    refusal="project not found",
)

PROJECT_LIST = room_kind(
    join="subscribe_projects",
    leave="unsubscribe_projects",
    prefix="project_list",
    per_user=lambda user: ["project_list", audience.list_room(user.pk)],
    snapshot=lambda user, _: Frames(
        "projects_update", "projects", [schemas.project_json(p) for p in selectors.visible_projects(user=user)]
    ),
)

live_model(
    Task,
    room=lambda task: PROJECT.room(task.project_id),
    data=schemas.task_json,
    created="task_created",
    updated="task_updated",
    deleted="task_deleted",
    deleted_data=lambda task: {"task_id": str(task.pk), "project_id": str(task.project_id)},
    moves_with="project_id",
)


def _import(progress_id: str) -> Operation | None:
    record = ProjectImport.objects.select_related("project__owner").filter(progress_id=progress_id).first()
    return None if record is None else Operation(record.started_by_id, schemas.progress_json(record))


IMPORTS = progress_kind(subscribe="subscribe_progress", unsubscribe="unsubscribe_progress", event="project_progress", lookup=_import)


@at_startup
async def _recover() -> None:
    await database_sync_to_async(services.project_imports_mark_interrupted)()


# Who sees which project: one line each, the work is in ``audience``.
@receiver(post_save, sender=Project, dispatch_uid="projects.live.project_saved")
def _project_saved(sender: type, instance: Project, **kwargs: Any) -> None:
    audience.project_saved(instance)


@receiver(pre_delete, sender=Project, dispatch_uid="projects.live.project_deleting")
def _project_deleting(sender: type, instance: Project, **kwargs: Any) -> None:
    audience.project_deleting(instance)


@receiver(post_delete, sender=Project, dispatch_uid="projects.live.project_deleted")
def _project_deleted(sender: type, instance: Project, **kwargs: Any) -> None:
    audience.project_deleted(instance)


@receiver(m2m_changed, sender=Project.members.through, dispatch_uid="projects.live.members_changed")
def _members_changed(sender: type, instance: Any, action: str, reverse: bool, pk_set: set[Any] | None, **kwargs: Any) -> None:
    audience.members_changed(instance, action=action, reverse=reverse, pk_set=pk_set)


@receiver(post_save, sender=get_user_model(), dispatch_uid="projects.live.user_saved")
def _user_saved(sender: type, instance: Any, update_fields: Any = None, **kwargs: Any) -> None:
    audience.user_saved(instance, update_fields=update_fields)
