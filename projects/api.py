"""The REST API (django-ninja): session cookie with CSRF, or ``Authorization: Bearer <token>``."""

from typing import Any
from uuid import UUID

import pydantic_core
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Router, Schema, Status
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.renderers import JSONRenderer
from ninja.security import HttpBearer, SessionAuth

from realtime import bus
from realtime.tokens import token_owner

from . import selectors, services, tracked
from .models import Project, Task
from .schemas import ProjectOut, ProjectPatch, TaskIn, TaskOut, TaskPatch, TrackedProjectIn


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
def get_project(request: HttpRequest, project_id: UUID) -> Any:
    return _project(request, project_id)


@projects.patch("/{uuid:project_id}/", response=ProjectOut)
def update_project(request: HttpRequest, project_id: UUID, payload: ProjectPatch) -> Any:
    project = _managed_project(request, project_id)
    return services.project_update(project=project, **payload.dict(exclude_unset=True))


@projects.delete("/{uuid:project_id}/", response={204: None})
def delete_project(request: HttpRequest, project_id: UUID) -> Any:
    services.project_delete(project=_managed_project(request, project_id))
    return Status(204, None)


@projects.get("/{uuid:project_id}/tasks/", response=list[TaskOut])
def list_tasks(request: HttpRequest, project_id: UUID, include_archived: bool = False) -> Any:
    project = _project(request, project_id)
    return project.tasks.all() if include_archived else selectors.project_tasks(project_id=project.pk)


@projects.post("/{uuid:project_id}/tasks/", response={201: TaskOut})
def create_task(request: HttpRequest, project_id: UUID, payload: TaskIn) -> Any:
    return Status(201, services.task_create(project=_project(request, project_id), **payload.dict()))


class Reorder(Schema):
    task_ids: list[UUID]


@projects.post("/{uuid:project_id}/tasks/reorder/", response=list[TaskOut])
def reorder_tasks(request: HttpRequest, project_id: UUID, payload: Reorder) -> Any:
    """Bulk move: give the listed tasks task_order 0, 1, 2…; every moved task broadcasts."""
    return services.tasks_reorder(project=_project(request, project_id), task_ids=payload.task_ids)


@tasks.get("/{uuid:task_id}/", response=TaskOut)
def get_task(request: HttpRequest, task_id: UUID) -> Any:
    return _task(request, task_id)


@tasks.patch("/{uuid:task_id}/", response=TaskOut)
def update_task(request: HttpRequest, task_id: UUID, payload: TaskPatch) -> Any:
    return services.task_update(task=_task(request, task_id), **payload.dict(exclude_unset=True))


@tasks.delete("/{uuid:task_id}/", response={204: None})
def delete_task(request: HttpRequest, task_id: UUID) -> Any:
    services.task_delete(task=_task(request, task_id))
    return Status(204, None)


api.add_router("/projects/", projects)
api.add_router("/tasks/", tasks)
