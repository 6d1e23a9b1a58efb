"""Other processes reach the server's clients: the embedded path (signed requests) and Redis."""

import asyncio
import json
import time

import httpx

from projects.models import Task
from realtime import signing
from realtime.manager import SETTLE
from realtime.testing import unstamped
from tests.conftest import db
from tests.support import factories as f
from tests.support.processes import SECRET, manage
from tests.support.py_client import PyClient

RENAME = "from projects.models import Task; t = Task.objects.get(pk='{pk}'); t.title = '{title}'; t.save()"


async def watcher(server, user, project, kind="python"):
    """A client of ``server`` watching ``project``; it follows the recovery protocol (its joins name ``since``), so an
    outage tells it to resync rather than disconnecting it."""
    from tests.conftest import CLIENT_KINDS

    client = CLIENT_KINDS[kind]()
    await client.connect(server.url, auth={"token": await db(f.token_for)(user)})
    assert (await client.call("join_project", {"project_id": str(project.pk), "since": {}}))["ok"]
    await client.wait_for("initial_tasks")
    return client


async def setup_project():
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="before")
    return alice, project, task


async def test_embedded_a_command_reaches_a_client_of_the_running_server(spawn, database_url, client_kind):
    server = spawn()
    alice, project, task = await setup_project()
    client = await watcher(server, alice, project, client_kind)
    try:
        result = await db(manage)(
            database_url, "shell", "-c", RENAME.format(pk=task.pk, title="from a command"), REALTIME_SERVER_URL=server.url
        )
        assert result.returncode == 0, result.stderr
        update = await client.wait_for("task_updated")
        assert (update["title"], update["version"]) == ("from a command", 2)
    finally:
        await client.close()


async def test_embedded_without_a_server_the_command_still_works(database_url):
    _, _, task = await setup_project()
    result = await db(manage)(
        database_url, "shell", "-c", RENAME.format(pk=task.pk, title="nobody listening"), REALTIME_SERVER_URL="http://127.0.0.1:9"
    )
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    assert result.stderr.count("no realtime server at http://127.0.0.1:9") == 1, result.stderr
    assert await db(lambda: Task.objects.get(pk=task.pk).title)() == "nobody listening"


