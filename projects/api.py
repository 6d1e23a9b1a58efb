"""The REST API (django-ninja): session cookie with CSRF, or ``Authorization: Bearer <token>``."""

from typing import Any
from uuid import UUID

import pydantic_core
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Router, Status
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.renderers import JSONRenderer
from ninja.security import HttpBearer, SessionAuth

from realtime import bus
from realtime.tokens import token_owner

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


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        found = token_owner(token)
        if found is None:
            return None
        request.user = found[0]
        return found[0]


class SchemaJSON(JSONRenderer):
    """Serialise with pydantic, exactly as the Socket.IO events do: one JSON shape everywhere."""

    def render(self, request: HttpRequest, data: Any, *, response_status: int) -> bytes:
        return pydantic_core.to_json(data, fallback=str)


class SessionCookie(SessionAuth):
    """Django's session, with CSRF enforced on writes — checked only for a logged-in session,
    so a request without valid credentials is a 401, not a CSRF 403."""

    def _get_key(self, request: HttpRequest) -> str | None:
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)


# Bearer first: a script's token is honoured even if a stray session cookie came along.
api = NinjaAPI(title="Archon live API", version="1", auth=[BearerToken(), SessionCookie()], renderer=SchemaJSON(), urls_namespace="api")


@api.exception_handler(NinjaValidationError)
def _bad_input(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    errors = [{"field": ".".join(str(p) for p in e["loc"] if p not in ("body", "payload")), "message": e["msg"]} for e in exc.errors]
    return api.create_response(request, {"detail": "invalid input", "errors": errors}, status=400)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "not found"}, status=404)


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    body: dict[str, Any] = {"detail": str(exc)}
    if exc.status_code == 400:  # e.g. a body that is not JSON: the same shape as every other 400
        body = {"detail": "invalid input", "errors": [{"field": "body", "message": str(exc)}]}
    return api.create_response(request, body, status=exc.status_code)


@api.exception_handler(DjangoValidationError)
def _invalid(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
    fields = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
    errors = [{"field": f, "message": m} for f, messages in fields.items() for m in messages]
    return api.create_response(request, {"detail": "invalid input", "errors": errors}, status=400)


@api.exception_handler(services.VersionConflict)
def _conflict(request: HttpRequest, exc: services.VersionConflict) -> HttpResponse:
    current = exc.current
    body = {"detail": "version conflict", "current": task_json(current) if isinstance(current, Task) else project_json(current)}
    response = api.create_response(request, body, status=409)
    response["ETag"] = _etag(current)
    return response


@api.exception_handler(Task.DoesNotExist)
def _task_gone(request: HttpRequest, exc: Task.DoesNotExist) -> HttpResponse:
    # Deleted between the permission check and the locked re-read: the same answer as an unknown task.
    return api.create_response(request, {"detail": "task not found"}, status=404)


@api.exception_handler(Project.DoesNotExist)
def _project_gone(request: HttpRequest, exc: Project.DoesNotExist) -> HttpResponse:
    return api.create_response(request, {"detail": "project not found"}, status=404)


@api.exception_handler(RecursionError)
def _too_deep(request: HttpRequest, exc: RecursionError) -> HttpResponse:
    # A body nested deeper than the JSON parser can follow: refused like any unparsable body.
    body = {"detail": "invalid input", "errors": [{"field": "body", "message": "nested too deeply"}]}
    return api.create_response(request, body, status=400)


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
    try:
        return selectors.project_for_user(user=request.user, project_id=project_id)
    except Project.DoesNotExist:
        raise Http404("project not found") from None


def _managed_project(request: HttpRequest, project_id: UUID) -> Project:
    """Members may work on tasks; only the owner and staff change or delete the project."""
    project = _project(request, project_id)
    if not (request.user.is_staff or project.owner_id == request.user.pk):
        raise HttpError(403, "only the project's owner or staff may do this")
    return project


def _task(request: HttpRequest, task_id: UUID) -> Task:
    try:
        return selectors.task_for_user(user=request.user, task_id=task_id)
    except Task.DoesNotExist:
        raise Http404("task not found") from None


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
    bus.submit(_launch_import(record.pk))  # onto the server's event loop
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
    task = _task(request, task_id)  # permission outside; the write re-reads the row under its lock
    fields = payload.dict(exclude_unset=True)
    if_match = _if_match(request, fields.pop("expected_version", None))
    task = services.task_update(task=task, if_match=if_match, **fields)
    response["ETag"] = _etag(task)
    return task


@tasks.delete("/{uuid:task_id}/", response={204: None, 409: VersionConflictOut})
def delete_task(request: HttpRequest, task_id: UUID) -> Any:
    task = _task(request, task_id)
    services.task_delete(task=task, if_match=_if_match(request))
    return Status(204, None)


api.add_router("/projects/", projects)
api.add_router("/tasks/", tasks)
