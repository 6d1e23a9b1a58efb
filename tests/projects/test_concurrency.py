"""Concurrent writes against the live server: no lost updates, If-Match / expected_version, and a reorder that
neither takes quadratic time nor keeps other users waiting."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from projects.models import MAX_REORDER_IDS, Project, Task
from tests.conftest import db
from tests.support import factories as f

from .test_api import assert_project_shape, assert_task_shape, bearer, error_fields

PAIRS = 20
STATUSES = ["todo", "doing", "review", "done"]


class Actor(httpx.AsyncClient):
    """A user's own HTTP client (own connections, bearer token)."""

    user: Any


@pytest.fixture
async def clients(server: Any) -> AsyncIterator[dict[str, Actor]]:
    """alice (will own the projects), bob (a member or an outsider) and root (staff), each with a client."""
    made: dict[str, Actor] = {}
    for name, staff in (("alice", False), ("bob", False), ("root", True)):
        user = await db(f.make_user)(name, staff=staff)
        made[name] = Actor(base_url=server.url, timeout=30, headers=bearer(await db(f.token_for)(user)))
        made[name].user = user
    yield made
    for client in made.values():
        await client.aclose()


def _row(model: type, pk: Any, *fields: str) -> Any:
    return db(lambda: model.objects.values_list(*fields).get(pk=pk))()


# --------------------------------------------------------------------------- no lost updates


async def test_concurrent_task_patches_of_different_fields_both_stick(clients):
    alice, bob = clients["alice"], clients["bob"]
    project = await db(f.make_project)(alice.user, title="Race", members=(bob.user,))
    task = await db(f.make_task)(project, title="start")
    url = f"/api/tasks/{task.pk}/"

    lost = 0
    for i in range(PAIRS):
        title, status = f"title {i}", STATUSES[(i + 1) % len(STATUSES)]
        (version_before,) = await _row(Task, task.pk, "version")
        # Both at the same moment, each on its own connection: the server handles them in two threads.
        renamed, moved = await asyncio.gather(alice.patch(url, json={"title": title}), bob.patch(url, json={"status": status}))
        assert renamed.status_code == 200 and moved.status_code == 200, (renamed.text, moved.text)
        row = await _row(Task, task.pk, "title", "status", "version")
        if row != (title, status, version_before + 2):
            lost += 1
    print(f"\ntask: lost fields: {lost} of {PAIRS} pairs")
    assert lost == 0


async def test_concurrent_project_patches_of_different_fields_both_stick(clients):
    alice, root = clients["alice"], clients["root"]
    project = await db(f.make_project)(alice.user, title="Race")
    url = f"/api/projects/{project.pk}/"

    lost = 0
    for i in range(PAIRS):
        title, description = f"title {i}", f"description {i}"
        renamed, described = await asyncio.gather(
            alice.patch(url, json={"title": title}),
            root.patch(url, json={"description": description}),
        )
        assert renamed.status_code == 200 and described.status_code == 200, (renamed.text, described.text)
        if await _row(Project, project.pk, "title", "description") != (title, description):
            lost += 1
    print(f"\nproject: lost fields: {lost} of {PAIRS} pairs")
    assert lost == 0


async def test_a_patch_writes_only_the_fields_it_names(clients):
    """A PATCH acts on the row as it is when the write happens, not as it was when the request began."""
    alice = clients["alice"]
    project = await db(f.make_project)(alice.user)
    task = await db(f.make_task)(project, title="kept", description="old")

    # Changed behind the API's back (no broadcast, no version): a PATCH of the title must not write it back.
    await db(lambda: Task.objects.filter(pk=task.pk).update(description="changed meanwhile"))()
    patched = await alice.patch(f"/api/tasks/{task.pk}/", json={"status": "done"})
    assert patched.status_code == 200
    assert (patched.json()["description"], patched.json()["status"]) == ("changed meanwhile", "done")
    assert await _row(Task, task.pk, "title", "description", "status", "version") == ("kept", "changed meanwhile", "done", 2)

    # An empty PATCH writes nothing: no new version.
    assert (await alice.patch(f"/api/tasks/{task.pk}/", json={})).json()["version"] == 2
    assert await _row(Task, task.pk, "version") == (2,)