def _signed(body: bytes, *, timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    from django.test import override_settings

    with override_settings(SECRET_KEY=secret):
        timestamp = int(time.time()) if timestamp is None else timestamp
        return {
            signing.TIMESTAMP_HEADER: str(timestamp),
            signing.SIGNATURE_HEADER: signing.sign(body, timestamp),
            "Content-Type": "application/json",
        }


async def test_forged_unsigned_stale_and_replayed_internal_requests_are_refused(spawn):
    server = spawn()
    alice, project, _ = await setup_project()
    client = await watcher(server, alice, project)
    url = server.url + "/_realtime/publish"

    def batch(nonce: str, title: str) -> bytes:
        message = {"op": "emit", "event": "task_updated", "data": {"title": title}, "room": str(project.pk)}
        return json.dumps({"nonce": nonce, "messages": [message]}).encode()

    try:
        async with httpx.AsyncClient(timeout=10) as http:
            forged = batch("a" * 32, "forged")
            refusals = {
                "unsigned": await http.post(url, content=forged, headers={"Content-Type": "application/json"}),
                "wrong key": await http.post(url, content=forged, headers=_signed(forged, secret="not-the-key")),
                "stale": await http.post(url, content=forged, headers=_signed(forged, timestamp=int(time.time()) - 120)),
                "tampered": await http.post(url, content=batch("a" * 32, "tampered"), headers=_signed(forged)),
                "malformed": await http.post(url, content=b"{not json", headers=_signed(b"{not json")),
            }
            assert {name: r.status_code for name, r in refusals.items()} == {
                "unsigned": 403,
                "wrong key": 403,
                "stale": 403,
                "tampered": 403,
                "malformed": 400,
            }
            assert refusals["unsigned"].json()["error"] == "unsigned request"
            assert refusals["stale"].json()["error"] == "stale request"

            genuine = batch("b" * 32, "genuine")
            headers = _signed(genuine)
            assert (await http.post(url, content=genuine, headers=headers)).status_code == 200
            replay = await http.post(url, content=genuine, headers=headers)
            assert (replay.status_code, replay.json()["error"]) == (403, "replayed request")
            assert (await http.get(url)).status_code == 405

        assert (await client.wait_for("task_updated"))["title"] == "genuine"
        await client.call("leave_project", {"project_id": str(project.pk)})  # a round trip: anything else has arrived
        assert [u["title"] for u in client.received("task_updated")] == ["genuine"]
    finally:
        await client.close()


async def test_redis_two_servers_share_rooms_writes_and_revocations(spawn, redis_server, database_url):
    a, b = spawn(REDIS_URL=redis_server.url), spawn(REDIS_URL=redis_server.url)
    alice, project, task = await setup_project()
    bob = await db(f.make_user)("bob")
    await db(project.members.add)(bob)
    on_a, on_b = await watcher(a, alice, project), await watcher(b, alice, project, "node")
    bob_on_a = await watcher(a, bob, project)
    await bob_on_a.call("subscribe_projects")
    await bob_on_a.wait_for("projects_update")
    try:
        token = await db(f.token_for)(alice)
        async with httpx.AsyncClient(base_url=b.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as rest_b:
            response = await rest_b.patch(f"/api/tasks/{task.pk}/", json={"status": "doing"})
            assert response.status_code == 200
            assert unstamped(await on_a.wait_for("task_updated")) == response.json()
            assert unstamped(await on_b.wait_for("task_updated")) == response.json()

            # A management command with REDIS_URL reaches clients on both nodes.
            result = await db(manage)(database_url, "shell", "-c", RENAME.format(pk=task.pk, title="via redis"), REDIS_URL=redis_server.url)
            assert result.returncode == 0, result.stderr
            for client in (on_a, on_b):
                assert (await client.wait_for("task_updated"))["title"] == "via redis"

            # Removing bob through B's API takes his connection on A out of the room.
            response = await rest_b.patch(f"/api/projects/{project.pk}/", json={"member_usernames": []})
            assert response.status_code == 200
            update = await bob_on_a.wait_for("projects_update")
            assert str(project.pk) not in {p["id"] for p in update["projects"]}
            await rest_b.patch(f"/api/tasks/{task.pk}/", json={"title": "bob must not see this"})
            await on_a.wait_for("task_updated", lambda t: t["title"] == "bob must not see this")
            assert await bob_on_a.call("join_project", {"project_id": str(project.pk)}) == {"ok": False, "error": "project not found"}
            assert "bob must not see this" not in [t["title"] for t in bob_on_a.received("task_updated")]
    finally:
        for client in (on_a, on_b, bob_on_a):
            await client.close()


async def test_redis_outage_local_delivery_continues_and_cross_node_resumes(spawn, redis_server, database_url):
    a, b = spawn(REDIS_URL=redis_server.url), spawn(REDIS_URL=redis_server.url)
    alice, project, task = await setup_project()
    on_a = await watcher(a, alice, project)
    token = await db(f.token_for)(alice)
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as rest:
            redis_server.stop()
            # A write on A still reaches A's own client.
            response = await rest.patch(f"{a.url}/api/tasks/{task.pk}/", json={"title": "during outage"})
            assert response.status_code == 200
            assert (await on_a.wait_for("task_updated"))["title"] == "during outage"
            # A command's write is kept, and the failed delivery is reported clearly.
            result = await db(manage)(
                database_url, "shell", "-c", RENAME.format(pk=task.pk, title="command during outage"), REDIS_URL=redis_server.url
            )
            assert result.returncode == 0 and "Traceback" not in result.stderr
            assert "could not deliver" in result.stderr and "Redis unreachable" in result.stderr
            assert await db(lambda: Task.objects.get(pk=task.pk).title)() == "command during outage"

            redis_server.start()  # same port
            # A's subscription broke: broadcasts may have been missed, so its watcher is told to resync.
            assert await on_a.wait_for("realtime:resync", timeout=20) == {}
            # Cross-node delivery resumes: B's writes reach A again once both have reconnected.
            for attempt in range(60):
                response = await rest.patch(f"{b.url}/api/tasks/{task.pk}/", json={"title": f"after outage {attempt}"})
                assert response.status_code == 200
                try:
                    await on_a.wait_for("task_updated", lambda t, n=attempt: t["title"] == f"after outage {n}", timeout=0.5)
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError("cross-node delivery did not resume")
        # Each node declares Redis back on its own, once it has answered for manager.SETTLE seconds there.
        async with asyncio.timeout(3 * SETTLE):
            while "Redis is back" not in a.output():  # noqa: ASYNC110  (a log line: nothing to await)
                await asyncio.sleep(0.1)
        outage_lines = [line for line in a.output().splitlines() if "Redis unreachable" in line]
        assert len(outage_lines) == 1, a.output()
    finally:
        await on_a.close()


async def test_channels_group_send_to_a_recoverable_room_is_refused_loudly(spawn, redis_server, database_url):
    """Every node pumps its own copy of a group message, so none could number it once: a project room (recoverable)
    refuses it with an error line naming realtime.emit, rather than sending what a reconnecting client would miss."""
    server = spawn(CHANNEL_LAYER_REDIS_URL=redis_server.url)
    alice, project, _ = await setup_project()
    client = await watcher(server, alice, project, "node")
    try:
        code = (
            "from asgiref.sync import async_to_sync; from channels.layers import get_channel_layer; "
            f"async_to_sync(get_channel_layer().group_send)('{project.pk}', "
            "{'type': 'realtime.emit', 'event': 'note', 'data': {'text': 'hello from channels'}})"
        )
        result = await db(manage)(database_url, "shell", "-c", code, CHANNEL_LAYER_REDIS_URL=redis_server.url)
        assert result.returncode == 0, result.stderr
        for _ in range(100):
            if "refused: a recoverable room; use realtime.emit" in server.output():
                break
            await asyncio.sleep(0.1)
        assert f"Channels group_send to '{project.pk}' refused" in server.output()
        assert client.received("note") == []
    finally:
        await client.close()


async def test_python_client_is_refused_anonymous_on_a_server_process(spawn):
    from tests.support.clients import ConnectionRefused

    server = spawn()
    client = PyClient()
    try:
        await client.connect(server.url)
        raise AssertionError("anonymous connection accepted")
    except ConnectionRefused as refusal:
        assert refusal.message.startswith("authentication required")
    finally:
        await client.close()


def test_lost_room_operations_are_named_and_the_sender_lives_on(caplog) -> None:  # type: ignore[no-untyped-def]
    """A batch given up on says which revocations were lost (its report once raised and killed the sender thread)."""
    from realtime import remote

    batch = [{"op": "emit", "event": "e", "data": {}, "room": "r"}, {"op": "leave", "members_of": "user_7", "room": "chat_1"}]
    remote._report_lost(batch, attempts=4, error=RuntimeError("Redis down"))
    assert "could not deliver 1 live event(s) and 1 room operation(s) after 4 attempts: Redis down" in caplog.text
    assert "LOST room operations" in caplog.text and "leave 'chat_1' for members of 'user_7'" in caplog.text
