"""Changes made through the Django admin's own forms, over HTTP against the live server, reach the Socket.IO rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from selectolax.lexbor import LexborHTMLParser

from projects import services
from projects.models import MAX_DESCRIPTION_CHARS, Project, Task
from tests.conftest import db
from tests.support import factories as f


class Form(list):
    """What a browser would submit for a form: (name, value) pairs; ``names`` are all its fields, set or not."""

    names: set[str]

    def replace(self, **changes: str | list[str]) -> list[tuple[str, str]]:
        """The fields with some set to new values (a list for a multiple select)."""
        missing = set(changes) - self.names
        assert not missing, f"the form has no field {missing}; it has {sorted(self.names)}"
        kept = [(n, v) for n, v in self if n not in changes]
        for name, value in changes.items():
            kept += [(name, v) for v in value] if isinstance(value, list) else [(name, value)]
        return kept


def form_fields(html: str, selector: str) -> Form:
    """The form's successful controls (submit buttons and the inline's empty template left out)."""
    form = LexborHTMLParser(html).css_first(selector)
    assert form is not None, f"no {selector} in the page"
    fields = Form()
    fields.names = set()
    for node in form.css("input[name], select[name], textarea[name]"):
        name = node.attributes["name"]
        if "__prefix__" in name or "disabled" in node.attributes:
            continue
        fields.names.add(name)
        if node.tag == "input":
            kind = (node.attributes.get("type") or "text").lower()
            if kind in ("submit", "button", "image", "reset", "file"):
                continue
            if kind in ("checkbox", "radio"):
                if "checked" in node.attributes:
                    fields.append((name, node.attributes.get("value") or "on"))
                continue
            fields.append((name, node.attributes.get("value") or ""))
        elif node.tag == "select":
            options = node.css("option")
            chosen = [o for o in options if "selected" in o.attributes]
            if not chosen and "multiple" not in node.attributes and options:
                chosen = options[:1]
            fields.extend((name, o.attributes.get("value") or "") for o in chosen)
        else:
            fields.append((name, node.text()))
    return fields


SAVE = ("_save", "Save")  # the button a browser submits with the form


class Admin:
    """A browser-like admin session: one cookie jar, the login form, then forms fetched and posted back."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def login(self, username: str, password: str = f.PASSWORD) -> None:
        page = await self.client.get("/admin/login/")
        assert page.status_code == 200 and "csrftoken" in self.client.cookies
        fields = dict(form_fields(page.text, "form#login-form"))
        fields.update(username=username, password=password, next="/admin/")
        response = await self.client.post("/admin/login/?next=/admin/", data=fields)
        assert response.status_code == 302 and response.headers["location"] == "/admin/", response.text[:2000]
        assert (await self.client.get("/admin/")).status_code == 200

    async def form(self, url: str, selector: str) -> Form:
        page = await self.client.get(url)
        assert page.status_code == 200, (url, page.status_code)
        return form_fields(page.text, selector)

    async def post(self, url: str, fields: list[tuple[str, str]]) -> httpx.Response:
        response = await self.client.post(url, data=_multi(fields))
        # The admin answers a successful POST with a redirect; a 200 means the form came back with errors.
        assert response.status_code == 302, _form_errors(response.text)
        return response


