"""realtime.testing, the helpers realtime offers its users' tests; and the import contract that keeps realtime reusable."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction

import realtime.testing
from projects.live import PROJECT
from projects.schemas import task_json
from realtime import (
    close_room_on_commit,
    disconnect_on_commit,
    emit,
    emit_now_ignoring_transaction,
    leave_rooms_on_commit,
    recheck_user_on_commit,
    user_room,
)
from realtime.testing import Broadcast, ConnectionRefused, LiveServer, capture_broadcasts, unstamped
from realtime.testing import connect as connect_client  # `connect` is the project's fixture
from tests.support import factories as f

db = sync_to_async
# The `broadcasts` fixture, as a user's `pytest_plugins = ["realtime.testing"]` provides it (here pytest would warn
# that the plugin, already imported by tests.support, cannot be assert-rewritten).
broadcasts = realtime.testing.broadcasts
ROOT = Path(__file__).resolve().parents[2]


class Boom(Exception):
    pass


# Both ways a test meets the database: inside a test transaction that never commits, and with real commits.
both_databases = pytest.mark.parametrize(
    "committing",
    [
        pytest.param(False, marks=pytest.mark.django_db, id="db"),
        pytest.param(True, marks=pytest.mark.django_db(transaction=True), id="transactional_db"),
    ],
)


# ------------------------------------------------------------------------------------------- capturing


@both_databases
def test_a_live_models_created_event_is_captured_on_commit(committing):
    assert transaction.get_connection().in_atomic_block is not committing
    alice = f.make_user("alice")
    project = f.make_project(alice)
    with capture_broadcasts() as sent:
        task = f.make_task(project, title="captured")
    assert sent == [("task_created", PROJECT.room(project.pk), task_json(task))]
    assert sent[0] == Broadcast(event="task_created", room=PROJECT.room(project.pk), data=task_json(task))


@both_databases
def test_a_rolled_back_atomic_is_captured_as_nothing(committing):
    assert transaction.get_connection().in_atomic_block is not committing
    alice = f.make_user("alice")
    project = f.make_project(alice)
    with capture_broadcasts() as sent:
        with contextlib.suppress(Boom), transaction.atomic():
            f.make_task(project, title="rolled back")
            raise Boom
        f.make_task(project, title="kept")  # the capture did work in this block: only the rollback is silent
    assert sent.events() == ["task_created"]
    assert [task["title"] for task in sent.data("task_created")] == ["kept"]


def test_the_fixture_shows_each_change_once_it_would_have_committed(db, broadcasts):
    alice = f.make_user("alice")
    project = f.make_project(alice)
    broadcasts.clear()  # the project's own announcements
    first = f.make_task(project, title="first")
    assert broadcasts.data("task_created") == [task_json(first)]
    with transaction.atomic():
        second = f.make_task(project, title="second")
        assert broadcasts.events() == ["task_created"]  # not committed yet: not sent yet
    assert broadcasts.data("task_created") == [task_json(first), task_json(second)]
    with contextlib.suppress(Boom), transaction.atomic():
        second.delete()
        raise Boom
    assert broadcasts.events() == ["task_created", "task_created"]


def test_room_operations_are_captured_beside_emits(db):
    with capture_broadcasts() as sent:
        close_room_on_commit("room-a")
        leave_rooms_on_commit([(7, "room-b")])
        disconnect_on_commit("room-c")
        recheck_user_on_commit(7)
    assert list(sent) == [
        ("realtime:leave", "room-a", {"room": "room-a"}),
        ("realtime:leave", user_room(7), {"room": "room-b"}),
        ("realtime:disconnect", "room-c", {}),
        ("realtime:recheck", user_room(7), {}),
    ]


async def test_async_emits_are_captured_and_captures_nest():
    with capture_broadcasts() as outer:
        await emit("first", {"n": 1}, room="room-a")
        with capture_broadcasts() as inner:
            await emit("second", {"n": 2}, room="room-b")
    assert outer.all() == [("first", "room-a", {"n": 1}), ("second", "room-b", {"n": 2})]
    assert inner.all() == [("second", "room-b", {"n": 2})]
    with pytest.raises(ValueError, match="without a room"):
        with capture_broadcasts():
            await emit("nowhere", {}, room="")  # refused as it would be with a server: a capture hides no bug


async def test_inside_a_serving_process_a_capture_records_instead_of_delivering(server):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    room = PROJECT.room(project.pk)
    async with await connect_client(server.url, token=await db(f.token_for)(alice)) as client:
        assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"] is True
        with capture_broadcasts() as sent:
            # From a worker thread, as a request or a command would: without the capture it goes to the server loop.
            await db(emit_now_ignoring_transaction)("hidden", {"n": 1}, room=room)
        assert sent == [("hidden", room, {"n": 1})]
        await db(emit_now_ignoring_transaction)("shown", {"n": 2}, room=room)
        assert unstamped(await client.wait_for("shown")) == {"n": 2}
        assert client.received("hidden") == []  # one connection's events arrive in order: "hidden" would be here


# ---------------------------------------------------------------------------------------- live clients


@pytest.mark.parametrize("by", ["token", "cookies"])
async def test_connect_joins_a_room_and_receives_its_events(server, by):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    if by == "token":
        credentials = {"token": await db(f.token_for)(alice)}
    else:
        name, _, value = (await db(f.session_cookie)(alice)).partition("=")
        credentials = {"cookies": {name: value}}
    client = await connect_client(server.url, **credentials)
    try:
        assert client.connected and client.sid
        assert await client.call("join_project", {"project_id": str(project.pk)}) == {"ok": True, "project_id": str(project.pk)}
        assert (await client.wait_for("initial_tasks"))["tasks"] == []
        task = await db(f.make_task)(project, title="seen live")
        created = await client.wait_for("task_created", lambda t: t["id"] == str(task.pk))
        assert created["title"] == "seen live"
    finally:
        await client.close()
    assert not client.connected


async def test_connect_says_why_the_server_refused(server):
    with pytest.raises(ConnectionRefused) as refusal:
        await connect_client(server.url, token="not-a-token")
    assert refusal.value.message == "invalid token"


def test_the_live_server_serves_the_settings_asgi_application_by_default():
    assert LiveServer().app == settings.ASGI_APPLICATION.replace(".application", ":application")


# ------------------------------------------------------------------------------------- import contract


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with this project's contracts (its pyproject.toml) on a package tree of our making."""
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    binary = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([binary, "--no-cache"], cwd=tree, env=env, capture_output=True, text=True, timeout=60)


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for package in ("realtime", "projects", "crawls", "chat", "archon_site"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name in ("bus", "models", "broadcast"):
        (tmp_path / "realtime" / f"{name}.py").write_text("")
    for path, text in files.items():
        (tmp_path / path).write_text(text)
    return tmp_path


def test_the_import_contract_keeps_public_imports(tmp_path):
    tree = _tree(tmp_path, {"projects/live.py": "from realtime import live_model\nimport realtime\n"})
    result = _lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("path", "source", "reported"),
    [
        ("projects/live.py", "from realtime import bus\n", "projects.live -> realtime.bus"),
        ("crawls/runner.py", "from realtime.broadcast import emit\n", "crawls.runner -> realtime.broadcast"),
        ("chat/views.py", "def f():\n    import realtime.models\n", "chat.views -> realtime.models"),
        ("realtime/room_kinds.py", "from projects import live\n", "realtime.room_kinds -> projects.live"),
        ("realtime/asgi.py", "import archon_site.settings\n", "realtime.asgi -> archon_site.settings"),
    ],
)
def test_the_import_contract_breaks_on_a_private_or_reversed_import(tmp_path, path, source, reported):
    extra = {"projects/live.py": "", "archon_site/settings.py": ""}
    tree = _tree(tmp_path, {**extra, path: source})
    result = _lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert reported in result.stdout and "1 kept, 1 broken" in result.stdout
