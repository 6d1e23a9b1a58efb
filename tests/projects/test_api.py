"""The REST API (/api/) against the live server: CRUD, errors, limits, permissions, CSRF, the broadcasts its writes
cause, and the snapshots (initial_tasks, projects_update) in bounded frames."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest

from projects.models import MAX_DESCRIPTION_CHARS, MAX_JSON_BYTES, MAX_JSON_DEPTH, MAX_JSON_ITEMS, MAX_MEMBERS, Project, Task
from realtime.testing import unstamped
from tests.conftest import db
from tests.support import factories as f

TASK_KEYS = {
    "id",
    "project_id",
    "parent_task_id",
    "title",
    "description",
    "status",
    "assignee",
    "task_order",
    "feature",
    "sources",
    "code_examples",
    "archived",
    "archived_at",
    "created_at",
    "updated_at",
    "version",
}
PROJECT_KEYS = {"id", "title", "description", "github_repo", "pinned", "docs", "features", "data", "owner", "created_at", "updated_at"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def user_and_auth(username: str, **kwargs: Any) -> tuple[Any, dict[str, str]]:
    user = await db(f.make_user)(username, **kwargs)
    return user, bearer(await db(f.token_for)(user))


def aware(value: str) -> datetime:
    """An ISO 8601 timestamp that carries a time zone."""
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def assert_uuid_str(value: Any) -> None:
    assert isinstance(value, str) and str(uuid.UUID(value)) == value, value


def assert_task_shape(task: dict[str, Any]) -> None:
    assert set(unstamped(task)) == TASK_KEYS  # the REST shape; a broadcast adds only its recovery stamp
    assert_uuid_str(task["id"])
    assert_uuid_str(task["project_id"])
    if task["parent_task_id"] is not None:
        assert_uuid_str(task["parent_task_id"])
    aware(task["created_at"])
    aware(task["updated_at"])
    if task["archived_at"] is not None:
        aware(task["archived_at"])
    assert isinstance(task["version"], int) and task["version"] >= 1


def assert_project_shape(project: dict[str, Any]) -> None:
    assert set(project) == PROJECT_KEYS
    assert_uuid_str(project["id"])
    aware(project["created_at"])
    aware(project["updated_at"])


def error_fields(response: httpx.Response) -> list[str]:
    body = response.json()
    assert isinstance(body.get("errors"), list) and body["errors"], body
    for error in body["errors"]:
        assert isinstance(error["message"], str) and error["message"], body
    return [e["field"] for e in body["errors"]]


count_tasks = db(lambda: Task.objects.count())
count_projects = db(lambda: Project.objects.count())


# --------------------------------------------------------------------------- CRUD


async def test_project_crud_through_every_endpoint(http):
    alice, auth = await user_and_auth("alice")
    await db(f.make_user)("bob")

    listed = await http.get("/api/projects/", headers=auth)
    assert listed.status_code == 200 and listed.json() == []

    created = await http.post(
        "/api/projects/", headers=auth, json={"title": "Apollo", "description": "to the moon", "member_usernames": ["bob"]}
    )
    assert created.status_code == 201, created.text
    project = created.json()
    assert_project_shape(project)
    assert (project["title"], project["description"], project["owner"], project["pinned"]) == ("Apollo", "to the moon", "alice", False)
    assert await db(lambda: list(Project.objects.get(pk=project["id"]).members.values_list("username", flat=True)))() == ["bob"]

    listed = await http.get("/api/projects/", headers=auth)
    assert listed.status_code == 200 and listed.json() == [project]

    fetched = await http.get(f"/api/projects/{project['id']}/", headers=auth)
    assert fetched.status_code == 200 and fetched.json() == project

    patched = await http.patch(
        f"/api/projects/{project['id']}/", headers=auth, json={"title": "Apollo 11", "pinned": True, "member_usernames": []}
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert_project_shape(body)
    assert (body["id"], body["title"], body["description"], body["pinned"]) == (project["id"], "Apollo 11", "to the moon", True)
    assert aware(body["updated_at"]) >= aware(project["updated_at"])
    assert await db(lambda: Project.objects.get(pk=project["id"]).members.count())() == 0

    deleted = await http.delete(f"/api/projects/{project['id']}/", headers=auth)
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await http.get(f"/api/projects/{project['id']}/", headers=auth)).status_code == 404
    assert await count_projects() == 0


async def test_task_crud_shape_and_versions(http):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice, title="Apollo")

    assert (await http.get(f"/api/projects/{project.pk}/tasks/", headers=auth)).json() == []

    created = await http.post(
        f"/api/projects/{project.pk}/tasks/", headers=auth, json={"title": "write tests", "status": "doing", "sources": [{"url": "x"}]}
    )
    assert created.status_code == 201, created.text
    task = created.json()
    assert_task_shape(task)
    assert task["project_id"] == str(project.pk)
    assert (task["title"], task["status"], task["assignee"], task["sources"], task["version"]) == (
        "write tests",
        "doing",
        "User",
        [{"url": "x"}],
        1,
    )
    assert task["parent_task_id"] is None and task["archived"] is False and task["archived_at"] is None

    fetched = await http.get(f"/api/tasks/{task['id']}/", headers=auth)
    assert fetched.status_code == 200 and fetched.json() == task
    listed = await http.get(f"/api/projects/{project.pk}/tasks/", headers=auth)
    assert listed.status_code == 200 and listed.json() == [task]

    first = await http.patch(f"/api/tasks/{task['id']}/", headers=auth, json={"title": "write more tests"})
    assert first.status_code == 200, first.text
    second = await http.patch(f"/api/tasks/{task['id']}/", headers=auth, json={"status": "done"})
    assert second.status_code == 200, second.text
    one, two = first.json(), second.json()
    assert_task_shape(one)
    assert_task_shape(two)
    assert [task["version"], one["version"], two["version"]] == [1, 2, 3]
    assert (two["title"], two["status"]) == ("write more tests", "done")
    assert aware(task["updated_at"]) <= aware(one["updated_at"]) <= aware(two["updated_at"])
    assert two["created_at"] == task["created_at"]
    assert (await http.get(f"/api/tasks/{task['id']}/", headers=auth)).json() == two

    child = await http.post(f"/api/projects/{project.pk}/tasks/", headers=auth, json={"title": "sub", "parent_task_id": task["id"]})
    assert child.status_code == 201, child.text
    assert child.json()["parent_task_id"] == task["id"]

    archived = await http.patch(f"/api/tasks/{task['id']}/", headers=auth, json={"archived": True})
    assert archived.status_code == 200
    assert archived.json()["archived"] is True and archived.json()["version"] == 4
    aware(archived.json()["archived_at"])
    visible = await http.get(f"/api/projects/{project.pk}/tasks/", headers=auth)
    assert [t["id"] for t in visible.json()] == [child.json()["id"]]
    everything = await http.get(f"/api/projects/{project.pk}/tasks/", headers=auth, params={"include_archived": "true"})
    assert sorted(t["id"] for t in everything.json()) == sorted([task["id"], child.json()["id"]])

    deleted = await http.delete(f"/api/tasks/{task['id']}/", headers=auth)
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await http.get(f"/api/tasks/{task['id']}/", headers=auth)).status_code == 404
    assert (await http.patch(f"/api/tasks/{task['id']}/", headers=auth, json={"title": "x"})).status_code == 404
    assert (await http.delete(f"/api/tasks/{task['id']}/", headers=auth)).status_code == 404
    # The subtask survives its parent (SET_NULL).
    orphan = await http.get(f"/api/tasks/{child.json()['id']}/", headers=auth)
    assert orphan.status_code == 200 and orphan.json()["parent_task_id"] is None


async def test_reorder_gives_listed_tasks_positions_in_order(http):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    a, b, c = [await db(f.make_task)(project, title=t, task_order=i) for i, t in enumerate("abc")]

    response = await http.post(
        f"/api/projects/{project.pk}/tasks/reorder/", headers=auth, json={"task_ids": [str(a.pk), str(c.pk), str(b.pk)]}
    )
    assert response.status_code == 200, response.text
    moved = response.json()
    for task in moved:
        assert_task_shape(task)
    # a keeps position 0 and is not saved again; c and b move and each get a new version.
    assert [(t["title"], t["task_order"], t["version"]) for t in moved] == [("c", 1, 2), ("b", 2, 2)]

    listed = await http.get(f"/api/projects/{project.pk}/tasks/", headers=auth)
    assert [(t["title"], t["task_order"]) for t in listed.json()] == [("a", 0), ("c", 1), ("b", 2)]
    assert (await http.get(f"/api/tasks/{a.pk}/", headers=auth)).json()["version"] == 1


async def test_reorder_refuses_tasks_of_another_project(http):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    other = await db(f.make_project)(alice, title="other")
    mine = await db(f.make_task)(project, title="mine", task_order=5)
    foreign = await db(f.make_task)(other, title="foreign", task_order=5)

    response = await http.post(
        f"/api/projects/{project.pk}/tasks/reorder/", headers=auth, json={"task_ids": [str(foreign.pk), str(mine.pk)]}
    )
    assert response.status_code == 400
    assert "task_ids" in error_fields(response)
    assert await db(lambda: sorted(Task.objects.values_list("task_order", "version")))() == [(5, 1), (5, 1)]


# --------------------------------------------------------------------------- bad input

BAD_TASK_BODIES = [
    pytest.param({"description": "no title"}, "title", id="missing-title"),
    pytest.param({"title": ""}, "title", id="empty-title"),
    pytest.param({"title": "x", "status": "nope"}, "status", id="bad-status"),
    pytest.param({"title": "x", "bogus": 1}, "bogus", id="unknown-field"),
    pytest.param({"title": "x", "parent_task_id": "not-a-uuid"}, "parent_task_id", id="non-uuid-parent"),
    pytest.param({"title": "x", "parent_task_id": str(uuid.uuid4())}, "parent_task_id", id="unknown-parent"),
    pytest.param({"title": "x", "task_order": "first"}, "task_order", id="non-int-order"),
    pytest.param({"title": "x" * 256}, "title", id="title-too-long"),
]


@pytest.mark.parametrize(("body", "field"), BAD_TASK_BODIES)
async def test_bad_task_input_is_400_with_field_errors(http, body, field):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)

    response = await http.post(f"/api/projects/{project.pk}/tasks/", headers=auth, json=body)
    assert response.status_code == 400, response.text
    assert field in error_fields(response)
    assert await count_tasks() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"status": "nope"}, "status", id="bad-status"),
        pytest.param({"bogus": True}, "bogus", id="unknown-field"),
        pytest.param({"title": ""}, "title", id="empty-title"),
        pytest.param({"parent_task_id": "not-a-uuid"}, "parent_task_id", id="non-uuid-parent"),
        pytest.param({"parent_task_id": "SELF"}, "parent_task_id", id="own-parent"),
    ],
)
async def test_bad_task_patch_is_400_and_changes_nothing(http, body, field):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="keep")
    body = {k: (str(task.pk) if v == "SELF" else v) for k, v in body.items()}

    response = await http.patch(f"/api/tasks/{task.pk}/", headers=auth, json=body)
    assert response.status_code == 400, response.text
    assert field in error_fields(response)
    assert await db(lambda: Task.objects.values_list("title", "status", "version").get())() == ("keep", "todo", 1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "title", id="missing-title"),
        pytest.param({"title": "x", "owner": "bob"}, "owner", id="unknown-field"),
        pytest.param({"title": "x", "member_usernames": ["ghost"]}, "member_usernames", id="unknown-member"),
        pytest.param({"title": "x", "pinned": "very"}, "pinned", id="non-bool"),
    ],
)
async def test_bad_project_input_is_400_with_field_errors(http, body, field):
    alice, auth = await user_and_auth("alice")

    response = await http.post("/api/projects/", headers=auth, json=body)
    assert response.status_code == 400, response.text
    assert field in error_fields(response)
    assert await count_projects() == 0


async def test_malformed_json_body_is_400_and_creates_nothing(http):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)

    response = await http.post(
        f"/api/projects/{project.pk}/tasks/", headers={**auth, "Content-Type": "application/json"}, content=b'{"title": "x",'
    )
    assert response.status_code == 400, response.text
    assert await count_tasks() == 0


async def test_malformed_json_body_error_has_the_common_error_shape(http):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)

    response = await http.post(
        f"/api/projects/{project.pk}/tasks/", headers={**auth, "Content-Type": "application/json"}, content=b'{"title": "x",'
    )
    assert response.status_code == 400
    assert error_fields(response)


async def test_body_that_is_not_an_object_is_400(http):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    for body in ([], "title", 7, None):
        response = await http.post(f"/api/projects/{project.pk}/tasks/", headers=auth, json=body)
        assert response.status_code == 400, (body, response.text)
        assert error_fields(response)
    assert await count_tasks() == 0


async def test_parent_in_another_project_is_400(http):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    elsewhere = await db(f.make_task)(await db(f.make_project)(alice, title="other"), title="elsewhere")
    task = await db(f.make_task)(project, title="child")

    created = await http.post(f"/api/projects/{project.pk}/tasks/", headers=auth, json={"title": "x", "parent_task_id": str(elsewhere.pk)})
    assert created.status_code == 400 and "parent_task_id" in error_fields(created)
    patched = await http.patch(f"/api/tasks/{task.pk}/", headers=auth, json={"parent_task_id": str(elsewhere.pk)})
    assert patched.status_code == 400 and "parent_task_id" in error_fields(patched)
    assert await db(lambda: Task.objects.get(pk=task.pk).parent_task_id)() is None


@pytest.mark.parametrize(
    ("kind", "field"),
    [("task", name) for name in ("description", "feature", "sources", "code_examples")]
    + [("project", name) for name in ("description", "github_repo", "docs", "features", "data")],
)
async def test_patch_with_null_for_a_non_nullable_field_is_400(http, kind, field):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project)
    url = f"/api/tasks/{task.pk}/" if kind == "task" else f"/api/projects/{project.pk}/"

    response = await http.patch(url, headers=auth, json={field: None})
    assert response.status_code == 400, response.status_code
    assert field in error_fields(response)


async def test_reorder_with_duplicate_ids_is_400(http):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="a", task_order=5)

    response = await http.post(f"/api/projects/{project.pk}/tasks/reorder/", headers=auth, json={"task_ids": [str(task.pk), str(task.pk)]})
    assert response.status_code == 400, response.json()
    assert "task_ids" in error_fields(response)
    assert await db(lambda: Task.objects.values_list("task_order", "version").get())() == (5, 1)


async def test_parent_cycle_is_400(http):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    a = await db(f.make_task)(project, title="a")
    b = await db(f.make_task)(project, title="b")

    assert (await http.patch(f"/api/tasks/{a.pk}/", headers=auth, json={"parent_task_id": str(b.pk)})).status_code == 200
    response = await http.patch(f"/api/tasks/{b.pk}/", headers=auth, json={"parent_task_id": str(a.pk)})
    assert response.status_code == 400
    assert "parent_task_id" in error_fields(response)


# --------------------------------------------------------------------------- limits


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


TOO_LONG_TEXT = "x" * (MAX_DESCRIPTION_CHARS + 1)
TOO_MANY_ITEMS = list(range(MAX_JSON_ITEMS + 1))
TOO_MANY_BYTES = ["é" * (MAX_JSON_BYTES // 2)]  # few characters, over the limit in bytes
TOO_DEEP = _nested(MAX_JSON_DEPTH + 1)

OVER_LIMIT_TASK_FIELDS = [
    pytest.param("description", TOO_LONG_TEXT, id="description"),
    pytest.param("sources", TOO_MANY_ITEMS, id="sources-items"),
    pytest.param("sources", TOO_MANY_BYTES, id="sources-bytes"),
    pytest.param("code_examples", TOO_DEEP, id="code_examples-depth"),
    pytest.param("code_examples", TOO_MANY_BYTES, id="code_examples-bytes"),
    pytest.param("task_order", 2**31, id="task_order"),
]
OVER_LIMIT_PROJECT_FIELDS = [
    pytest.param("description", TOO_LONG_TEXT, id="description"),
    pytest.param("docs", TOO_MANY_ITEMS, id="docs-items"),
    pytest.param("features", TOO_MANY_BYTES, id="features-bytes"),
    pytest.param("data", TOO_DEEP, id="data-depth"),
    pytest.param("member_usernames", ["bob"] * (MAX_MEMBERS + 1), id="member_usernames"),
]


def test_the_limits_are_just_above_what_is_allowed():
    """Each over-limit value is one step past a value that is accepted (the tests below refuse the right thing)."""
    from projects.models import json_list_problem

    assert json_list_problem(list(range(MAX_JSON_ITEMS))) is None and json_list_problem(TOO_MANY_ITEMS) is not None
    assert json_list_problem(_nested(MAX_JSON_DEPTH)) is None and json_list_problem(TOO_DEEP) is not None
    assert json_list_problem(["x" * (MAX_JSON_BYTES - 10)]) is None and json_list_problem(TOO_MANY_BYTES) is not None


@pytest.mark.parametrize(("field", "value"), OVER_LIMIT_TASK_FIELDS)
async def test_an_over_limit_task_field_is_400_naming_it(http, field, value):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="kept")

    created = await http.post(f"/api/projects/{project.pk}/tasks/", headers=auth, json={"title": "x", field: value})
    assert created.status_code == 400, created.text[:300]
    assert error_fields(created) == [field]
    patched = await http.patch(f"/api/tasks/{task.pk}/", headers=auth, json={field: value})
    assert patched.status_code == 400, patched.text[:300]
    assert error_fields(patched) == [field]
    assert await count_tasks() == 1
    assert await db(lambda: Task.objects.values_list("title", "version").get())() == ("kept", 1)


@pytest.mark.parametrize(("field", "value"), OVER_LIMIT_PROJECT_FIELDS)
async def test_an_over_limit_project_field_is_400_naming_it(http, field, value):
    alice, auth = await user_and_auth("alice")
    await db(f.make_user)("bob")
    project = await db(f.make_project)(alice, title="kept")

    for body in ({"title": "x", field: value}, {"title": "x", "template": "kanban", field: value}):  # plain and tracked creation
        created = await http.post("/api/projects/", headers=auth, json=body)
        assert created.status_code == 400, created.text[:300]
        assert error_fields(created) == [field]
    patched = await http.patch(f"/api/projects/{project.pk}/", headers=auth, json={field: value})
    assert patched.status_code == 400, patched.text[:300]
    assert error_fields(patched) == [field]
    assert await db(lambda: list(Project.objects.values_list("title", flat=True)))() == ["kept"]


async def test_at_the_limits_is_accepted(http):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    body = {"title": "full", "description": "x" * MAX_DESCRIPTION_CHARS, "sources": list(range(MAX_JSON_ITEMS))}
    body["code_examples"] = _nested(MAX_JSON_DEPTH)
    created = await http.post(f"/api/projects/{project.pk}/tasks/", headers=auth, json=body)
    assert created.status_code == 201, created.text[:300]


async def test_a_body_nested_past_the_parser_is_400_and_the_server_keeps_serving(http):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    deep = b'{"title": "x", "sources": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await http.post(f"/api/projects/{project.pk}/tasks/", headers={**auth, "Content-Type": "application/json"}, content=deep)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["detail"] == "invalid input"
    assert (await http.get(f"/api/projects/{project.pk}/tasks/", headers=auth)).status_code == 200


# --------------------------------------------------------------------------- visibility and permissions


async def test_other_users_and_unknown_objects_are_404(http):
    alice, auth = await user_and_auth("alice")
    bob = await db(f.make_user)("bob")
    theirs = await db(f.make_project)(bob, title="bob's")
    their_task = await db(f.make_task)(theirs, title="bob's task")

    for pid in (theirs.pk, uuid.uuid4()):
        assert (await http.get(f"/api/projects/{pid}/", headers=auth)).status_code == 404
        assert (await http.patch(f"/api/projects/{pid}/", headers=auth, json={"title": "mine now"})).status_code == 404
        assert (await http.delete(f"/api/projects/{pid}/", headers=auth)).status_code == 404
        assert (await http.get(f"/api/projects/{pid}/tasks/", headers=auth)).status_code == 404
        assert (await http.post(f"/api/projects/{pid}/tasks/", headers=auth, json={"title": "sneaky"})).status_code == 404
        assert (await http.post(f"/api/projects/{pid}/tasks/reorder/", headers=auth, json={"task_ids": []})).status_code == 404
    for tid in (their_task.pk, uuid.uuid4()):
        assert (await http.get(f"/api/tasks/{tid}/", headers=auth)).status_code == 404
        assert (await http.patch(f"/api/tasks/{tid}/", headers=auth, json={"title": "mine now"})).status_code == 404
        assert (await http.delete(f"/api/tasks/{tid}/", headers=auth)).status_code == 404
    assert (await http.get("/api/projects/not-a-uuid/", headers=auth)).status_code == 404
    assert (await http.get("/api/tasks/not-a-uuid/", headers=auth)).status_code == 404

    assert (await http.get("/api/projects/", headers=auth)).json() == []
    assert await db(lambda: list(Project.objects.values_list("title", flat=True)))() == ["bob's"]
    assert await db(lambda: list(Task.objects.values_list("title", "version")))() == [("bob's task", 1)]


async def test_member_may_work_on_tasks_but_not_change_the_project(http):
    owner = await db(f.make_user)("owner")
    member, auth = await user_and_auth("member")
    project = await db(f.make_project)(owner, title="shared", members=(member,))

    assert (await http.get(f"/api/projects/{project.pk}/", headers=auth)).status_code == 200
    assert [p["id"] for p in (await http.get("/api/projects/", headers=auth)).json()] == [str(project.pk)]

    refused = await http.patch(f"/api/projects/{project.pk}/", headers=auth, json={"title": "mine"})
    assert refused.status_code == 403
    assert (await http.delete(f"/api/projects/{project.pk}/", headers=auth)).status_code == 403
    assert await db(lambda: list(Project.objects.values_list("title", flat=True)))() == ["shared"]

    created = await http.post(f"/api/projects/{project.pk}/tasks/", headers=auth, json={"title": "member's task"})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    patched = await http.patch(f"/api/tasks/{task_id}/", headers=auth, json={"status": "review"})
    assert patched.status_code == 200 and patched.json()["version"] == 2
    assert (await http.delete(f"/api/tasks/{task_id}/", headers=auth)).status_code == 204


async def test_staff_may_change_any_project(http):
    owner = await db(f.make_user)("owner")
    staff, auth = await user_and_auth("staff", staff=True)
    project = await db(f.make_project)(owner, title="theirs")

    patched = await http.patch(f"/api/projects/{project.pk}/", headers=auth, json={"title": "renamed by staff"})
    assert patched.status_code == 200 and patched.json()["owner"] == "owner"
    assert (await http.delete(f"/api/projects/{project.pk}/", headers=auth)).status_code == 204


# --------------------------------------------------------------------------- authentication


NO_CREDENTIALS = [
    pytest.param({}, id="no-credentials"),
    pytest.param({"Authorization": "Bearer nope"}, id="bad-token"),
    pytest.param({"Authorization": "Bearer"}, id="empty-token"),
    pytest.param({"Authorization": "Bearer " + "x" * 5000}, id="huge-token"),
    pytest.param({"Authorization": "Basic YWxpY2U6cGFzcw=="}, id="wrong-scheme"),
    pytest.param({"Cookie": "sessionid=forged"}, id="forged-session"),
]


async def _target(username: str = "alice") -> tuple[Project, Task]:
    alice = await db(f.make_user)(username)
    project = await db(f.make_project)(alice)
    return project, await db(f.make_task)(project)


async def _assert_untouched() -> None:
    assert (await count_projects(), await count_tasks()) == (1, 1)
    assert await db(lambda: Task.objects.get().version)() == 1


def _writes(project: Project, task: Task) -> list[tuple[str, str, Any]]:
    return [
        ("POST", "/api/projects/", {"title": "x"}),
        ("PATCH", f"/api/projects/{project.pk}/", {"title": "x"}),
        ("DELETE", f"/api/projects/{project.pk}/", None),
        ("POST", f"/api/projects/{project.pk}/tasks/", {"title": "x"}),
        ("POST", f"/api/projects/{project.pk}/tasks/reorder/", {"task_ids": [str(task.pk)]}),
        ("PATCH", f"/api/tasks/{task.pk}/", {"title": "x"}),
        ("DELETE", f"/api/tasks/{task.pk}/", None),
    ]


@pytest.mark.parametrize("headers", NO_CREDENTIALS)
async def test_unauthenticated_reads_are_401(http, headers):
    project, task = await _target()
    for url in ("/api/projects/", f"/api/projects/{project.pk}/", f"/api/projects/{project.pk}/tasks/", f"/api/tasks/{task.pk}/"):
        response = await http.get(url, headers=headers)
        assert response.status_code == 401, (url, response.status_code, response.text)


@pytest.mark.parametrize("headers", NO_CREDENTIALS)
async def test_unauthenticated_writes_are_refused_and_change_nothing(http, headers):
    project, task = await _target()
    for method, url, body in _writes(project, task):
        response = await http.request(method, url, headers=headers, json=body)
        assert response.status_code in (401, 403), (method, url, response.status_code, response.text)
    await _assert_untouched()


@pytest.mark.parametrize("headers", NO_CREDENTIALS)
async def test_unauthenticated_writes_are_401(http, headers):
    project, task = await _target()
    statuses = [(await http.request(method, url, headers=headers, json=body)).status_code for method, url, body in _writes(project, task)]
    assert statuses == [401] * len(statuses)


async def test_deactivated_users_token_is_401(http):
    alice, auth = await user_and_auth("alice")
    assert (await http.get("/api/projects/", headers=auth)).status_code == 200
    alice.is_active = False
    await db(alice.save)()
    assert (await http.get("/api/projects/", headers=auth)).status_code == 401


# --------------------------------------------------------------------------- session + CSRF


def set_cookie_value(response: httpx.Response, name: str) -> str | None:
    for header in response.headers.get_list("set-cookie"):
        jar = SimpleCookie(header)
        if name in jar:
            return jar[name].value
    return None


async def test_session_needs_csrf_for_writes(http):
    alice = await db(f.make_user)("alice")
    session = await db(f.session_cookie)(alice)
    project = await db(f.make_project)(alice, title="Apollo")
    http.cookies.clear()

    listed = await http.get("/api/projects/", headers={"Cookie": session})
    assert listed.status_code == 200 and [p["title"] for p in listed.json()] == ["Apollo"]

    refused = await http.post("/api/projects/", headers={"Cookie": session}, json={"title": "no csrf"})
    assert refused.status_code == 403, refused.text
    refused = await http.post(f"/api/projects/{project.pk}/tasks/", headers={"Cookie": session}, json={"title": "no csrf"})
    assert refused.status_code == 403, refused.text
    refused = await http.delete(f"/api/projects/{project.pk}/", headers={"Cookie": session})
    assert refused.status_code == 403, refused.text
    assert (await count_projects(), await count_tasks()) == (1, 0)

    # Any page that renders a form hands out the CSRF cookie to the logged-in session.
    page = await http.get("/admin/login/", headers={"Cookie": session})
    assert page.status_code == 200
    csrf = set_cookie_value(page, "csrftoken")
    assert csrf
    cookie = f"{session}; csrftoken={csrf}"

    wrong = await http.post("/api/projects/", headers={"Cookie": cookie, "X-CSRFToken": "x" * 32}, json={"title": "wrong csrf"})
    assert wrong.status_code == 403
    missing_header = await http.post("/api/projects/", headers={"Cookie": cookie}, json={"title": "cookie only"})
    assert missing_header.status_code == 403
    assert await count_projects() == 1

    created = await http.post("/api/projects/", headers={"Cookie": cookie, "X-CSRFToken": csrf}, json={"title": "with csrf"})
    assert created.status_code == 201, created.text
    assert created.json()["owner"] == "alice"
    task = await http.post(
        f"/api/projects/{project.pk}/tasks/", headers={"Cookie": cookie, "X-CSRFToken": csrf}, json={"title": "with csrf"}
    )
    assert task.status_code == 201, task.text
    assert (await count_projects(), await count_tasks()) == (2, 1)


async def test_bearer_token_needs_no_csrf_even_with_a_session_cookie(http):
    alice, auth = await user_and_auth("alice")
    session = await db(f.session_cookie)(alice)
    http.cookies.clear()

    created = await http.post("/api/projects/", headers={**auth, "Cookie": session}, json={"title": "scripted"})
    assert created.status_code == 201, created.text


# --------------------------------------------------------------------------- broadcasts


async def _joined(connect: Any, user: Any, project: Project) -> Any:
    client = await connect(user)
    ack = await client.call("join_project", {"project_id": str(project.pk)})
    assert ack == {"ok": True, "project_id": str(project.pk)}
    await client.wait_for("initial_tasks")
    return client


async def test_rest_task_writes_reach_the_room(http, connect):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    client = await _joined(connect, alice, project)

    created = (
        await http.post(f"/api/projects/{project.pk}/tasks/", headers=auth, json={"title": "live", "sources": [{"url": "u"}]})
    ).json()
    event = await client.wait_for("task_created")
    assert_task_shape(event)
    assert unstamped(event) == created  # one JSON shape everywhere (a broadcast adds its recovery stamp, _live)

    updated = (await http.patch(f"/api/tasks/{created['id']}/", headers=auth, json={"status": "doing"})).json()
    event = await client.wait_for("task_updated")
    assert_task_shape(event)
    assert (event["version"], event["status"]) == (2, "doing")
    assert unstamped(event) == updated

    assert (await http.delete(f"/api/tasks/{created['id']}/", headers=auth)).status_code == 204
    assert unstamped(await client.wait_for("task_deleted")) == {"task_id": created["id"], "project_id": str(project.pk)}


async def test_rest_reorder_sends_task_updated_for_each_moved_task(http, connect):
    alice, auth = await user_and_auth("alice")
    project = await db(f.make_project)(alice)
    a, b, c = [await db(f.make_task)(project, title=t, task_order=i) for i, t in enumerate("abc")]
    client = await _joined(connect, alice, project)

    response = await http.post(
        f"/api/projects/{project.pk}/tasks/reorder/", headers=auth, json={"task_ids": [str(a.pk), str(c.pk), str(b.pk)]}
    )
    assert response.status_code == 200
    moved = {t["id"]: t for t in response.json()}
    events = {e["id"]: unstamped(e) for e in [await client.wait_for("task_updated") for _ in moved]}
    assert {i: (e["task_order"], e["version"]) for i, e in events.items()} == {str(c.pk): (1, 2), str(b.pk): (2, 2)}
    assert events == moved

    # A marker sent after proves that no update for the unmoved task was on its way.
    marker = (await http.post(f"/api/projects/{project.pk}/tasks/", headers=auth, json={"title": "marker"})).json()
    await client.wait_for("task_created", lambda t: t["id"] == marker["id"])
    assert sorted(e["id"] for e in client.received("task_updated")) == sorted([str(b.pk), str(c.pk)])


async def test_rest_project_create_reaches_subscribed_lists(http, connect):
    alice, auth = await user_and_auth("alice")
    bob = await db(f.make_user)("bob")
    await db(f.make_user)("carol")
    await db(f.make_project)(alice, title="existing")
    mine = await connect(alice)
    theirs = await connect(bob)
    for client in (mine, theirs):
        assert await client.call("subscribe_projects") == {"ok": True}
        await client.wait_for("projects_update")

    created = await http.post("/api/projects/", headers=auth, json={"title": "Apollo", "member_usernames": ["bob"]})
    assert created.status_code == 201
    project = created.json()

    def has_new(update: Any) -> bool:
        return any(p["id"] == project["id"] for p in update["projects"])

    update = await mine.wait_for("projects_update", has_new)
    assert sorted(p["title"] for p in update["projects"]) == ["Apollo", "existing"]
    entry = next(p for p in update["projects"] if p["id"] == project["id"])
    assert_project_shape(entry)
    assert (entry["title"], entry["owner"]) == ("Apollo", "alice")
    update = await theirs.wait_for("projects_update", has_new)
    assert [p["title"] for p in update["projects"]] == ["Apollo"]


async def test_rest_member_removal_takes_away_live_access(http, connect):
    alice, auth = await user_and_auth("alice")
    bob = await db(f.make_user)("bob")
    project = await db(f.make_project)(alice, title="shared", members=(bob,))
    watcher = await _joined(connect, bob, project)
    assert await watcher.call("subscribe_projects") == {"ok": True}
    assert [p["title"] for p in (await watcher.wait_for("projects_update"))["projects"]] == ["shared"]

    patched = await http.patch(f"/api/projects/{project.pk}/", headers=auth, json={"member_usernames": []})
    assert patched.status_code == 200
    update = await watcher.wait_for("projects_update", lambda u: u["projects"] == [])
    assert (update["projects"], update["part"], update["parts"]) == ([], 1, 1)

    # Out of the room: a task created after the removal does not reach bob; a marker in his own project does.
    await http.post(f"/api/projects/{project.pk}/tasks/", headers=auth, json={"title": "secret"})
    own = await db(f.make_project)(bob, title="bob's")
    assert (await watcher.call("join_project", {"project_id": str(own.pk)}))["ok"] is True
    await db(f.make_task)(own, title="marker")
    await watcher.wait_for("task_created", lambda t: t["title"] == "marker")
    assert [t["title"] for t in watcher.received("task_created")] == ["marker"]
    assert await watcher.call("join_project", {"project_id": str(project.pk)}) == {"ok": False, "error": "project not found"}


# --------------------------------------------------------------------------- snapshots in bounded frames

FRAME_BYTES = 8_000


def _frame_size(frame: dict[str, Any]) -> int:
    return len(json.dumps(frame, separators=(",", ":")))  # as python-socketio encodes it


def _one_snapshot(frames: list[dict[str, Any]], key: str, *, limit: int = FRAME_BYTES) -> list[dict[str, Any]]:
    """The items of one snapshot's frames, after checking the frames: one id, parts 1..n in order, each within the bound."""
    assert frames, "no frame"
    assert len({frame["snapshot"] for frame in frames}) == 1
    assert [frame["part"] for frame in frames] == list(range(1, len(frames) + 1))
    assert {frame["parts"] for frame in frames} == {len(frames)}
    for frame in frames:
        assert _frame_size(frame) <= limit or len(frame[key]) == 1, (_frame_size(frame), len(frame[key]))
    return [item for frame in frames for item in frame[key]]


