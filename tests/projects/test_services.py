"""projects.services under real concurrency, on whichever database the run uses (SQLite or PostgreSQL):
the row lock makes a writer wait for the one before it, and ``version`` / If-Match let exactly one of
several writers that read the same version win."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections, transaction

from projects import services
from projects.models import Project, Task
from tests.conftest import db
from tests.support import factories as f

from .test_api import bearer

WRITERS = 4
ROUNDS = 10


def _in_thread(target: Callable[[], Any], outcome: dict[str, Any]) -> threading.Thread:
    """Run ``target`` in a thread with its own database connection (closed after: back to the pool)."""

    def run() -> None:
        try:
            outcome["result"] = target()
        except Exception as exc:  # noqa: BLE001 — the test looks at what the writer got
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _wait_until_blocked(writer: threading.Thread) -> None:
    """Return once ``writer`` waits for the lock the test holds (PostgreSQL: seen in pg_stat_activity)."""
    if connection.vendor != "postgresql":
        # SQLite has nothing to look at: the writer's BEGIN IMMEDIATE waits inside sqlite3 for the write lock.
        writer.join(0.5)
        assert writer.is_alive(), "the writer did not wait for the transaction holding the lock"
        return
    with connections["default"].cursor() as cursor:
        for _ in range(400):
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
            if cursor.fetchone()[0]:
                return
            writer.join(0.05)
    raise AssertionError("the writer never waited for the row lock")


def test_a_writer_waits_for_the_row_lock_and_then_sees_the_new_version(transactional_db: None) -> None:
    """A stale If-Match that arrives while another transaction holds the row is judged after that one commits."""
    project = f.make_project(f.make_user("alice"))
    task = f.make_task(project, title="v1")
    holder_may_commit, holder_locked = threading.Event(), threading.Event()

    def holder() -> int:
        with transaction.atomic():
            locked = Task.objects.select_for_update().get(pk=task.pk)
            locked.title = "holder's"
            locked.save(update_fields={"title"})
            holder_locked.set()
            assert holder_may_commit.wait(30)
        return locked.version

    held: dict[str, Any] = {}
    holder_thread = _in_thread(holder, held)
    assert holder_locked.wait(30)

    written: dict[str, Any] = {}
    writer = _in_thread(lambda: services.task_update(task=task, if_match={"1"}, status="done"), written)
    try:
        _wait_until_blocked(writer)
    finally:
        holder_may_commit.set()
        holder_thread.join(30)
        writer.join(30)

    assert held == {"result": 2}
    assert isinstance(written.get("error"), services.VersionConflict), written
    assert (written["error"].current.title, written["error"].current.version) == ("holder's", 2)
    assert Task.objects.values_list("title", "status", "version").get(pk=task.pk) == ("holder's", "todo", 2)


async def test_writers_racing_at_one_version_through_the_server_exactly_one_wins(server: Any) -> None:
    """WRITERS users PATCH the same task with the same If-Match at once (own connections, server threads):
    each round one gets 200, the rest 409 with the winner's task, and the version grows by exactly one."""
    owner = await db(f.make_user)("owner")
    users = [owner] + [await db(f.make_user)(f"user{i}") for i in range(1, WRITERS)]
    project = await db(f.make_project)(owner, members=tuple(users[1:]))
    task = await db(f.make_task)(project, title="start")
    url = f"/api/tasks/{task.pk}/"
    clients = [httpx.AsyncClient(base_url=server.url, timeout=30, headers=bearer(await db(f.token_for)(u))) for u in users]
    try:
        for version in range(1, ROUNDS + 1):
            if_match = {"If-Match": f'"{version}"'}
            patches = (c.patch(url, json={"title": f"round {version} by {i}"}, headers=if_match) for i, c in enumerate(clients))
            answers = await asyncio.gather(*patches)
            codes = sorted(a.status_code for a in answers)
            assert codes == [200] + [409] * (WRITERS - 1), [a.text for a in answers]
            (winner,) = [a.json() for a in answers if a.status_code == 200]
            assert winner["version"] == version + 1
            assert all(a.json()["current"] == winner for a in answers if a.status_code == 409)
            row = await db(lambda: Task.objects.values_list("title", "version").get(pk=task.pk))()
            assert row == (winner["title"], version + 1)
    finally:
        for c in clients:
            await c.aclose()


@pytest.mark.django_db
def test_an_update_that_writes_nothing_leaves_no_trusted_version_behind() -> None:
    """Only the save right after the locked read skips the version re-read; an instance returned unsaved re-reads."""
    owner = get_user_model().objects.create_user("o", password="x")
    project = Project.objects.create(title="p", owner=owner)
    task = services.task_create(project=project, title="t")  # version 1
    held = services.task_update(task=task.pk, visible_to=owner)  # nothing named: nothing written
    services.task_update(task=task.pk, visible_to=owner, title="by someone else")  # version 2
    held.description = "mine"
    held.save(update_fields=["description"])  # outside the lock: reads the version again
    assert Task.objects.get(pk=task.pk).version == 3
