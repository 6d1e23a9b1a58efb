"""Client -> server events against a live server, with both the Python and the Node client."""

import uuid

from tests.conftest import db
from tests.support import factories as f
from tests.support.clients import ConnectionRefused


async def test_join_project_enters_room_then_sends_initial_tasks(connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice, title="Apollo")
    first = await db(f.make_task)(project, title="first", task_order=1)
    zero = await db(f.make_task)(project, title="zero", task_order=0)
    await db(f.make_task)(project, title="archived", archived=True)

    client = await connect(alice)
    ack = await client.call("join_project", {"project_id": str(project.pk)})

    assert ack == {"ok": True, "project_id": str(project.pk)}
    snapshot = await client.wait_for("initial_tasks")
    assert snapshot["project_id"] == str(project.pk)
    assert [t["id"] for t in snapshot["tasks"]] == [str(zero.pk), str(first.pk)]
    assert snapshot["tasks"][0]["version"] == 1 and snapshot["tasks"][0]["status"] == "todo"

    task = await db(f.make_task)(project, title="live")  # in the room now: arrives live
    created = await client.wait_for("task_created")
    assert created["id"] == str(task.pk) and created["title"] == "live"


async def test_member_and_staff_may_join_others_may_not(connect):
    owner, member, staff, stranger = [await db(f.make_user)(n, staff=n == "staff") for n in ("owner", "member", "staff", "stranger")]
    project = await db(f.make_project)(owner, members=(member,))
    for user in (owner, member, staff):
        client = await connect(user)
        assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"] is True
    outsider = await connect(stranger)
    assert await outsider.call("join_project", {"project_id": str(project.pk)}) == {"ok": False, "error": "project not found"}
    assert await outsider.call("join_project", {"project_id": str(uuid.uuid4())}) == {"ok": False, "error": "project not found"}
    assert outsider.received("initial_tasks") == []


async def test_leave_project_stops_events(connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    await client.call("join_project", {"project_id": str(project.pk)})
    assert await client.call("leave_project", {"project_id": str(project.pk)}) == {"ok": True, "project_id": str(project.pk)}
    await db(f.make_task)(project, title="unseen")
    # A marker in another room we still watch proves the earlier event had its chance to arrive.
    other = await db(f.make_project)(alice, title="other")
    await client.call("join_project", {"project_id": str(other.pk)})
    await db(f.make_task)(other, title="marker")
    await client.wait_for("task_created", lambda t: t["title"] == "marker")
    assert [t["title"] for t in client.received("task_created")] == ["marker"]


async def test_subscribe_projects_lists_only_visible_projects(connect):
    alice, bob = await db(f.make_user)("alice"), await db(f.make_user)("bob")
    mine = await db(f.make_project)(alice, title="mine")
    shared = await db(f.make_project)(bob, title="shared", members=(alice,))
    await db(f.make_project)(bob, title="bob only")
    client = await connect(alice)
    assert await client.call("subscribe_projects") == {"ok": True}
    update = await client.wait_for("projects_update")
    assert sorted(p["id"] for p in update["projects"]) == sorted([str(mine.pk), str(shared.pk)])
    assert await client.call("unsubscribe_projects") == {"ok": True}


async def test_anonymous_and_bad_token_connections_are_refused(server, client_kind):
    from tests.conftest import CLIENT_KINDS

    for auth, reason in [(None, "authentication required"), ({"token": "nope"}, "invalid token"), ({"token": 42}, "invalid token")]:
        client = CLIENT_KINDS[client_kind]()
        try:
            await client.connect(server.url, auth=auth)
            raise AssertionError("connected without credentials")
        except ConnectionRefused as refusal:
            assert refusal.message.startswith(reason), refusal.message
        finally:
            await client.close()


async def test_session_cookie_authenticates(connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice, cookie=True)
    assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"] is True


async def test_progress_subscription_of_unknown_operation_is_refused(connect):
    alice = await db(f.make_user)("alice")
    client = await connect(alice)
    for event in ("subscribe_progress", "crawl_subscribe"):
        assert await client.call(event, {"progress_id": str(uuid.uuid4())}) == {"ok": False, "error": "unknown progress id"}
    assert (await client.call("unsubscribe_progress", {"progress_id": str(uuid.uuid4())}))["ok"] is True


async def test_joins_of_a_connection_that_closed_build_no_snapshot_and_log_no_traceback(connect, monkeypatch, caplog):
    """Joins still running when their connection closes end quietly: no snapshot is read or sent for nobody."""
    import asyncio
    import logging
    import threading

    from projects import selectors
    from projects.models import Task
    from realtime import bus, limits, room_kinds

    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    room = str(project.pk)
    await db(
        lambda: Task.objects.bulk_create(Task(project=project, title=f"t{i}", description="d" * 8_000, task_order=i) for i in range(200))
    )()

    release, held, finished, built = threading.Event(), [], [], []
    real_send, real_tasks, real_join = room_kinds._send_snapshot, selectors.project_tasks, room_kinds.join_room

    async def held_inside_the_room(kind, client, key, user):
        if bus.local_server() is not None and bus.local_server().manager.rooms["/"].get(str(key)):
            held.append(key)  # a join is inside the room, about to read the snapshot: the connection closes now
            await asyncio.to_thread(release.wait, 30)
        return await real_send(kind, client, key, user)

    async def counted(kind, client, key, **options):
        try:
            return await real_join(kind, client, key, **options)
        finally:
            finished.append(1)

    monkeypatch.setattr(room_kinds, "_send_snapshot", held_inside_the_room)
    monkeypatch.setattr(selectors, "project_tasks", lambda **kw: built.append(1) or real_tasks(**kw))
    monkeypatch.setattr(room_kinds, "join_room", counted)
    caplog.set_level(logging.WARNING, logger="realtime")

    client = await connect(alice)
    joins = 4  # REALTIME_MAX_EVENTS_IN_FLIGHT: a fifth at once would be refused as busy
    for _ in range(joins):
        await client.send("join_project", {"project_id": room})
    async with asyncio.timeout(10):
        while not held:  # noqa: ASYNC110  (the server's state is polled: nothing to await)
            await asyncio.sleep(0.01)
        await client.close()
        while limits.connections.of(alice.pk):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        release.set()
        while len(finished) < joins:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    assert built == []
    assert not [r for r in caplog.records if r.exc_info or "failed" in r.getMessage()], caplog.text
    assert "the connection is closed" in caplog.text
    other = await connect(alice)  # the server serves on
    assert (await other.call("join_project", {"project_id": room}, timeout=30))["ok"]
    assert len(built) == 1