def _many(project: Project) -> list[str]:
    ids = [str(f.make_task(project, title=f"task {i:02}", description="d" * 900, task_order=i).pk) for i in range(30)]
    ids.insert(11, str(f.make_task(project, title="huge", description="h" * 12_000, task_order=10).pk))  # after "task 10"; goes alone
    f.make_task(project, title="archived", archived=True, task_order=99)  # not in the snapshot
    return ids


async def test_initial_tasks_come_in_bounded_frames_that_together_hold_every_task(connect, settings):
    settings.REALTIME_SNAPSHOT_FRAME_BYTES = FRAME_BYTES  # the in-process server reads it per snapshot
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    ids = await db(_many)(project)

    client = await connect(alice)
    assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"] is True
    frames = client.received("initial_tasks")  # all sent before the answer
    tasks = _one_snapshot(frames, "tasks")
    print(f"\n{len(tasks)} tasks in {len(frames)} initial_tasks frames: {[_frame_size(fr) for fr in frames]} bytes")
    assert len(frames) >= 4
    assert all(frame["project_id"] == str(project.pk) for frame in frames)
    assert [t["id"] for t in tasks] == ids  # all of them, once each, in board order
    assert [t["title"] for t in next(fr for fr in frames if any(t["title"] == "huge" for t in fr["tasks"]))["tasks"]] == ["huge"]


