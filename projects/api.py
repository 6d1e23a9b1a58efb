"""Projects and tasks over REST: two routers the site's API (``archon_site.api``) mounts."""

from typing import Any
from uuid import UUID

import pydantic_core
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpRequest, HttpResponse
from ninja import Router, Status
from ninja.errors import HttpError

from realtime import submit

from . import selectors, services, tracked
from .models import Project, Task
from .schemas import (
    ProjectOut,
    ProjectPatch,
    TaskIn,
    TaskOut,
    TaskPatch,
    TaskReorder,
    TrackedProjectIn,
    VersionConflictOut,
    project_json,
    task_json,
)


def version_conflict(request: HttpRequest, exc: services.VersionConflict) -> HttpResponse:
    """409 with the current state and its ``ETag``: the client shows the other user's change."""
    current = exc.current
    body = {"detail": "version conflict", "current": task_json(current) if isinstance(current, Task) else project_json(current)}
    response = HttpResponse(pydantic_core.to_json(body), status=409, content_type="application/json")
    response["ETag"] = _etag(current)
    return response


EXCEPTION_HANDLERS = {services.VersionConflict: version_conflict}  # registered on the site's API


def _etag(obj: Task | Project) -> str:
    return f'"{obj.etag}"'


def _if_match(request: HttpRequest, expected_version: int | None = None) -> set[str] | None:
    """The ETags the client's ``If-Match`` header (``"3"``, ``3``, ``W/"3"``, a list, or ``*``) and
    ``expected_version`` accept; None when neither asks for a condition."""
    header = request.headers.get("If-Match")
    tags: set[str] | None = None
    if header is not None:
        tags = set()
        for raw in header.split(","):
            tag = raw.strip().removeprefix("W/")
            if len(tag) >= 2 and tag[0] == tag[-1] == '"':
                tag = tag[1:-1]
            if not tag or '"' in tag:
                raise DjangoValidationError({"If-Match": [f"not an entity tag: {raw.strip()!r}"]})
            if tag == "*":  # any current version
                tags = None
                break
            tags.add(tag)
    if expected_version is None:
        return tags
    if tags is not None and str(expected_version) not in tags:
        raise DjangoValidationError({"expected_version": ["disagrees with the If-Match header"]})
    return {str(expected_version)}


def _project(request: HttpRequest, project_id: UUID) -> Project:
    return selectors.project_for_user(user=request.user, project_id=project_id)  # DoesNotExist: the site's 404


def _managed_project(request: HttpRequest, project_id: UUID) -> Project:
    """Members may work on tasks; only the owner and staff change or delete the project."""
    project = _project(request, project_id)
    if not (request.user.is_staff or project.owner_id == request.user.pk):
        raise HttpError(403, "only the project's owner or staff may do this")
    return project


def _task(request: HttpRequest, task_id: UUID) -> Task:
    return selectors.task_for_user(user=request.user, task_id=task_id)  # DoesNotExist: the site's 404


projects = Router(tags=["projects"])
tasks = Router(tags=["tasks"])


@projects.get("/", response=list[ProjectOut])
def list_projects(request: HttpRequest) -> Any:
    return selectors.visible_projects(user=request.user)


async def _launch_import(import_id: int) -> None:
    tracked.launch(import_id)


@projects.post("/", response={201: ProjectOut, 202: dict})
def create_project(request: HttpRequest, payload: TrackedProjectIn) -> Any:
    """Create a project at once; with ``template`` or ``import_tasks``, in the background: 202 ``{progress_id}``."""
    fields = payload.dict(exclude={"template", "import_tasks"})
    if payload.template is None and payload.import_tasks is None:
        return Status(201, services.project_create(owner=request.user, **fields))
    spec = payload.import_tasks
    record = services.project_import_create(
        started_by=request.user,
        project=fields,
        template=payload.template,
        fmt=spec.format if spec else None,
        content=spec.content if spec else None,
    )
    submit(_launch_import(record.pk))  # onto the server's event loop
    return Status(202, {"progress_id": str(record.progress_id)})


@projects.get("/{uuid:project_id}/", response=ProjectOut)
def get_project(request: HttpRequest, project_id: UUID, response: HttpResponse) -> Any:
    project = _project(request, project_id)
    response["ETag"] = _etag(project)
    return project


@projects.patch("/{uuid:project_id}/", response={200: ProjectOut, 409: VersionConflictOut})
def update_project(request: HttpRequest, project_id: UUID, payload: ProjectPatch, response: HttpResponse) -> Any:
    """Change only the fields sent. ``If-Match: "<ETag>"`` (from a GET or PATCH): applied only if unchanged since, else 409."""
    project = _managed_project(request, project_id)  # permission outside; the write re-reads the row under its lock
    project = services.project_update(project=project, if_match=_if_match(request), **payload.dict(exclude_unset=True))
    response["ETag"] = _etag(project)
    return project


@projects.delete("/{uuid:project_id}/", response={204: None, 409: VersionConflictOut})
def delete_project(request: HttpRequest, project_id: UUID) -> Any:
    project = _managed_project(request, project_id)
    services.project_delete(project=project, if_match=_if_match(request))
    return Status(204, None)


@projects.get("/{uuid:project_id}/tasks/", response=list[TaskOut])
def list_tasks(request: HttpRequest, project_id: UUID, include_archived: bool = False) -> Any:
    project = _project(request, project_id)
    return project.tasks.all() if include_archived else selectors.project_tasks(project_id=project.pk)


@projects.post("/{uuid:project_id}/tasks/", response={201: TaskOut})
def create_task(request: HttpRequest, project_id: UUID, payload: TaskIn) -> Any:
    return Status(201, services.task_create(project=_project(request, project_id), **payload.dict()))


@projects.post("/{uuid:project_id}/tasks/reorder/", response=list[TaskOut])
def reorder_tasks(request: HttpRequest, project_id: UUID, payload: TaskReorder) -> Any:
    """Bulk move: give the listed tasks task_order 0, 1, 2…; every moved task broadcasts."""
    return services.tasks_reorder(project=_project(request, project_id), task_ids=payload.task_ids)


@tasks.get("/{uuid:task_id}/", response=TaskOut)
def get_task(request: HttpRequest, task_id: UUID, response: HttpResponse) -> Any:
    task = _task(request, task_id)
    response["ETag"] = _etag(task)
    return task


@tasks.patch("/{uuid:task_id}/", response={200: TaskOut, 409: VersionConflictOut})
def update_task(request: HttpRequest, task_id: UUID, payload: TaskPatch, response: HttpResponse) -> Any:
    """Change only the fields sent. ``If-Match: "<version>"`` or ``expected_version``: applied only at that version, else 409."""
    fields = payload.dict(exclude_unset=True)
    if_match = _if_match(request, fields.pop("expected_version", None))
    # One locked read checks the permission too (a task the user may not see: DoesNotExist, the site's 404).
    task = services.task_update(task=task_id, visible_to=request.user, if_match=if_match, **fields)
    response["ETag"] = _etag(task)
    return task


@tasks.delete("/{uuid:task_id}/", response={204: None, 409: VersionConflictOut})
def delete_task(request: HttpRequest, task_id: UUID) -> Any:
    services.task_delete(task=task_id, visible_to=request.user, if_match=_if_match(request))
    return Status(204, None)
