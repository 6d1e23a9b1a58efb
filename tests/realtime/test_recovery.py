"""Recovery in one server process: broadcasts to recoverable rooms are numbered; a rejoin naming the last one it saw
(with the token its join was given) gets just what it missed; anything else gets the snapshot."""

from __future__ import annotations

from typing import Any

import pytest

from realtime import history
from tests.conftest import db
from tests.support import factories as f

pytestmark = pytest.mark.django_db(transaction=True)


def live(data: dict[str, Any]) -> dict[str, Any]:
    return data["_live"]


def since_of(marker: dict[str, Any], seq: int | None = None) -> dict[str, Any]:
    """What a client sends to rejoin: per room, the marker's epoch and token and the last seq it applied."""
    return {marker["room"]: {"epoch": marker["epoch"], "seq": marker["seq"] if seq is None else seq, "token": marker["token"]}}


async def join(client: Any, project: Any, since: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Join the project's room; returns (ack, the realtime:joined marker)."""
    payload: dict[str, Any] = {"project_id": str(project.pk), "since": since or {}}
    ack = await client.call("join_project", payload)
    assert ack["ok"], ack
    return ack, await client.wait_for("realtime:joined", lambda m: m["room"] == str(project.pk))


async def test_broadcasts_are_numbered_and_a_first_join_gets_the_snapshot(connect) -> None:  # type: ignore[no-untyped-def]
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    ack, marker = await join(client, project)
    assert marker["missed"] is None and marker["room"] == str(project.pk) and marker["token"]
    assert (await client.wait_for("initial_tasks"))["tasks"] == []
    for n in range(3):
        await db(f.make_task)(project, title=f"t{n}")
    created = [await client.wait_for("task_created", lambda t, n=n: t["title"] == f"t{n}") for n in range(3)]
    assert [live(t)["seq"] for t in created] == [marker["seq"] + 1, marker["seq"] + 2, marker["seq"] + 3]
    assert {live(t)["epoch"] for t in created} == {marker["epoch"]} and {live(t)["room"] for t in created} == {str(project.pk)}


async def test_a_rejoin_naming_its_last_broadcast_gets_only_what_it_missed(connect) -> None:  # type: ignore[no-untyped-def]
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    first = await connect(alice)
    _, marker = await join(first, project)
    await first.wait_for("initial_tasks")
    task = await db(f.make_task)(project, title="seen")
    seen = live(await first.wait_for("task_created"))
    await first.close()  # offline: what happens now is missed
    await db(f.make_task)(project, title="missed 1")
    task.title = "missed 2"
    await db(task.save)()
    await db(task.delete)()

    again = await connect(alice)
    ack, joined = await join(again, project, since=since_of(marker, seen["seq"]))
    assert ack == {"ok": True, "project_id": str(project.pk)}  # the ack is as ever: the marker says what happened
    assert joined["join"] == {"event": "join_project", "project_id": str(project.pk)}
    assert [event for event, _ in joined["missed"]] == ["task_created", "task_updated", "task_deleted"]
    assert [live(data)["seq"] for _, data in joined["missed"]] == [seen["seq"] + 1, seen["seq"] + 2, seen["seq"] + 3]
    assert joined["seq"] == seen["seq"] + 3
    await db(f.make_task)(project, title="live again")
    assert live(await again.wait_for("task_created"))["seq"] == joined["seq"] + 1
    assert again.received("initial_tasks") == []  # no snapshot: the missed events were enough


@pytest.mark.parametrize("case", ["another epoch", "too old", "ahead", "no token", "forged token", "before it joined"])
async def test_a_rejoin_that_cannot_be_served_from_history_gets_the_snapshot(connect, case, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(history.memory(), "size", 2)  # rooms keep two broadcasts
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    await db(f.make_task)(project, title="before alice joined")
    _, marker = await join(client, project)
    await client.wait_for("initial_tasks")
    for n in range(4):
        await db(f.make_task)(project, title=f"t{n}")
        await client.wait_for("task_created", lambda t, n=n: t["title"] == f"t{n}")
    room = str(project.pk)
    entry = since_of(marker)[room]
    asked = {
        "another epoch": {**entry, "epoch": "0" * 16, "seq": marker["seq"] + 4},
        "too old": entry,  # 4 missed, 2 kept
        "ahead": {**entry, "seq": marker["seq"] + 99},
        "no token": {**entry, "seq": marker["seq"] + 3, "token": ""},
        "forged token": {**entry, "seq": marker["seq"] + 3, "token": entry["token"][:-4] + "0000"},
        # The token says where alice's join started: the broadcast before it is not hers to be sent.
        "before it joined": {**entry, "seq": marker["seq"] - 1},
    }[case]
    again = await connect(alice)
    ack, joined = await join(again, project, since={room: asked})
    assert joined["missed"] is None
    assert len((await again.wait_for("initial_tasks"))["tasks"]) == 5


async def test_another_users_token_or_a_revoked_one_gets_the_snapshot(connect) -> None:  # type: ignore[no-untyped-def]
    """A since is honoured only for the user it was issued to, and only while their access has not been cut since."""
    alice = await db(f.make_user)("alice")
    bob = await db(f.make_user)("bob")
    project = await db(f.make_project)(alice, members=(bob,))
    on_bob = await connect(bob)
    _, marker = await join(on_bob, project)
    await on_bob.close()
    await db(f.make_task)(project, title="while bob was away")
    on_alice = await connect(alice)
    _, joined = await join(on_alice, project, since=since_of(marker))  # bob's token, alice's connection
    assert joined["missed"] is None
    # Bob is removed, then added again: what happened in between is not his to be sent.
    await db(project.members.remove)(bob)
    await db(f.make_task)(project, title="bob not a member")
    await db(project.members.add)(bob)
    again = await connect(bob)
    _, joined = await join(again, project, since=since_of(marker))
    assert joined["missed"] is None
    titles = {t["title"] for t in (await again.wait_for("initial_tasks"))["tasks"]}
    assert titles == {"while bob was away", "bob not a member"}  # the snapshot: today's state, for today's member


async def test_more_than_a_frame_of_missed_events_gets_the_snapshot(connect, settings) -> None:  # type: ignore[no-untyped-def]
    settings.REALTIME_SNAPSHOT_FRAME_BYTES = 2_000
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    _, marker = await join(client, project)
    await client.close()
    for n in range(5):
        await db(f.make_task)(project, title=f"t{n}", description="d" * 500)
    again = await connect(alice)
    ack, joined = await join(again, project, since=since_of(marker))
    assert joined["missed"] is None
    frames = [await again.wait_for("initial_tasks")]
    while frames[-1]["part"] < frames[-1]["parts"]:
        following = frames[-1]["part"] + 1
        frames.append(await again.wait_for("initial_tasks", lambda fr, n=following: fr["part"] == n))
    assert sum(len(frame["tasks"]) for frame in frames) == 5


@pytest.mark.parametrize(
    "since",
    [
        {"r": {"epoch": "e", "seq": -1, "token": "t"}},
        {"r": {"epoch": "e", "seq": True, "token": "t"}},
        {"r": {"epoch": "e", "seq": "3", "token": "t"}},
        {"r": {"epoch": "e" * 65, "seq": 1, "token": "t"}},
        {"r": {"seq": 1, "token": "t"}},
        {"r": {"epoch": "e", "seq": 1}},
        {f"r{n}": {"epoch": "e", "seq": 1, "token": "t"} for n in range(9)},
        {"r" * 201: {"epoch": "e", "seq": 1, "token": "t"}},
        [1, 2],
    ],
)
async def test_a_malformed_since_is_refused_with_a_reason(connect, since) -> None:  # type: ignore[no-untyped-def]
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    ack = await client.call("join_project", {"project_id": str(project.pk), "since": since})
    assert ack["ok"] is False and ack["error"].startswith("invalid payload: since"), ack


async def test_a_failed_rejoin_keeps_the_rooms_the_connection_was_in(connect) -> None:  # type: ignore[no-untyped-def]
    """A rejoin (a resync) that fails must not take the connection out of a room its first join put it in."""
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    await join(client, project)
    ack = await client.call("join_project", {"project_id": str(project.pk), "since": {"r": {"epoch": "e", "seq": 1}}})
    assert ack["ok"] is False
    await db(f.make_task)(project, title="still watched")
    assert (await client.wait_for("task_created"))["title"] == "still watched"


async def test_chat_progress_and_project_lists_recover_the_same_way(connect) -> None:  # type: ignore[no-untyped-def]
    from chat import services as chat_services

    alice = await db(f.make_user)("alice")
    session = await db(chat_services.chat_session_create)(created_by=alice, title="s")
    client = await connect(alice)
    assert (await client.call("join_chat", {"session_id": str(session.pk), "since": {}}))["ok"]
    marker = await client.wait_for("realtime:joined")
    assert (await client.call("subscribe_projects", {"since": {}}))["ok"]
    lists = {m["room"]: m for m in [await client.wait_for("realtime:joined", lambda m: m["room"].startswith("project_list"))]}
    lists.update({m["room"]: m for m in client.received("realtime:joined") if m["room"].startswith("project_list")})
    assert set(lists) == {"project_list", f"project_list_user_{alice.pk}"}
    await client.close()
    await db(chat_services.chat_message_post)(session=session, author=alice, body="while away")
    await db(f.make_project)(alice, title="made while away")
    again = await connect(alice)
    assert (await again.call("join_chat", {"session_id": str(session.pk), "since": since_of(marker)}))["ok"]
    joined = await again.wait_for("realtime:joined")
    assert [(event, data["body"]) for event, data in joined["missed"]] == [("chat_message", "while away")]
    assert again.received("chat_history") == []
    since = {room: entry for m in lists.values() for room, entry in since_of(m).items()}
    assert (await again.call("subscribe_projects", {"since": since}))["ok"]
    markers = [m for m in again.received("realtime:joined") if m["room"].startswith("project_list")]
    mine = next(m for m in markers if m["room"] == f"project_list_user_{alice.pk}")
    assert [data["projects"][0]["title"] for _, data in mine["missed"]] == ["made while away"]
    assert again.received("projects_update") == []


def test_history_is_bounded_by_rooms_and_bytes_and_a_forgotten_room_never_matches_an_old_since() -> None:
    import asyncio

    kept = history.MemoryHistory(size=3, rooms=2, budget=10_000)
    position = lambda room, since: asyncio.run(kept.position(room, since=since, budget=10_000))  # noqa: E731
    for n in range(5):
        kept.stamp("a", "e", {"n": n})
    start = position("a", None)
    assert start.seq == 5 and len(kept._log["a"]) == 3  # the last three only
    assert position("a", (start.epoch, 2)).missed is not None
    assert position("a", (start.epoch, 1)).missed is None  # the 2nd is gone: a snapshot instead
    kept.stamp("b", "e", {})
    kept.stamp("c", "e", {})  # a third room: "a", the least recently used, is forgotten
    assert "a" not in kept._log
    for n in range(6):
        kept.stamp("a", "e", {"n": n})  # numbered again from 1…
    again = position("a", None)
    assert again.seq == 6 and again.epoch != start.epoch  # …under another epoch: the old since cannot match
    assert position("a", (start.epoch, 5)).missed is None
    small = history.MemoryHistory(size=100, rooms=100, budget=200)
    epochs = {}
    for room in "abcdef":
        small.stamp(room, "e", {"text": "x" * 40})
        epochs[room] = asyncio.run(small.position(room, since=None, budget=1)).epoch
    assert small.bytes <= 200
    # Byte pressure drops old events, never a room's numbering: every room keeps its epoch.
    assert {room: asyncio.run(small.position(room, since=None, budget=1)).epoch for room in "abcdef"} == epochs


async def test_a_broadcast_a_command_lost_makes_the_watchers_resync_even_after_it_exited(spawn, database_url, client_kind) -> None:  # type: ignore[no-untyped-def]
    """The command's server URL refuses (503) until it gives up: the loss is recorded in the database, and the server
    that finds it starts a new history for the room and tells its watchers to resync; an old since gets the snapshot.

    The server is a process of its own: its watcher polls the database at any moment, and in this process
    pytest-django blocks the database between tests (the in-process server's watcher is off, ``tests/settings.py``)."""
    import asyncio

    from tests.conftest import CLIENT_KINDS
    from tests.support.processes import free_port, manage

    async def busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = spawn(REALTIME_LOST_POLL_SECONDS="0.5")
    clients: list[Any] = []

    async def connect_to_server(user: Any) -> Any:
        client = CLIENT_KINDS[client_kind]()
        clients.append(client)
        await client.connect(server.url, auth={"token": await db(f.token_for)(user)})
        return client

    port = free_port()
    stub = await asyncio.start_server(busy, "127.0.0.1", port)
    try:
        alice = await db(f.make_user)("alice")
        project = await db(f.make_project)(alice)
        watching = await connect_to_server(alice)
        _, marker = await join(watching, project)
        away = await connect_to_server(alice)
        _, away_marker = await join(away, project)
        await away.close()
        code = (
            "from tests.support import factories as f; from projects.models import Project; "
            f"f.make_task(Project.objects.get(pk='{project.pk}'), title='lost on the way')"
        )
        result = await asyncio.to_thread(manage, database_url, "shell", "-c", code, REALTIME_SERVER_URL=f"http://127.0.0.1:{port}")
        assert result.returncode == 0 and "recorded 1 room(s) whose broadcasts were lost" in result.stderr, result.stderr
        assert await watching.wait_for("realtime:resync", timeout=15) == {}
        again = await connect_to_server(alice)
        _, joined = await join(again, project, since=since_of(away_marker))
        assert joined["missed"] is None and joined["epoch"] != marker["epoch"]
        assert [t["title"] for t in (await again.wait_for("initial_tasks"))["tasks"]] == ["lost on the way"]
    finally:
        stub.close()
        for client in clients:
            await client.close()