async def test_a_small_snapshot_is_one_frame(connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project)
    client = await connect(alice)
    await client.call("join_project", {"project_id": str(project.pk)})
    [frame] = client.received("initial_tasks")
    assert (frame["part"], frame["parts"], [t["id"] for t in frame["tasks"]]) == (1, 1, [str(task.pk)])
    assert await client.call("subscribe_projects") == {"ok": True}
    [frame] = client.received("projects_update")
    assert (frame["part"], frame["parts"], [p["id"] for p in frame["projects"]]) == (1, 1, [str(project.pk)])


async def _complete_update(client: Any, key: str = "projects") -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Wait for the last frame of a snapshot; return that snapshot's frames (in order) and its items."""
    last = await client.wait_for("projects_update", lambda u: u["part"] == u["parts"])
    frames = [u for u in client.received("projects_update") if u["snapshot"] == last["snapshot"]]
    return frames, _one_snapshot(frames, key)


async def test_projects_update_comes_in_bounded_frames_on_subscribe_and_on_change(http, connect, settings):
    settings.REALTIME_SNAPSHOT_FRAME_BYTES = FRAME_BYTES
    alice, auth = await user_and_auth("alice")

    def make_projects() -> list[str]:
        return [str(Project.objects.create(owner=alice, title=f"p{i:02}", description="d" * 900).pk) for i in range(25)]

    ids = set(await db(make_projects)())
    client = await connect(alice)
    assert await client.call("subscribe_projects") == {"ok": True}
    frames, projects = await _complete_update(client)
    print(f"\n{len(projects)} projects in {len(frames)} projects_update frames (subscribe)")
    assert len(frames) >= 3 and {p["id"] for p in projects} == ids and len(projects) == len(ids)

    created = await http.post("/api/projects/", headers=auth, json={"title": "p99", "description": "d" * 900})
    assert created.status_code == 201
    frames, projects = await _complete_update(client)
    print(f"{len(projects)} projects in {len(frames)} projects_update frames (broadcast)")
    assert len(frames) >= 3 and {p["id"] for p in projects} == ids | {created.json()["id"]} and len(projects) == len(ids) + 1


