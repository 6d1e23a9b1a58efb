"""The one JSON shape of each object, shared by the REST API and the Socket.IO events."""

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from ninja import Field, Schema
from pydantic import AfterValidator, ConfigDict, StringConstraints

from realtime import ProgressState

from .models import (
    MAX_DESCRIPTION_CHARS,
    MAX_MEMBERS,
    MAX_REORDER_IDS,
    TASK_ORDER_RANGE,
    Project,
    Task,
    json_list_problem,
)

Status = Literal["todo", "doing", "review", "done"]


def _bounded_json_list(value: list[Any]) -> list[Any]:
    problem = json_list_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# Input types carrying the limits of projects/models.py (one place); over a limit is a 400 naming the field.
JsonList = Annotated[list[Any], AfterValidator(_bounded_json_list)]
Description = Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION_CHARS)]
TaskOrder = Annotated[int, Field(ge=TASK_ORDER_RANGE[0], le=TASK_ORDER_RANGE[1])]
Username = Annotated[str, StringConstraints(max_length=150)]
MemberList = Annotated[list[Username], Field(max_length=MAX_MEMBERS)]


class TaskOut(Schema):
    id: UUID
    project_id: UUID
    parent_task_id: UUID | None
    title: str
    description: str
    status: Status
    assignee: str
    task_order: int
    feature: str
    sources: list[Any]
    code_examples: list[Any]
    archived: bool
    archived_at: datetime | None
    created_at: datetime
    updated_at: datetime
    version: int


class ProjectOut(Schema):
    id: UUID
    title: str
    description: str
    github_repo: str
    pinned: bool
    docs: list[Any]
    features: list[Any]
    data: list[Any]
    owner: str = Field(..., alias="owner.username")
    created_at: datetime
    updated_at: datetime


class _StrictIn(Schema):
    # Unknown fields are an error, not silently dropped: a typo must not look like success.
    model_config = ConfigDict(extra="forbid")


class TaskIn(_StrictIn):
    title: str = Field(..., min_length=1, max_length=255)
    description: Description = ""
    status: Status = "todo"
    assignee: str = Field("User", min_length=1, max_length=255)
    task_order: TaskOrder = 0
    feature: str = Field("", max_length=255)
    sources: JsonList = []
    code_examples: JsonList = []
    parent_task_id: UUID | None = None


class TaskPatch(_StrictIn):
    # Absent means "leave as is"; an explicit null is refused (the type has no None)
    # except for parent_task_id, where null means "no parent".
    title: str = Field(None, min_length=1, max_length=255)
    description: Description = Field(None)
    status: Status = Field(None)
    assignee: str = Field(None, min_length=1, max_length=255)
    task_order: TaskOrder = Field(None)
    feature: str = Field(None, max_length=255)
    sources: JsonList = Field(None)
    code_examples: JsonList = Field(None)
    parent_task_id: UUID | None = None
    archived: bool = Field(None)
    # Optimistic concurrency, like an If-Match header: applied only if the task is still at this version (else 409).
    expected_version: int = Field(None, ge=0)


class TaskReorder(_StrictIn):
    task_ids: list[UUID] = Field(..., max_length=MAX_REORDER_IDS)


class ProjectIn(_StrictIn):
    title: str = Field(..., min_length=1, max_length=255)
    description: Description = ""
    github_repo: str = Field("", max_length=500)
    pinned: bool = False
    docs: JsonList = []
    features: JsonList = []
    data: JsonList = []
    member_usernames: MemberList = []


class ProjectPatch(_StrictIn):
    # Absent means "leave as is"; an explicit null is refused.
    title: str = Field(None, min_length=1, max_length=255)
    description: Description = Field(None)
    github_repo: str = Field(None, max_length=500)
    pinned: bool = Field(None)
    docs: JsonList = Field(None)
    features: JsonList = Field(None)
    data: JsonList = Field(None)
    member_usernames: MemberList = Field(None)


class VersionConflictOut(Schema):
    """409: the object changed since the client read it; ``current`` is its state now (a Task or a Project)."""

    detail: str
    current: dict[str, Any]


def task_json(task: Task) -> dict[str, Any]:
    """The task as the JSON-ready dict every event and endpoint sends."""
    return TaskOut.from_orm(task).model_dump(mode="json")


def project_json(project: Project) -> dict[str, Any]:
    """The project as the JSON-ready dict every event and endpoint sends."""
    return ProjectOut.from_orm(project).model_dump(mode="json")


class ImportSpec(_StrictIn):
    format: Literal["markdown", "csv"]
    content: str = Field(..., min_length=1, max_length=2_000_000)


class TrackedProjectIn(ProjectIn):
    """``POST /api/projects/`` with a template or an import: created in the background, watched by progress id."""

    template: str | None = Field(None, max_length=50)
    import_tasks: ImportSpec | None = None


class ProjectProgress(ProgressState):
    """``project_progress``: realtime's progress fields (camelCase), the step, and the project once created."""

    step: str
    project: dict[str, Any] | None = None


def progress_json(record: Any, **overrides: Any) -> dict[str, Any]:
    """A ``ProjectImport``'s progress as sent to clients."""
    data = {
        "progress_id": record.progress_id,
        "status": record.status,
        "percentage": record.percentage,
        "step": record.step,
        "log": record.log,
        "error": record.error or None,
        "project": project_json(record.project) if record.project_id else None,
        **overrides,
    }
    return ProjectProgress.payload(**data)