def _multi(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    data: dict[str, list[str]] = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    return data


def _form_errors(html: str) -> str:
    tree = LexborHTMLParser(html)
    errors = [n.text(strip=True) for n in tree.css(".errornote, .errorlist")]
    return f"admin form refused: {errors}" if errors else html[:2000]


@pytest.fixture
async def admin(server: Any) -> AsyncIterator[Admin]:
    await db(f.make_user)("root", superuser=True)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        session = Admin(client)
        await session.login("root")
        yield session


async def _joined(connect: Any, user: Any, project: Project) -> Any:
    client = await connect(user)
    assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"] is True
    await client.wait_for("initial_tasks")
    return client


async def test_login_form_refuses_a_wrong_password(server):
    await db(f.make_user)("root", superuser=True)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        page = await client.get("/admin/login/")
        fields = dict(form_fields(page.text, "form#login-form"))
        fields.update(username="root", password="wrong")
        response = await client.post("/admin/login/?next=/admin/", data=fields)
        assert response.status_code == 200 and "sessionid" not in client.cookies
        assert (await client.get("/admin/")).status_code == 302


async def test_task_change_form_reaches_the_room(admin, connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice, title="Apollo")
    task = await db(f.make_task)(project, title="before", sources=[{"url": "keep me"}])
    client = await _joined(connect, alice, project)

    url = f"/admin/projects/task/{task.pk}/change/"
    fields = await admin.form(url, "form#task_form")
    assert ("title", "before") in fields and ("status", "todo") in fields and ("project", str(project.pk)) in fields
    await admin.post(url, [*fields.replace(title="after", status="review"), SAVE])

    event = await client.wait_for("task_updated")
    assert (event["id"], event["title"], event["status"], event["version"]) == (str(task.pk), "after", "review", 2)
    assert event["sources"] == [{"url": "keep me"}]
    assert await db(lambda: Task.objects.values_list("title", "status", "version").get(pk=task.pk))() == ("after", "review", 2)


async def test_changelist_bulk_delete_reaches_the_room(admin, connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    doomed = [await db(f.make_task)(project, title=f"doomed {i}", task_order=i) for i in range(3)]
    survivor = await db(f.make_task)(project, title="survivor", task_order=9)
    client = await _joined(connect, alice, project)

    fields = await admin.form("/admin/projects/task/", "form#changelist-form")
    csrf = dict(fields)["csrfmiddlewaretoken"]
    selected = [("_selected_action", str(t.pk)) for t in doomed]
    await admin.post("/admin/projects/task/", [("csrfmiddlewaretoken", csrf), ("action", "delete_selected"), ("post", "yes"), *selected])

    events = [await client.wait_for("task_deleted") for _ in doomed]
    assert sorted(e["task_id"] for e in events) == sorted(str(t.pk) for t in doomed)
    assert all(e["project_id"] == str(project.pk) for e in events)
    assert await db(lambda: list(Task.objects.values_list("pk", flat=True)))() == [survivor.pk]


async def test_changelist_list_editable_save_reaches_the_room(admin, connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="edited in the list")
    client = await _joined(connect, alice, project)

    fields = await admin.form("/admin/projects/task/", "form#changelist-form")
    assert ("form-0-id", str(task.pk)) in fields
    await admin.post("/admin/projects/task/", [*fields.replace(**{"form-0-status": "done", "form-0-task_order": "7"}), SAVE])

    event = await client.wait_for("task_updated")
    assert (event["id"], event["status"], event["task_order"], event["version"]) == (str(task.pk), "done", 7, 2)


async def test_project_inline_task_edit_reaches_the_room(admin, connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="inline before")
    client = await _joined(connect, alice, project)

    url = f"/admin/projects/project/{project.pk}/change/"
    fields = await admin.form(url, "form#project_form")
    assert ("tasks-0-id", str(task.pk)) in fields
    await admin.post(url, [*fields.replace(**{"tasks-0-title": "inline after"}), SAVE])

    event = await client.wait_for("task_updated")
    assert (event["id"], event["title"], event["version"]) == (str(task.pk), "inline after", 2)


async def test_admin_added_project_with_members_reaches_the_members_list(admin, connect):
    alice = await db(f.make_user)("alice")
    bob = await db(f.make_user)("bob")
    carol = await db(f.make_user)("carol")
    watchers = {}
    for user in (bob, carol):
        client = await connect(user)
        assert await client.call("subscribe_projects") == {"ok": True}
        update = await client.wait_for("projects_update")
        assert (update["projects"], update["part"], update["parts"]) == ([], 1, 1)
        watchers[user.username] = client

    fields = await admin.form("/admin/projects/project/add/", "form#project_form")
    await admin.post(
        "/admin/projects/project/add/", [*fields.replace(title="From the admin", owner=str(alice.pk), members=[str(bob.pk)]), SAVE]
    )

    project = await db(lambda: Project.objects.get(title="From the admin"))()
    assert await db(lambda: list(project.members.values_list("username", flat=True)))() == ["bob"]
    update = await watchers["bob"].wait_for("projects_update", lambda u: any(p["id"] == str(project.pk) for p in u["projects"]))
    assert [(p["title"], p["owner"]) for p in update["projects"]] == [("From the admin", "alice")]

    # carol is no member: a marker project of hers proves nothing about the admin's project was on its way to her.
    await db(f.make_project)(carol, title="marker")
    marker = await watchers["carol"].wait_for("projects_update", lambda u: any(p["title"] == "marker" for p in u["projects"]))
    assert [p["title"] for p in marker["projects"]] == ["marker"]
    assert all(p["title"] != "From the admin" for u in watchers["carol"].received("projects_update") for p in u["projects"])


# --------------------------------------------------------------------------- edits made meanwhile are kept


async def test_change_form_writes_only_what_was_changed_on_the_page(admin, connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="before", description="as drawn")
    client = await _joined(connect, alice, project)

    url = f"/admin/projects/task/{task.pk}/change/"
    fields = await admin.form(url, "form#task_form")  # the page as the admin sees it
    # Someone else changes the description (and status) while the page is open.
    await db(lambda: services.task_update(task=Task.objects.get(pk=task.pk), description="changed meanwhile", status="doing"))()
    assert (await client.wait_for("task_updated"))["version"] == 2

    await admin.post(url, [*fields.replace(title="renamed in the admin"), SAVE])
    row = await db(lambda: Task.objects.values_list("title", "description", "status", "version").get(pk=task.pk))()
    assert row == ("renamed in the admin", "changed meanwhile", "doing", 3)
    # The broadcast of the admin's save carries the other change too: no screen goes back to the stale value.
    event = await client.wait_for("task_updated")
    assert (event["title"], event["description"], event["status"], event["version"]) == row


async def test_an_unchanged_change_form_writes_nothing(admin):
    alice = await db(f.make_user)("alice")
    task = await db(f.make_task)(await db(f.make_project)(alice), title="same")
    url = f"/admin/projects/task/{task.pk}/change/"
    fields = await admin.form(url, "form#task_form")
    await db(lambda: Task.objects.filter(pk=task.pk).update(title="changed meanwhile"))()
    await admin.post(url, [*fields, SAVE])
    assert await db(lambda: Task.objects.values_list("title", "version").get(pk=task.pk))() == ("changed meanwhile", 1)


async def test_project_form_keeps_a_description_and_members_changed_meanwhile(admin):
    alice = await db(f.make_user)("alice")
    await db(f.make_user)("bob")
    project = await db(f.make_project)(alice, title="before")
    task = await db(f.make_task)(project, title="inline task")
    url = f"/admin/projects/project/{project.pk}/change/"
    fields = await admin.form(url, "form#project_form")

    def meanwhile() -> None:
        services.project_update(project=Project.objects.get(pk=project.pk), description="changed meanwhile", member_usernames=["bob"])
        services.task_update(task=Task.objects.get(pk=task.pk), status="review")

    await db(meanwhile)()
    await admin.post(url, [*fields.replace(title="after", **{"tasks-0-title": "inline renamed"}), SAVE])

    saved = await db(Project.objects.get)(pk=project.pk)
    assert (saved.title, saved.description) == ("after", "changed meanwhile")
    assert await db(lambda: list(saved.members.values_list("username", flat=True)))() == ["bob"]
    assert await db(lambda: Task.objects.values_list("title", "status", "version").get(pk=task.pk))() == ("inline renamed", "review", 3)


async def test_changelist_edit_keeps_an_order_changed_meanwhile(admin):
    alice = await db(f.make_user)("alice")
    task = await db(f.make_task)(await db(f.make_project)(alice), title="listed")
    fields = await admin.form("/admin/projects/task/", "form#changelist-form")  # status and task_order are editable there
    await db(lambda: services.task_update(task=Task.objects.get(pk=task.pk), task_order=7))()
    await admin.post("/admin/projects/task/", [*fields.replace(**{"form-0-status": "done"}), SAVE])
    assert await db(lambda: Task.objects.values_list("task_order", "status", "version").get(pk=task.pk))() == (7, "done", 3)


async def test_the_admin_refuses_an_over_long_description(admin):
    alice = await db(f.make_user)("alice")
    task = await db(f.make_task)(await db(f.make_project)(alice), title="bounded")
    url = f"/admin/projects/task/{task.pk}/change/"
    fields = await admin.form(url, "form#task_form")
    response = await admin.client.post(url, data=_multi([*fields.replace(description="x" * (MAX_DESCRIPTION_CHARS + 1)), SAVE]))
    assert response.status_code == 200  # the form again, with its error
    assert "at most 20000 characters" in _form_errors(response.text).replace(",", "")
    assert await db(lambda: Task.objects.values_list("description", "version").get(pk=task.pk))() == ("", 1)