@pytest.mark.parametrize("client_kind", ["node"])  # python-socketio's long-polling client takes a minute to close
async def test_a_snapshot_larger_than_the_unsent_bound_waits_for_a_slow_reader(connect, settings):
    # A long-polling client reads only when it polls: a snapshot sent all at once would sit unread
    # over REALTIME_MAX_BUFFERED_BYTES, and the connection would be dropped for it.
    settings.REALTIME_SNAPSHOT_FRAME_BYTES = FRAME_BYTES
    settings.REALTIME_MAX_BUFFERED_BYTES = 40_000
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    ids = await db(lambda: [str(f.make_task(project, title=f"t{i:03}", description="d" * 900, task_order=i).pk) for i in range(120)])()

    client = await connect(alice, transports=["polling"])
    answer = await client.call("join_project", {"project_id": str(project.pk)}, timeout=30)
    assert answer == {"ok": True, "project_id": str(project.pk)}
    frames = client.received("initial_tasks")
    size = sum(_frame_size(frame) for frame in frames)
    print(f"\nsnapshot of {size} bytes in {len(frames)} frames over long-polling, unsent bound 40000: delivered whole")
    assert size > 3 * settings.REALTIME_MAX_BUFFERED_BYTES
    assert [t["id"] for t in _one_snapshot(frames, "tasks")] == ids
    assert client.connected