# --------------------------------------------------------------------------- If-Match / expected_version


async def test_task_if_match_stale_is_409_with_the_current_task_and_fresh_is_200(clients):
    alice, bob = clients["alice"], clients["bob"]
    project = await db(f.make_project)(alice.user, members=(bob.user,))
    task = await db(f.make_task)(project, title="v1")
    url = f"/api/tasks/{task.pk}/"

    fetched = await alice.get(url)
    assert fetched.headers["ETag"] == '"1"'

    fresh = await alice.patch(url, json={"title": "alice's"}, headers={"If-Match": fetched.headers["ETag"]})
    assert fresh.status_code == 200 and fresh.json()["version"] == 2 and fresh.headers["ETag"] == '"2"'

    stale = await bob.patch(url, json={"status": "done"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 409, stale.text
    body = stale.json()
    assert set(body) == {"detail", "current"} and body["detail"] == "version conflict"
    assert_task_shape(body["current"])
    assert body["current"] == fresh.json()  # the other user's change, to show
    assert stale.headers["ETag"] == '"2"'
    assert await _row(Task, task.pk, "title", "status", "version") == ("alice's", "todo", 2)  # nothing written

    # Every spelling of the same tag; a list matches if any tag does; * matches any version.
    for version, header in enumerate(["2", 'W/"3"', '"99", "4"', "*"], start=2):
        answer = await bob.patch(url, json={"assignee": f"bob {version}"}, headers={"If-Match": header})
        assert answer.status_code == 200, (header, answer.text)
        assert answer.json()["version"] == version + 1

    # The same condition in the body.
    assert (await bob.patch(url, json={"title": "x", "expected_version": 1})).status_code == 409
    body_fresh = await bob.patch(url, json={"title": "bob's", "expected_version": 6})
    assert body_fresh.status_code == 200 and body_fresh.json()["version"] == 7


async def test_if_match_refusals_that_are_not_conflicts(clients):
    alice, bob = clients["alice"], clients["bob"]
    project = await db(f.make_project)(alice.user)
    task = await db(f.make_task)(project, title="t")
    url = f"/api/tasks/{task.pk}/"

    malformed = await alice.patch(url, json={"title": "x"}, headers={"If-Match": '"'})
    assert malformed.status_code == 400 and "If-Match" in error_fields(malformed)
    disagreeing = await alice.patch(url, json={"title": "x", "expected_version": 1}, headers={"If-Match": '"5"'})
    assert disagreeing.status_code == 400 and "expected_version" in error_fields(disagreeing)
    # Someone who may not see the task learns nothing from a condition: 404 as ever.
    assert (await bob.patch(url, json={"title": "x"}, headers={"If-Match": '"1"'})).status_code == 404
    assert (await bob.patch(url, json={"title": "x"}, headers={"If-Match": '"9"'})).status_code == 404
    assert await _row(Task, task.pk, "title", "version") == ("t", 1)


async def test_task_delete_with_a_stale_if_match_is_409_and_keeps_the_task(clients):
    alice = clients["alice"]
    project = await db(f.make_project)(alice.user)
    task = await db(f.make_task)(project, title="t")
    url = f"/api/tasks/{task.pk}/"
    assert (await alice.patch(url, json={"title": "changed"})).status_code == 200

    stale = await alice.delete(url, headers={"If-Match": '"1"'})
    assert stale.status_code == 409 and stale.json()["current"]["title"] == "changed"
    assert await db(Task.objects.filter(pk=task.pk).exists)()
    assert (await alice.delete(url, headers={"If-Match": '"2"'})).status_code == 204
    assert not await db(Task.objects.filter(pk=task.pk).exists)()


async def test_project_if_match_uses_the_etag_from_updated_at(clients):
    alice, root = clients["alice"], clients["root"]
    await db(f.make_user)("carol")
    project = await db(f.make_project)(alice.user, title="p")
    url = f"/api/projects/{project.pk}/"

    etag = (await alice.get(url)).headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    fresh = await alice.patch(url, json={"title": "alice's"}, headers={"If-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["ETag"] != etag

    stale = await root.patch(url, json={"description": "root's"}, headers={"If-Match": etag})
    assert stale.status_code == 409
    assert stale.json()["detail"] == "version conflict"
    assert_project_shape(stale.json()["current"])
    assert stale.json()["current"] == fresh.json()
    assert await _row(Project, project.pk, "title", "description") == ("alice's", "")

    # A member change moves the ETag too: an edit made before it is stale.
    members = await root.patch(url, json={"member_usernames": ["carol"]}, headers={"If-Match": fresh.headers["ETag"]})
    assert members.status_code == 200 and members.headers["ETag"] != fresh.headers["ETag"]
    assert (await alice.patch(url, json={"pinned": True}, headers={"If-Match": fresh.headers["ETag"]})).status_code == 409
    assert (await alice.patch(url, json={"pinned": True}, headers={"If-Match": members.headers["ETag"]})).status_code == 200


# --------------------------------------------------------------------------- reorder


async def test_reorder_of_5000_ids_with_a_duplicate_is_400_at_once(clients):
    alice = clients["alice"]
    project = await db(f.make_project)(alice.user)
    ids = [str(uuid.uuid4()) for _ in range(MAX_REORDER_IDS - 1)]
    ids.append(ids[1234])

    started = time.perf_counter()
    response = await alice.post(f"/api/projects/{project.pk}/tasks/reorder/", json={"task_ids": ids})
    elapsed = time.perf_counter() - started
    print(f"\nreorder of {len(ids)} ids with a duplicate: {response.status_code} in {elapsed * 1000:.0f} ms")
    assert response.status_code == 400
    assert error_fields(response) == ["task_ids"]
    assert ids[1234] in response.json()["errors"][0]["message"]


async def test_reorder_over_the_cap_is_400(clients):
    alice = clients["alice"]
    project = await db(f.make_project)(alice.user)
    ids = [str(uuid.uuid4()) for _ in range(MAX_REORDER_IDS + 1)]
    response = await alice.post(f"/api/projects/{project.pk}/tasks/reorder/", json={"task_ids": ids})
    assert response.status_code == 400
    assert "task_ids" in error_fields(response)
    assert str(MAX_REORDER_IDS) in response.json()["errors"][0]["message"]


def _many_tasks(project: Project, count: int) -> list[str]:
    # bulk_create: quick set-up data (it broadcasts nothing, and nobody watches here).
    tasks = Task.objects.bulk_create(Task(project=project, title=f"task {i}", task_order=i, version=1) for i in range(count))
    return [str(t.pk) for t in tasks]


async def test_other_users_patches_go_through_during_a_large_reorder(clients):
    alice, bob = clients["alice"], clients["bob"]
    big = await db(f.make_project)(alice.user, title="big")
    ids = await db(_many_tasks)(big, MAX_REORDER_IDS)
    elsewhere = await db(f.make_project)(bob.user, title="bob's")
    bobs_task = await db(f.make_task)(elsewhere, title="bob's task")

    reorder = asyncio.create_task(alice.post(f"/api/projects/{big.pk}/tasks/reorder/", json={"task_ids": ids[::-1]}))
    started = time.perf_counter()
    latencies: list[float] = []
    while not reorder.done():
        sent = time.perf_counter()
        answer = await bob.patch(f"/api/tasks/{bobs_task.pk}/", json={"title": f"edit {len(latencies)}"})
        latencies.append(time.perf_counter() - sent)
        assert answer.status_code == 200, answer.text
    response = await reorder
    took = time.perf_counter() - started
    print(
        f"\nreorder of {len(ids)} tasks (all moved): {took * 1000:.0f} ms; {len(latencies)} PATCHes by another user meanwhile, "
        f"worst {max(latencies) * 1000:.0f} ms, median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms"
    )
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()) == len(ids) - (1 if len(ids) % 2 else 0)  # the middle one stays where it is
    assert len(latencies) >= 1
    orders = await db(lambda: dict(Task.objects.filter(project=big).values_list("pk", "task_order")))()
    assert [str(pk) for pk, _ in sorted(orders.items(), key=lambda item: item[1])] == ids[::-1]
    assert await _row(Task, bobs_task.pk, "version") == (1 + len(latencies),)
