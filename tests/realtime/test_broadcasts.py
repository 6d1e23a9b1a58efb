"""Model changes reach exactly the rooms that should see them, only after commit."""

import asyncio

from django.db import transaction

from projects import services
from projects.live import PROJECT
from projects.models import Project, Task
from realtime import emit_now_ignoring_transaction
from realtime.testing import unstamped
from tests.conftest import db
from tests.support import factories as f


async def _joined(connect, user, project):
    client = await connect(user)
    assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"]
    await client.wait_for("initial_tasks")
    return client


async def _marker(client, project):
    """Save a task in ``project`` (which ``client`` watches) and wait for it: everything sent before has arrived."""
    task = await db(f.make_task)(project, title="marker")
    await client.wait_for("task_created", lambda t: t["id"] == str(task.pk))


async def test_saves_updates_and_deletes_reach_the_room_in_order(connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await _joined(connect, alice, project)

    task = await db(f.make_task)(project, title="write tests")
    created = await client.wait_for("task_created")
    assert created["id"] == str(task.pk) and created["version"] == 1 and created["project_id"] == str(project.pk)

    def edit() -> None:
        t = Task.objects.get(pk=task.pk)
        t.status = "doing"
        t.save()
        t.title = "write more tests"
        t.save(update_fields=["title"])

    await db(edit)()
    first = await client.wait_for("task_updated")
    second = await client.wait_for("task_updated")
    assert (first["version"], first["status"]) == (2, "doing")
    assert (second["version"], second["title"]) == (3, "write more tests")
    assert second["updated_at"] >= first["updated_at"]

    await db(lambda: Task.objects.get(pk=task.pk).delete())()
    assert unstamped(await client.wait_for("task_deleted")) == {"task_id": str(task.pk), "project_id": str(project.pk)}


async def test_a_client_in_project_a_receives_nothing_of_project_b(connect):
    alice = await db(f.make_user)("alice")
    a = await db(f.make_project)(alice, title="A")
    b = await db(f.make_project)(alice, title="B")
    watcher_a = await _joined(connect, alice, a)
    watcher_b = await _joined(connect, alice, b)
    task_b = await db(f.make_task)(b, title="in B")
    await watcher_b.wait_for("task_created")
    await db(services.task_update)(task=task_b, status="done")
    await db(services.task_delete)(task=task_b)
    await watcher_b.wait_for("task_deleted")
    await _marker(watcher_a, a)
    assert [t["title"] for t in watcher_a.received("task_created")] == ["marker"]
    assert watcher_a.received("task_updated") == [] and watcher_a.received("task_deleted") == []


async def test_a_rolled_back_transaction_sends_nothing(connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    kept = await db(f.make_task)(project, title="kept")
    client = await _joined(connect, alice, project)

    def fail_midway() -> None:
        try:
            with transaction.atomic():
                Task.objects.create(project=project, title="never")
                services.task_update(task=Task.objects.get(pk=kept.pk), title="renamed")
                Task.objects.get(pk=kept.pk).delete()
                raise RuntimeError("roll back")
        except RuntimeError:
            pass

    await db(fail_midway)()
    await _marker(client, project)
    assert [t["title"] for t in client.received("task_created")] == ["marker"]
    assert client.received("task_updated") == [] and client.received("task_deleted") == []
    assert await db(Task.objects.filter(title="never").exists)() is False


async def test_events_wait_for_the_commit(connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await _joined(connect, alice, project)
    loop = asyncio.get_running_loop()
    seen_inside: list[list] = []

    def save_then_look() -> None:
        with transaction.atomic():
            Task.objects.create(project=project, title="pending")
            # A marker sent now, ignoring the transaction, along the same path to the same room: had the
            # save's event been sent at the save, it would have arrived before the marker.
            emit_now_ignoring_transaction("test_marker", {"n": 1}, room=PROJECT.room(project.pk))
            asyncio.run_coroutine_threadsafe(client.wait_for("test_marker", timeout=10), loop).result(timeout=15)
            seen_inside.append(client.received("task_created"))

    await db(save_then_look)()
    assert seen_inside == [[]], "task_created arrived before the commit"
    assert (await client.wait_for("task_created"))["title"] == "pending"


async def test_moving_a_task_to_another_project_tells_both_rooms(connect):
    alice = await db(f.make_user)("alice")
    a, b = await db(f.make_project)(alice, title="A"), await db(f.make_project)(alice, title="B")
    task = await db(f.make_task)(a, title="mover")
    watcher_a, watcher_b = await _joined(connect, alice, a), await _joined(connect, alice, b)

    def move() -> None:
        t = Task.objects.get(pk=task.pk)
        t.project = b
        t.save()

    await db(move)()
    assert unstamped(await watcher_a.wait_for("task_deleted")) == {"task_id": str(task.pk), "project_id": str(a.pk)}
    assert (await watcher_b.wait_for("task_updated"))["project_id"] == str(b.pk)


async def test_projects_update_lists_only_what_each_subscriber_may_see(connect):
    alice, bob, carol = [await db(f.make_user)(n) for n in ("alice", "bob", "carol")]
    clients = {}
    for user in (alice, bob, carol):
        clients[user.username] = client = await connect(user)
        await client.call("subscribe_projects")
        await client.wait_for("projects_update")

    shared = await db(services.project_create)(owner=bob, title="bob+alice", member_usernames=["alice"])
    secret = await db(services.project_create)(owner=bob, title="bob only")

    def lists(name):
        return [{p["id"] for p in u["projects"]} for u in clients[name].received("projects_update")]

    await clients["alice"].wait_for("projects_update", lambda u: str(shared.pk) in {p["id"] for p in u["projects"]})
    await clients["bob"].wait_for("projects_update", lambda u: {str(shared.pk), str(secret.pk)} <= {p["id"] for p in u["projects"]})
    # Carol may see neither; alice never the secret one, also after bob's later change.
    await db(services.project_update)(project=await db(Project.objects.get)(pk=secret.pk), title="still secret")
    await clients["bob"].wait_for("projects_update", lambda u: "still secret" in {p["title"] for p in u["projects"]})
    marker = await db(services.project_create)(owner=carol, title="carol's")
    await clients["carol"].wait_for("projects_update", lambda u: str(marker.pk) in {p["id"] for p in u["projects"]})
    assert all(str(shared.pk) not in ids and str(secret.pk) not in ids for ids in lists("carol"))
    assert all(str(secret.pk) not in ids for ids in lists("alice"))


async def test_a_removed_member_leaves_the_room_at_once(connect):
    owner, member = await db(f.make_user)("owner"), await db(f.make_user)("member")
    project = await db(f.make_project)(owner, members=(member,))
    other = await db(f.make_project)(member, title="member's own")
    watcher = await _joined(connect, member, project)
    await watcher.call("subscribe_projects")
    await watcher.wait_for("projects_update")
    await watcher.call("join_project", {"project_id": str(other.pk)})
    await watcher.wait_for("initial_tasks")

    await db(project.members.remove)(member)
    update = await watcher.wait_for("projects_update")
    assert str(project.pk) not in {p["id"] for p in update["projects"]}
    await db(f.make_task)(project, title="after removal")
    await _marker(watcher, other)
    assert [t["title"] for t in watcher.received("task_created")] == ["marker"]
    # And the door stays shut.
    assert (await watcher.call("join_project", {"project_id": str(project.pk)}))["ok"] is False


async def test_clearing_members_from_the_user_side_revokes_too(connect):
    owner, member = await db(f.make_user)("owner"), await db(f.make_user)("member")
    project = await db(f.make_project)(owner, members=(member,))
    watcher = await _joined(connect, member, project)
    await db(member.projects.clear)()
    await db(f.make_task)(project, title="after clear")
    mine = await db(f.make_project)(member, title="mine")
    await watcher.call("join_project", {"project_id": str(mine.pk)})
    await _marker(watcher, mine)
    assert [t["title"] for t in watcher.received("task_created")] == ["marker"]


async def test_deleting_a_project_deletes_its_tasks_for_watchers_and_lists(connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    tasks = [await db(f.make_task)(project, title=f"t{i}") for i in range(3)]
    client = await _joined(connect, alice, project)
    await client.call("subscribe_projects")
    await client.wait_for("projects_update")
    await db(services.project_delete)(project=project)
    deleted = {(await client.wait_for("task_deleted"))["task_id"] for _ in tasks}
    assert deleted == {str(t.pk) for t in tasks}
    update = await client.wait_for("projects_update")
    assert str(project.pk) not in {p["id"] for p in update["projects"]}


async def test_a_deactivated_user_is_disconnected(connect):
    alice = await db(f.make_user)("alice")
    client = await connect(alice)

    def deactivate() -> None:
        alice.is_active = False
        alice.save()

    await db(deactivate)()
    import asyncio

    async with asyncio.timeout(5):
        while client.connected:  # noqa: ASYNC110  (the client wrappers expose no disconnect event)
            await asyncio.sleep(0.02)
