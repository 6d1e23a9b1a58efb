"""Tracked project creation: validating → creating → importing N of M → completed (or error), live.

Runs as a background task of the server process, through realtime's progress
pipeline (``live.IMPORTS``): each step is stored, then sent to the progress room
as ``project_progress`` (coalesced, percentage never backwards), so
``subscribe_progress`` gets the current state at once.

Parsing is CPU work on user input: it runs in a worker thread of its own
(``asyncio.to_thread``), never on the event loop nor in the thread the ORM calls
share. The record names its runner ("host:pid") and keeps a heartbeat
(``updated_at``), so a server starting after a crash marks an import it left
unfinished as failed ("interrupted"): ``services.project_imports_mark_interrupted``.
"""

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from realtime import ProgressRun, runner_id

from . import imports, services
from .live import IMPORTS
from .models import ProjectImport, Task
from .schemas import progress_json

CHUNK = 50  # tasks per transaction
HEARTBEAT = timedelta(seconds=10)
STALE_AFTER = timedelta(seconds=60)  # an unfinished import not heard of for this long is dead


def launch(import_id: int) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(run(import_id), name=f"project-import-{import_id}")


def _save(import_id: int, **fields: Any) -> None:
    # update() skips auto_now: updated_at is set here, as the heartbeat.
    ProjectImport.objects.filter(pk=import_id).update(updated_at=timezone.now(), **fields)


async def _heartbeat(import_id: int) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT.total_seconds())
        await database_sync_to_async(_save)(import_id)


async def run(import_id: int) -> None:
    record = await database_sync_to_async(ProjectImport.objects.select_related("started_by").get)(pk=import_id)

    async def persist(state: dict[str, Any]) -> None:
        await database_sync_to_async(_save)(
            import_id,
            status=state["status"],
            percentage=state["percentage"],
            step=state["step"],
            log=state["log"],
            error=state.get("error", ""),
        )

    await database_sync_to_async(_save)(import_id, request={**record.request, "runner": runner_id()})
    async with IMPORTS.run(record.progress_id, persist=persist) as stream:
        await _run(import_id, record, stream)


async def _run(import_id: int, record: ProjectImport, stream: ProgressRun) -> None:
    heartbeat = asyncio.create_task(_heartbeat(import_id))

    async def step(status: str, percentage: float, step: str, log: str) -> None:
        await stream.update(progress_json(record, status=status, percentage=percentage, step=step, log=log))

    try:
        await step("validating", 0, "validating", "checking the request")
        spec = record.request
        tasks = await asyncio.to_thread(imports.parse, template=spec.get("template"), fmt=spec.get("format"), content=spec.get("content"))
        await asyncio.to_thread(_validate_all, tasks)  # every task, before anything is made: nothing half made
        await step("creating", 5, "creating project", f"creating {spec['project']['title']!r}")
        project = await database_sync_to_async(services.project_create)(owner=record.started_by, **spec["project"])
        await database_sync_to_async(_save)(import_id, project=project)
        for start in range(0, len(tasks), CHUNK):
            chunk = tasks[start : start + CHUNK]
            await database_sync_to_async(_create_tasks)(project, chunk, first_order=start)
            done = start + len(chunk)
            await step("importing", 5 + 95 * done / len(tasks), f"importing tasks {done} of {len(tasks)}", chunk[-1].title)
        record.project = project
        await stream.close(progress_json(record, status="completed", percentage=100, step="completed", log=f"{len(tasks)} tasks imported"))
    except imports.ImportFailure as failure:
        await stream.close(progress_json(record, status="error", step="error", log=str(failure), error=str(failure)))
    except Exception as error:  # noqa: BLE001  (reported to the watcher, not swallowed silently)
        await stream.close(
            progress_json(record, status="error", step="error", log="internal error", error=f"{type(error).__name__}: {error}")
        )
        raise
    finally:
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat


def _task(spec: imports.TaskSpec, *, project: Any = None, order: int = 0) -> Task:
    """The task ``spec`` describes, validated as a form would (``ImportFailure`` naming its line otherwise)."""
    task = Task(
        project=project,
        title=spec.title,
        status=spec.status,
        description=spec.description,
        assignee=spec.assignee,
        feature=spec.feature,
        task_order=order,
    )
    try:
        # The model's own limits (lengths, MAX_DESCRIPTION_CHARS, choices); no query: the project is checked by its save.
        task.clean_fields(exclude=["project", "parent_task"])
    except ValidationError as error:
        where = f"line {spec.line}" if spec.line else f"task {spec.title[:50]!r}"
        reasons = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in error.message_dict.items())
        raise imports.ImportFailure(f"{where}: {reasons}") from None
    return task


def _validate_all(tasks: list[imports.TaskSpec]) -> None:
    """Every task validated before the project is created (CPU only: run it in a worker thread)."""
    for spec in tasks:
        _task(spec)


@transaction.atomic
def _create_tasks(project: Any, chunk: list[imports.TaskSpec], *, first_order: int) -> None:
    for offset, spec in enumerate(chunk):
        # Validated again as it is saved (whatever built the list), and saved by Model.save (not
        # bulk_create), so every task broadcasts like any other.
        _task(spec, project=project, order=first_order + offset).save()
