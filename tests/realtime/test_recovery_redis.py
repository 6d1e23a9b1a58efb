"""Recovery with REDIS_URL: one numbering per room for every node, kept in Redis across node restarts; a Redis
outage or restart replaces the epoch and makes every watcher resync (or be disconnected, if it would not understand)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import CLIENT_KINDS, db
from tests.support import factories as f
from tests.support.processes import manage

pytestmark = pytest.mark.django_db(transaction=True)

CREATE = (
    "from tests.support import factories as f; from projects.models import Project; "
    "f.make_task(Project.objects.get(pk='{pk}'), title='{title}')"
)


async def watch(server: Any, user: Any, project: Any, *, kind: str = "python", since: dict[str, Any] | None = None) -> tuple[Any, dict]:
    """A connection on ``server`` that joined the project's room following the recovery protocol; (client, marker)."""
    client = CLIENT_KINDS[kind]()
    await client.connect(server.url, auth={"token": await db(f.token_for)(user)})
    ack = await client.call("join_project", {"project_id": str(project.pk), "since": since or {}})
    assert ack["ok"], ack
    return client, await client.wait_for("realtime:joined", timeout=10)


def since_of(marker: dict[str, Any], seq: int) -> dict[str, Any]:
    return {marker["room"]: {"epoch": marker["epoch"], "seq": seq, "token": marker["token"]}}


async def test_every_node_and_a_command_number_a_room_once(spawn, redis_server, database_url, client_kind) -> None:  # type: ignore[no-untyped-def]
    a, b = spawn(REDIS_URL=redis_server.url), spawn(REDIS_URL=redis_server.url)
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    on_a, marker_a = await watch(a, alice, project, kind=client_kind)
    on_b, marker_b = await watch(b, alice, project, kind=client_kind)
    try:
        assert (marker_a["epoch"], marker_a["seq"]) == (marker_b["epoch"], marker_b["seq"])
        for title in ("first command", "second command"):
            result = await db(manage)(database_url, "shell", "-c", CREATE.format(pk=project.pk, title=title), REDIS_URL=redis_server.url)
            assert result.returncode == 0, result.stderr
        for client in (on_a, on_b):
            first = await client.wait_for("task_created", lambda t: t["title"] == "first command", timeout=10)
            second = await client.wait_for("task_created", lambda t: t["title"] == "second command", timeout=10)
            assert (first["_live"]["seq"], second["_live"]["seq"]) == (marker_a["seq"] + 1, marker_a["seq"] + 2)
    finally:
        await on_a.close()
        await on_b.close()


async def test_after_a_node_restart_a_rejoin_gets_what_it_missed_from_redis(spawn, redis_server, database_url) -> None:  # type: ignore[no-untyped-def]
    node = spawn(REDIS_URL=redis_server.url)
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client, marker = await watch(node, alice, project)
    await client.wait_for("initial_tasks")
    await client.close()
    node.stop()
    # Written while no server runs: numbered and kept by Redis all the same.
    result = await db(manage)(database_url, "shell", "-c", CREATE.format(pk=project.pk, title="while down"), REDIS_URL=redis_server.url)
    assert result.returncode == 0, result.stderr
    node.start()
    again, joined = await watch(node, alice, project, since=since_of(marker, marker["seq"]))
    try:
        assert [(e, d["title"]) for e, d in joined["missed"]] == [("task_created", "while down")]
        assert joined["epoch"] == marker["epoch"] and joined["seq"] == marker["seq"] + 1
        await asyncio.sleep(0.3)
        assert again.received("initial_tasks") == []
    finally:
        await again.close()


async def test_a_redis_restart_makes_watchers_resync_and_closes_those_that_would_not(spawn, redis_server, database_url) -> None:  # type: ignore[no-untyped-def]
    from tests.support.py_client import PyClient

    node = spawn(REDIS_URL=redis_server.url)
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    follower, marker = await watch(node, alice, project)
    plain = PyClient()  # joins without since: it does not know the recovery protocol
    await plain.connect(node.url, auth={"token": await db(f.token_for)(alice)})
    assert (await plain.call("join_project", {"project_id": str(project.pk)}))["ok"]
    try:
        redis_server.stop()  # its data goes with it: numbering and history
        await db(f.make_task)(project, title="during the outage")  # not published: Redis is gone
        redis_server.start()
        assert await follower.wait_for("realtime:resync", timeout=20) == {}
        for _ in range(200):
            if not plain.connected:
                break
            await asyncio.sleep(0.1)
        assert not plain.connected  # closed, so it re-joins and reloads as the basic protocol asks
        # The old since names an epoch that is gone: the rejoin gets the snapshot, with the outage's task.
        ack = await follower.call("join_project", {"project_id": str(project.pk), "since": since_of(marker, marker["seq"])})
        assert ack["ok"]
        joined = await follower.wait_for("realtime:joined", lambda m: m["epoch"] != marker["epoch"], timeout=10)
        assert joined["missed"] is None
        tasks = await follower.wait_for("initial_tasks", lambda s: any(t["title"] == "during the outage" for t in s["tasks"]))
        assert [t["title"] for t in tasks["tasks"]] == ["during the outage"]
    finally:
        await follower.close()
        await plain.close()


async def test_a_paused_redis_loses_nothing(spawn, redis_server, database_url) -> None:  # type: ignore[no-untyped-def]
    """Redis stopped (SIGSTOP) for a moment, as a network partition would: broadcasts wait, none is lost or reordered."""
    spawn(REDIS_URL=redis_server.url)  # a second node, publishing nothing: it must not disturb the order either
    b = spawn(REDIS_URL=redis_server.url)
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    on_b, marker = await watch(b, alice, project)
    try:
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        writer = asyncio.ensure_future(
            db(manage)(database_url, "shell", "-c", CREATE.format(pk=project.pk, title="paused"), REDIS_URL=redis_server.url)
        )
        await asyncio.sleep(1.0)
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        assert (await writer).returncode == 0
        created = await on_b.wait_for("task_created", timeout=15)
        assert created["title"] == "paused" and created["_live"]["seq"] == marker["seq"] + 1
    finally:
        await on_b.close()


async def test_a_rooms_history_in_redis_is_bounded_in_bytes_and_never_holds_what_could_not_be_sent(redis_server, settings) -> None:  # type: ignore[no-untyped-def]
    import redis.asyncio as aioredis

    from realtime.redis_history import RedisHistory, stamp_args

    settings.REALTIME_SNAPSHOT_FRAME_BYTES = 10_000
    client = aioredis.Redis.from_url(redis_server.url)
    kept = RedisHistory(client)
    try:
        for n in range(60):
            await kept.stamp(*stamp_args("big", "e", {"n": n, "text": "x" * 900}, host_id=""))
        log_bytes = sum(len(fields[b"d"]) for _, fields in await client.xrange(f"{settings.REALTIME_REDIS_CHANNEL}:log:big"))
        assert log_bytes <= 10_000 and int(await client.hget(f"{settings.REALTIME_REDIS_CHANNEL}:room:big", "bytes")) == log_bytes
        start = await kept.position("big", since=None, budget=10_000)
        assert start.seq == 60
        assert (await kept.position("big", since=(start.epoch, 55), budget=10_000)).missed is not None  # the recent ones
        assert (await kept.position("big", since=(start.epoch, 10), budget=10_000)).missed is None  # long trimmed
        await kept.stamp(*stamp_args("big", "e", {"text": "y" * 20_000}, host_id=""))  # alone over what may be sent
        assert await client.xlen(f"{settings.REALTIME_REDIS_CHANNEL}:log:big") == 0
        assert (await kept.position("big", since=(start.epoch, 60), budget=10_000)).missed is None  # a snapshot
    finally:
        await client.aclose()


def test_a_payload_that_is_not_json_is_the_callers_error_not_an_outage() -> None:
    from realtime.redis_history import stamp_args

    with pytest.raises(TypeError):
        stamp_args("room", "e", {"when": object()}, host_id="")


def test_a_since_token_with_other_digits_is_refused_quietly() -> None:
    from realtime import since_tokens

    assert not since_tokens.honoured("0:0/²/abc", room="r", epoch="e", seq=5, user_id=1, generation="0:0")
    assert not since_tokens.honoured("0:0/" + "9" * 30 + "/abc", room="r", epoch="e", seq=5, user_id=1, generation="0:0")


async def test_a_database_error_while_repairing_does_not_leave_the_outage_on(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Redis is back and the losses are repaired (a new epoch, every watcher told to resync), but deleting their rows
    fails: the node still ends the outage. (The error used to end its watcher with the outage on: broadcasts for
    its own clients only, unnumbered, for as long as the process lived.) Another server repairs the rows again."""
    from django.db import DatabaseError

    from realtime import lost, manager
    from realtime.models import LostBroadcast

    def fails(ids: list[int]) -> None:
        raise DatabaseError("the database went away for a moment")

    monkeypatch.setattr(lost, "forget", fails)
    node = manager.RedisManager(redis_server.url, channel="test-repair")
    try:
        before = await node.numbering.position("project_r", since=None, budget=10_000)
        await node._lost(RuntimeError("a broadcast Redis did not take"), room="project_r")  # recorded; the watcher starts
        await asyncio.wait_for(asyncio.shield(node._watcher), 30)
        assert not node._outage and not node._numbering_down
        assert (await node.numbering.position("project_r", since=None, budget=10_000)).epoch != before.epoch  # repaired
        assert await db(LostBroadcast.objects.filter(room="project_r").count)() == 1  # left for another server
    finally:
        if node._watcher is not None:
            node._watcher.cancel()
        if node.redis is not None:
            await node.redis.aclose()


async def test_a_loss_while_the_repair_deletes_rows_is_repaired_too(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A loss while the watcher deletes the repaired losses' rows (Redis failing again) is repaired by the same
    watcher: a second new epoch and resync. (The watcher used to end with it unrepaired: the other nodes' watchers
    stale until a server claimed its row, after the grace.)"""
    from realtime import lost, manager
    from realtime.models import LostBroadcast

    node = manager.RedisManager(redis_server.url, channel="test-repair-race")
    loop, real_forget, replaced = asyncio.get_running_loop(), lost.forget, []

    async def lose_one() -> None:
        await node._lost(RuntimeError("a broadcast while the rows are deleted"), room="project_s")

    def forget_while_one_is_lost(ids: list[int]) -> None:  # in a worker thread, as the watcher runs it
        if len(replaced) == 1:
            asyncio.run_coroutine_threadsafe(lose_one(), loop).result(10)
        real_forget(ids)

    real_replace = node.numbering.replace_epoch

    async def counted_replace() -> None:
        replaced.append(1)
        await real_replace()

    monkeypatch.setattr(lost, "forget", forget_while_one_is_lost)
    monkeypatch.setattr(node.numbering, "replace_epoch", counted_replace)
    try:
        await node._lost(RuntimeError("a broadcast Redis did not take"), room="project_r")
        await asyncio.wait_for(asyncio.shield(node._watcher), 30)
        assert not node._outage and not node._numbering_down and not node._unsent
        assert len(replaced) == 2  # the second loss got its own new epoch and resync
        assert await db(LostBroadcast.objects.filter(room__in=["project_r", "project_s"]).count)() == 0  # both repaired here
    finally:
        if node._watcher is not None:
            node._watcher.cancel()
        if node.redis is not None:
            await node.redis.aclose()


async def test_broadcasts_while_the_repair_deletes_rows_are_numbered_not_lost(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The repaired losses' rows are deleted once the outage is over, outside the publishing lock: a broadcast
    meanwhile is numbered in the new epoch, not one more loss, and room operations do not wait for the database."""
    import uuid

    from realtime import lost, manager
    from realtime.models import LostBroadcast

    node = manager.RedisManager(redis_server.url, channel="test-repair-steady")
    loop, real_forget, room = asyncio.get_running_loop(), lost.forget, str(uuid.uuid4())  # named like a project's room: numbered
    seen: list[tuple[bool, bool]] = []

    def forget_while_one_is_broadcast(ids: list[int]) -> None:  # in a worker thread, as the watcher runs it
        seen.append((node._outage, node._publishing.locked()))
        asyncio.run_coroutine_threadsafe(node.emit("task_updated", {"id": 1, "version": 2}, room=room), loop).result(10)
        real_forget(ids)

    monkeypatch.setattr(lost, "forget", forget_while_one_is_broadcast)
    try:
        await node._lost(RuntimeError("a broadcast Redis did not take"), room="project_r")
        await asyncio.wait_for(asyncio.shield(node._watcher), 30)
        assert not node._outage and not node._numbering_down and not node._unsent
        assert seen == [(False, False)]  # the rows are deleted once the outage is over, outside the publishing lock
        assert (await node.numbering.position(room, since=None, budget=10_000)).seq == 1  # numbered
        assert await db(LostBroadcast.objects.count)() == 0
    finally:
        if node._watcher is not None:
            node._watcher.cancel()
        if node.redis is not None:
            await node.redis.aclose()


async def test_a_join_without_a_marker_before_the_first_subscription_has_this_nodes_watchers_resync(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A join that cannot read history before the node's first subscription is up gets a snapshot without a marker,
    read before the subscription: what other nodes publish until it is up never reaches it, and no gap shows. So once
    it is up, this node's watchers resync, as after a broken subscription. A join that fails while subscribed does
    not cause one (its snapshot is read with every later broadcast on its way)."""
    from realtime import manager

    resyncs: list[dict] = []

    async def apply(server: object, op: dict) -> None:
        resyncs.append(op)

    monkeypatch.setattr(manager.room_ops, "apply", apply)
    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 0.2)
    node = manager.RedisManager(redis_server.url, channel="test-first-subscription")
    try:
        with pytest.raises(TimeoutError):  # the subscription is not up: the join's position cannot be read
            await node.position("project_r", since=None, budget=10_000)
        node._subscribed.set()
        await node._subscribed_again(broken=False)
        assert resyncs == [manager.room_ops.resync()]

        async def refused(user_id: int) -> str:
            raise ConnectionError("Redis refused (test)")

        monkeypatch.setattr(node.numbering, "generation", refused)
        with pytest.raises(ConnectionError):
            await node.generation(1)
        await node._subscribed_again(broken=False)
        assert resyncs == [manager.room_ops.resync()]  # none more
    finally:
        if node.redis is not None:
            await node.redis.aclose()


async def test_a_broadcast_waits_behind_a_drain_under_way(redis_server) -> None:  # type: ignore[no-untyped-def]
    """While the outage watcher holds the publishing lock (held room operations going out, the repair), a broadcast
    waits: it is numbered after them (none overtakes a revocation), in the new epoch, not lost in the meantime (under
    steady writes, every repair would find new losses)."""
    import uuid

    from realtime import manager

    node = manager.RedisManager(redis_server.url, channel="test-drain-order")
    room = str(uuid.uuid4())  # named like a project's room: numbered
    try:
        node._outage = node._numbering_down = True
        async with node._publishing:
            emit = asyncio.create_task(node.emit("task_updated", {"id": 1, "version": 2}, room=room))
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert not emit.done()
            assert (await node.numbering.position(room, since=None, budget=10_000)).seq == 0
            node._outage = node._numbering_down = False  # as the watcher ends the outage, under the lock
        await asyncio.wait_for(emit, 10)
        assert (await node.numbering.position(room, since=None, budget=10_000)).seq == 1
        assert not node._unsent and node._watcher is None  # no loss, no new outage
    finally:
        if node.redis is not None:
            await node.redis.aclose()


async def test_while_a_room_operation_is_held_broadcasts_stay_on_this_node(redis_server) -> None:  # type: ignore[no-untyped-def]
    """The subscription broke (an outage, though Redis may answer): a room operation, e.g. a revocation, is held for
    the drain. A broadcast meanwhile is not numbered and published (another node would deliver it to the revoked
    member first): it goes to this node's clients, is recorded as a loss, and is repaired after the drain."""
    import uuid

    from realtime import manager
    from realtime.models import LostBroadcast

    node = manager.RedisManager(redis_server.url, channel="test-held-op")
    room = str(uuid.uuid4())  # named like a project's room: numbered
    try:
        node._outage = True  # as _down sets it (the watcher _lost starts below would drain only after SETTLE)
        await node._publish(node._resync_message())
        assert len(node._backlog) == 1 and node._numbering_down
        await node.emit("task_updated", {"id": 1, "version": 2}, room=room)
        assert (await node.numbering.position(room, since=None, budget=10_000)).seq == 0  # not published
        assert node._unsent and await db(LostBroadcast.objects.filter(room=room).count)() == 1
    finally:
        if node._watcher is not None:
            node._watcher.cancel()
        if node.redis is not None:
            await node.redis.aclose()


async def test_a_room_operation_that_waited_for_the_drain_is_published_before_a_broadcast_behind_it(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A room operation waiting for the publishing lock when the outage ends is sent before the lock goes, so a
    broadcast queued behind it is published after it (Redis's order is every node's order)."""
    import uuid

    import redis.asyncio as aioredis

    from realtime import manager, room_ops

    node = manager.RedisManager(redis_server.url, channel="test-op-order")
    listener = aioredis.from_url(redis_server.url)
    published = listener.pubsub()
    await published.psubscribe("*")
    await published.get_message(timeout=2)  # the subscription's confirmation
    real_send = node._send

    async def slow_send(data: dict) -> object:  # a publish that takes a while (a fresh connection after an outage)
        await asyncio.sleep(0.05)
        return await real_send(data)

    monkeypatch.setattr(node, "_send", slow_send)
    room = str(uuid.uuid4())  # named like a project's room: numbered
    try:
        node._outage = True
        async with node._publishing:  # the watcher, draining
            op = asyncio.create_task(node._publish(node._resync_message()))
            await asyncio.sleep(0)  # waiting for the lock
            emit = asyncio.create_task(node.emit("task_updated", {"id": 1, "version": 2}, room=room))
            await asyncio.sleep(0)  # behind it
            node._outage = False  # the watcher ends the outage under the lock
        await asyncio.wait_for(asyncio.gather(op, emit), 10)
        events = []
        while len(events) < 2:
            message = await published.get_message(ignore_subscribe_messages=True, timeout=5)
            assert message is not None, events
            events.append(json.loads(message["data"])["event"])
        assert events == [room_ops.OP_EVENT, "task_updated"]
    finally:
        await published.aclose()
        await listener.aclose()
        if node.redis is not None:
            await node.redis.aclose()


async def test_the_outage_ends_only_once_every_held_room_operation_is_out(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A room operation held while the watcher repairs (its send failed then) is published before the outage ends:
    ended with it still held, nothing would drain it, and broadcasts, numbered again, would overtake it for good."""
    from realtime import manager

    monkeypatch.setattr(manager, "SETTLE", 0.2)
    node = manager.RedisManager(redis_server.url, channel="test-held-during-repair")
    real_replace = node.numbering.replace_epoch

    async def replace_while_an_op_is_held() -> None:
        if not node._backlog and not held:
            held.append(1)
            node._keep(node._resync_message())  # as _send_or_keep does when a send times out meanwhile
        await real_replace()

    held: list[int] = []
    monkeypatch.setattr(node.numbering, "replace_epoch", replace_while_an_op_is_held)
    try:
        await node._lost(RuntimeError("a broadcast Redis did not take"), room="project_r")  # the watcher starts
        await asyncio.wait_for(asyncio.shield(node._watcher), 30)
        assert held and not node._backlog and not node._outage and not node._numbering_down
    finally:
        if node._watcher is not None:
            node._watcher.cancel()
        if node.redis is not None:
            await node.redis.aclose()


async def test_an_emit_for_other_nodes_waits_for_a_drain_a_bounded_time(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """During an outage an emit for the other nodes (not a room operation) waits for a drain under way: sent if the
    outage ends meanwhile, let go after PUBLISH_TIMEOUT otherwise (a reply to one of this node's own connections
    passes here too, and must not wait for a long drain)."""
    import json

    import redis.asyncio as aioredis

    from realtime import manager

    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 0.3)
    node = manager.RedisManager(redis_server.url, channel="test-emit-wait")
    listener = aioredis.from_url(redis_server.url)
    published = listener.pubsub()
    await published.subscribe("test-emit-wait")
    await published.get_message(timeout=2)  # the subscription's confirmation

    def message(event: str) -> dict:
        return {"method": "emit", "event": event, "data": [{}], "namespace": "/", "room": "elsewhere", "host_id": "a"}

    try:
        node._outage = True
        async with node._publishing:  # a drain that outlasts the bound
            assert await asyncio.wait_for(node._publish(message("let go")), 5) is None
        async with node._publishing:  # a drain that ends the outage
            sent = asyncio.create_task(node._publish(message("sent")))
            await asyncio.sleep(0)
            node._outage = False
        await asyncio.wait_for(sent, 5)
        received = await published.get_message(ignore_subscribe_messages=True, timeout=5)
        assert received is not None and json.loads(received["data"])["event"] == "sent"
        assert await published.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
    finally:
        await published.aclose()
        await listener.aclose()
        if node.redis is not None:
            await node.redis.aclose()


async def test_an_outage_that_begins_while_rows_are_deleted_waits_its_own_settle(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The watcher carries on when a new outage begins while it deletes the repaired rows; that outage's held room
    operations wait SETTLE from its own start (every node resubscribed), not from the first outage's."""
    from realtime import lost, manager, room_ops

    monkeypatch.setattr(manager, "SETTLE", 2.0)
    node = manager.RedisManager(redis_server.url, channel="test-second-outage")
    loop, real_forget, real_send = asyncio.get_running_loop(), lost.forget, node._send
    began: list[float] = []
    sent: dict[str, float] = {}

    def op(tag: str) -> dict:
        return {"method": "emit", "event": room_ops.OP_EVENT, "data": [{"tag": tag}], "namespace": "/", "room": None, "host_id": "a"}

    async def recorded_send(data: dict) -> object:
        tag = (data.get("data") or [{}])[0].get("tag") if isinstance(data.get("data"), list) else None
        if tag:
            sent[tag] = loop.time()
        return await real_send(data)

    async def second_outage() -> None:
        began.append(loop.time())
        node._down(RuntimeError("the subscription broke again"))
        node._keep(op("second"))

    def forget_while_another_outage_begins(ids: list[int]) -> None:  # in a worker thread, as the watcher runs it
        if not began:
            asyncio.run_coroutine_threadsafe(second_outage(), loop).result(10)
        real_forget(ids)

    monkeypatch.setattr(node, "_send", recorded_send)
    monkeypatch.setattr(lost, "forget", forget_while_another_outage_begins)
    try:
        node._keep(op("first"))
        await node._lost(RuntimeError("a broadcast Redis did not take"), room="project_r")  # the watcher starts
        await asyncio.wait_for(asyncio.shield(node._watcher), 30)
        assert began and set(sent) == {"first", "second"} and not node._outage and not node._backlog
        assert sent["second"] - began[0] >= manager.SETTLE
    finally:
        if node._watcher is not None:
            node._watcher.cancel()
        if node.redis is not None:
            await node.redis.aclose()


async def _close(node: Any) -> None:
    """Stop what the test started on ``node``: its tasks (awaited) and its Redis pool."""
    tasks = [task for task in (node._watcher, node._recovering, node._failovers) if task is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if node.redis is not None:
        await node.redis.aclose(close_connection_pool=True)


@contextlib.asynccontextmanager
async def _listening(node: Any) -> AsyncIterator[None]:
    """``node``'s listener running and subscribed, as a serving node has it; stopped and closed afterwards."""
    listening = node._redis_listen_with_retries()
    first = asyncio.ensure_future(anext(listening))
    try:
        await asyncio.wait_for(node._subscribed.wait(), 10)
        # Also wait for the epoch check started on subscribing: if a test breaks Redis while it is in flight, it logs
        # a warning the test then sees (seen on CI under load).
        await _recovered(node)
        yield
    finally:
        # Python 3.11's wait_for (redis-py's, sending to Sentinel for the master) swallows a cancellation that lands as
        # its write completes: a listener cancelled while it reconnects through Sentinel may run on; cancelled again.
        for _ in range(10):
            first.cancel()
            if (await asyncio.wait([first], timeout=1))[0]:
                break
        else:
            raise AssertionError("the listener did not end after 10 cancellations")
        await asyncio.gather(first, return_exceptions=True)
        await listening.aclose()
        await node.pubsub.aclose()
        await _close(node)


async def _unsubscribed(node: Any, within: float = 15) -> None:
    """Wait until ``node``'s listener has noticed its subscription broke (the test fails otherwise)."""
    deadline = asyncio.get_running_loop().time() + within
    while node._subscribed.is_set():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the listener never noticed the break")
        await asyncio.sleep(0.01)


async def _no_resync(server: object, op: dict) -> None:
    """``room_ops.apply`` for a node without a Socket.IO server: the resync a broken subscription sends goes nowhere."""


async def _refused_as_not_answering(node: Any) -> bool:
    """True once a join's history read fails with "does not answer" rather than by waiting or by Redis's own error."""
    for _ in range(20):
        try:
            await node.generation(1)
        except Exception as error:  # noqa: BLE001  (until the watcher's first ping fails, a read still waits PUBLISH_TIMEOUT or is refused by redis-py)
            if "does not answer" in str(error):
                return True
            await asyncio.sleep(0.1)
    return False


@pytest.mark.parametrize("fault", ["stopped", "paused"])
async def test_while_redis_does_not_answer_joins_fail_at_once_and_read_again_once_it_does(redis_server, monkeypatch, fault) -> None:  # type: ignore[no-untyped-def]
    """Redis paused, as in a partition (a broadcast timed out), or gone (the listener's subscription broke): once the
    outage watcher's ping fails, a join's history reads fail at once, with no Redis call (the join gets its snapshot
    without a marker), instead of each waiting PUBLISH_TIMEOUT for Redis (paused) or for the subscription (gone:
    Redis itself refuses at once). The watcher's next answered ping lets them through again (a new subscription: the
    next test)."""
    import uuid

    from realtime import manager

    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 1.0)
    node = manager.RedisManager(redis_server.url, channel=f"test-silent-{fault}")
    room = str(uuid.uuid4())
    paused = False
    try:
        node._subscribed.set()
        assert (await node.position(room, since=None, budget=10_000)).seq == 0
        if fault == "stopped":
            redis_server.stop()
            node._subscribed.clear()  # as the listener does when its connection breaks
        else:
            os.kill(redis_server.proc.pid, signal.SIGSTOP)
            paused = True
        # What starts the watcher: the listener's broken connection, or a broadcast that timed out.
        node._down(ConnectionError("the subscription broke") if fault == "stopped" else TimeoutError("a broadcast timed out"))
        assert await _refused_as_not_answering(node)

        async def no_redis_call(*args: object, **kwargs: object) -> None:
            raise AssertionError("a join's read reached Redis while its ping had failed")

        numbering = node.numbering
        numbering.position = no_redis_call  # type: ignore[method-assign]
        try:
            with pytest.raises(ConnectionError, match="does not answer"):  # at once: no wait for the subscription either
                await node.position(room, since=None, budget=10_000)
        finally:
            del numbering.position
        if fault == "stopped":
            redis_server.start()
        else:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
            paused = False
        await asyncio.wait_for(asyncio.shield(node._watcher), 30)  # a ping answered: no loss, so the outage ends
        node._subscribed.set()  # as the listener's new subscription does
        assert (await node.position(room, since=None, budget=10_000)).seq == 0
        assert isinstance(await node.generation(1), str)
    finally:
        if paused:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        await _close(node)


async def test_a_new_subscription_lets_joins_read_history_before_the_watchers_next_ping(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The watcher may sleep up to MAX_BACKOFF between pings; the listener's subscription answering is enough."""
    import uuid

    from realtime import manager

    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 1.0)
    node = manager.RedisManager(redis_server.url, channel="test-silent-subscribed")
    node._ping_failed = True  # as a failed ping leaves it
    async with _listening(node):
        assert (await node.position(str(uuid.uuid4()), since=None, budget=10_000)).seq == 0


async def test_joins_still_read_history_during_an_outage_while_redis_answers(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An outage with Redis answering (a subscription blip; a held room operation waiting SETTLE): joins read history
    as usual and get their markers. Failing fast on ``_outage`` instead would turn each of these joins into a snapshot."""
    import uuid

    from realtime import manager, room_ops

    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 1.0)
    node = manager.RedisManager(redis_server.url, channel="test-answering-outage")
    room = str(uuid.uuid4())
    try:
        node._subscribed.set()
        node._down(ConnectionError("the subscription broke (test)"))
        node._keep({"method": "emit", "event": room_ops.OP_EVENT, "data": [room_ops.resync()], "namespace": "/", "room": None,
                    "host_id": "a"})  # fmt: skip
        for _ in range(10):  # a few of the watcher's rounds (every 0.5 s once Redis answers), all within SETTLE
            await asyncio.sleep(0.2)
            assert (await node.position(room, since=None, budget=10_000)).seq == 0
            assert isinstance(await node.generation(1), str)
        assert node._outage and node._backlog  # still held: the reads above ran during the outage
    finally:
        await _close(node)


async def test_a_storm_of_joins_leaves_the_outage_watcher_a_connection(redis_server, settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """While joins' history reads hold every connection they may (a rejoin storm) and other callers publish back to
    back, the outage watcher's ping and a held room operation's publish still get a connection: reads leave
    READ_HEADROOM to the rest, and the pool serves its waiters in order. (redis-py's pool lets a caller that just
    released a connection take it again before a woken waiter: the ping waited PUBLISH_TIMEOUT, Redis was taken for
    silent while it answered, and a held room operation's SETTLE started over, for as long as the storm lasted.)"""
    from realtime import manager

    settings.REALTIME_REDIS_CONNECTIONS = 10
    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 1.0)
    node = manager.RedisManager(redis_server.url, channel="test-read-headroom")
    numbering = node.numbering
    pool = node.redis.connection_pool
    release = asyncio.Event()

    async def held_read(room: str, *, since: object, budget: int) -> None:  # a read that keeps its connection until released
        connection = await pool.get_connection()
        try:
            try:
                await release.wait()
            except asyncio.CancelledError:  # timed out: kept all the same, as a read stuck in a slow reply would be
                await release.wait()
                raise
        finally:
            await pool.release(connection)

    async def publish_back_to_back() -> None:  # as a command's batch, or several, delivered during the storm
        while not release.is_set():
            await node.redis.publish("test-read-headroom-elsewhere", "x")

    await node.pubsub.subscribe("test-read-headroom-listener")  # the subscription keeps a connection of the pool
    numbering.position = held_read  # type: ignore[method-assign]
    node._subscribed.set()
    reads = [asyncio.ensure_future(node.position(f"project_{i}", since=None, budget=10_000)) for i in range(50)]
    publishers = [asyncio.ensure_future(publish_back_to_back()) for _ in range(manager.READ_HEADROOM + 2)]  # more than it
    try:
        for _ in range(10):
            await asyncio.sleep(0.01)  # the reads take what they may; the publishers go round
        assert await node._reachable() and not node._ping_failed
        assert await node._send(node._resync_message()) == 0  # published (no subscriber here)
    finally:
        release.set()
        await asyncio.gather(*reads, *publishers, return_exceptions=True)
        del numbering.position
        await node.pubsub.aclose()
        await _close(node)


async def test_a_broken_subscription_resubscribes_on_the_same_pool(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Each break of the subscription while Redis answers (a proxy's idle timeout, a CLIENT KILL) used to leave a whole
    pool open for good: python-socketio makes a new client per attempt. Now the pool stays and the old subscription
    is closed: Redis's client count stays put however often it breaks."""
    import redis.asyncio as aioredis

    from realtime import manager

    monkeypatch.setattr(manager.room_ops, "apply", _no_resync)
    node = manager.RedisManager(redis_server.url, channel="test-resubscribe")
    admin = aioredis.from_url(redis_server.url)
    try:
        async with _listening(node):
            pool, counts = node.redis.connection_pool, []
            for _ in range(3):
                # A few of the pool's connections in use, as joins' reads would have them.
                await asyncio.gather(*(node.position(f"project_{i}", since=None, budget=10_000) for i in range(5)))
                counts.append(len(await admin.client_list()))
                await admin.client_kill_filter(_type="pubsub")
                await _unsubscribed(node)
                await asyncio.wait_for(node._subscribed.wait(), 10)  # and subscribes again
            assert counts[-1] <= counts[0] + 1, counts  # before: 5 or more connections more per break
            assert node.redis.connection_pool is pool
            assert pool._turns._value + len(pool._holding) == pool.max_connections  # the old subscriptions' turns came back
    finally:
        await admin.aclose()


async def test_through_sentinel_a_broken_subscription_resubscribes_on_the_same_pool(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The same with a Sentinel URL (``redis+sentinel://``): each break used to leave the whole previous client and its
    pool open (a new one was made per attempt, as python-socketio does). Now the client stays (its Sentinel pool finds
    the master for each new connection, a failed-over one too) and Redis's client count stays put."""
    import redis.asyncio as aioredis

    from realtime import manager
    from tests.support.processes import SentinelServer

    monkeypatch.setattr(manager.room_ops, "apply", _no_resync)
    sentinel = SentinelServer(redis_server).start()
    node = manager.RedisManager(sentinel.url, channel="test-resubscribe-sentinel")
    admin = aioredis.from_url(redis_server.url)
    try:
        async with _listening(node):
            client, counts = node.redis, []
            for _ in range(3):
                await asyncio.gather(*(node.position(f"project_{i}", since=None, budget=10_000) for i in range(5)))
                counts.append(len(await admin.client_list()))
                await admin.client_kill_filter(_type="pubsub")
                await _unsubscribed(node)
                await asyncio.wait_for(node._subscribed.wait(), 10)
            await node.emit("task_updated", {"id": "t1", "version": 1}, room="elsewhere")  # and Redis still answers
            assert counts[-1] <= counts[0] + 1, counts  # before: 5 more connections per break
            assert node.redis is client
    finally:
        await admin.aclose()
        sentinel.stop()


@pytest.mark.parametrize("first_is", ["down", "hung"])
async def test_through_sentinel_a_failover_is_followed_by_the_same_client(redis_server, monkeypatch, settings, caplog, first_is) -> None:  # type: ignore[no-untyped-def]
    """Sentinel fails the master over to its replica: the node leaves the old master on Sentinel's ``+switch-master``,
    so its broadcasts are numbered on the new master, and come back to it numbered, while the old one has not been
    demoted yet (Sentinel does that about 10 s later), with no new client made. (Before: the node stayed on the old
    master until then, numbering there what servers already on the new master never got.) The first Sentinel the
    URL names is down from the start, or hangs (SIGSTOP) once the node follows it: the node uses the next one."""
    import uuid

    import redis.asyncio as aioredis
    import redis.exceptions

    from realtime import manager, room_ops
    from tests.support.processes import RedisServer, SentinelServer, free_port

    applied = _recorded_ops(monkeypatch)
    monkeypatch.setattr(manager, "SETTLE", 0.5)
    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 1.0)  # a hung Sentinel is left within about 1.3 s
    monkeypatch.setattr(manager.subscription, "QUIET_BEFORE_PING", 0.3)
    delivered: list[dict] = []

    async def deliver(self: Any, event: str, data: Any, namespace: Any = None, room: Any = None, **kwargs: Any) -> None:
        delivered.append(data)

    monkeypatch.setattr(manager.FastManager, "emit", deliver)
    replica = RedisServer(replica_of=redis_server.port).start()
    sentinel = SentinelServer(redis_server).start()
    first = SentinelServer(redis_server).start() if first_is == "hung" else None
    asks = aioredis.Redis(host="127.0.0.1", port=sentinel.port)
    new_master, old_master = aioredis.from_url(replica.url), aioredis.from_url(redis_server.url)
    first_port = first.port if first is not None else free_port()  # nothing listens on a free port: down
    url = f"redis+sentinel://127.0.0.1:{first_port},127.0.0.1:{sentinel.port}/0/{sentinel.service}"
    node = manager.RedisManager(url, channel=settings.REALTIME_REDIS_CHANNEL)  # the one STAMP publishes to
    paused = False
    listener = asyncio.ensure_future(node._thread())  # python-socketio's listener: decodes, then _handle_emit
    room = str(uuid.uuid4())  # named like a project's room: numbered
    log_on_new_master = f"{settings.REALTIME_REDIS_CHANNEL}:log:{room}"

    def numbered(task_id: str) -> bool:
        return any(d["id"] == task_id and "_live" in d for d in delivered)  # numbered: it came back through Redis

    try:
        await asyncio.wait_for(node._subscribed.wait(), 10)
        await _recovered(node)
        client = node.redis
        await node.emit("task_updated", {"id": "before", "version": 1}, room=room)
        for _ in range(500):
            if numbered("before"):
                break
            await asyncio.sleep(0.01)
        assert numbered("before")
        if first is not None:
            os.kill(first.proc.pid, signal.SIGSTOP)  # the node followed it (both answered: the first named first)
            paused = True
            for _ in range(100):  # its ping unanswered (0.3 s quiet, then 1 s): the node follows the next one
                if "Sentinel did not answer a ping" in caplog.text:
                    break
                await asyncio.sleep(0.1)
        await _fail_over(asks, sentinel.service)
        for _ in range(300):  # promoted: from now on it no longer replicates what the old master is sent
            with contextlib.suppress(redis.exceptions.ConnectionError):  # Sentinel closes the promoted one's clients
                if (await new_master.execute_command("ROLE"))[0] == b"master":
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("Sentinel did not promote the replica")
        for n in range(150):  # a broadcast each 0.2 s until one is numbered on the new master and comes back
            await node.emit("task_updated", {"id": f"after{n}", "version": 1}, room=room)
            await asyncio.sleep(0.2)
            try:
                logged = [fields[b"d"] for _, fields in await new_master.xrange(log_on_new_master)]
            except redis.exceptions.ConnectionError:  # Sentinel closes the promoted one's clients too: ask again
                continue
            if any(f'"after{n}"'.encode() in data for data in logged) and numbered(f"after{n}"):
                break
        else:
            raise AssertionError(f"the node never numbered a broadcast on the new master: {delivered[-3:]}")
        assert (await old_master.execute_command("ROLE"))[0] == b"master"  # not demoted yet: the node left it itself
        assert node.redis is client
        # Its subscription broke (dropped with the pool's connections) and came back on the new master: this node's
        # watchers resync, for what was published while it moved.
        assert room_ops.resync() in applied
    finally:
        if paused:
            os.kill(first.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        await _stop(node, listener, asks, new_master, old_master)
        for server in (sentinel, first, replica):
            if server is not None:
                server.stop()


async def test_a_failover_while_no_sentinel_was_followed_is_found_on_subscribing(redis_server) -> None:  # type: ignore[no-untyped-def]
    """Sentinel announced a switch while the follower followed no Sentinel (between two, or before it started): on
    subscribing it finds that the master Sentinel names is not the one the server's subscription is connected to,
    and passes the switch on all the same. (Without that check, the announcement was gone and the server stayed on
    the old master.)"""
    import redis.asyncio as aioredis
    from redis.asyncio.sentinel import Sentinel

    from realtime import sentinel as follower
    from tests.support.processes import RedisServer, SentinelServer

    replica = RedisServer(replica_of=redis_server.port).start()
    watching = SentinelServer(redis_server).start()
    asks = aioredis.Redis(host="127.0.0.1", port=watching.port)
    announcements = asks.pubsub(ignore_subscribe_messages=True)
    client = Sentinel([("127.0.0.1", watching.port)]).master_for(watching.service)
    switches: list[str] = []

    async def on_switch(event: str) -> None:
        switches.append(event)

    following = None
    try:
        await client.ping()  # the pool knows its master
        await announcements.subscribe("+switch-master")
        await _fail_over(asks, watching.service)
        async with asyncio.timeout(30):  # announced, to nobody following
            while await announcements.get_message(ignore_subscribe_messages=True, timeout=1) is None:
                pass
        pool = client.connection_pool
        on_old = ("127.0.0.1", redis_server.port)  # where the server's subscription still is
        follow = follower.follow_failovers(pool, on_switch=on_switch, current=lambda: on_old, timeout=1.0, max_backoff=0.5)
        following = asyncio.ensure_future(follow)
        for _ in range(100):
            if switches:
                break
            await asyncio.sleep(0.05)
        assert switches == [f"{watching.service} 127.0.0.1 {redis_server.port} 127.0.0.1 {replica.port}"]
    finally:
        if following is not None:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        await announcements.aclose()
        await asks.aclose()
        await client.aclose()
        watching.stop()
        replica.stop()


async def _fail_over(asks: Any, service: str) -> None:
    """Have Sentinel (``asks``: a client of it) fail ``service``'s master over to its replica."""
    for _ in range(200):  # Sentinel knows the replica, in sync, before it can promote it
        replicas = await asks.execute_command("SENTINEL", "REPLICAS", service)
        if replicas and replicas[0][b"master-link-status"] == b"ok" and replicas[0][b"flags"] == b"slave":
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("Sentinel never saw the replica in sync")
    await asks.execute_command("SENTINEL", "FAILOVER", service)


@contextlib.asynccontextmanager
async def _followed_a_failover(redis_server: Any, monkeypatch: Any) -> AsyncIterator[tuple[Any, str]]:
    """A node listening through Sentinel while Sentinel fails the master (``redis_server``) over to its replica. Yields
    ``(node, switch)`` once the node has followed: ``_master_switched`` dropped its pool's connections, and it listens on
    the replica, subscribed again. ``switch`` is the text of that ``+switch-master`` event (``<service> <old host>
    <old port> <new host> <new port>``, rebuilt from the servers' ports). Resyncs are not carried out (``_no_resync``)."""
    import redis.asyncio as aioredis

    from realtime import manager
    from tests.support.processes import RedisServer, SentinelServer

    monkeypatch.setattr(manager.room_ops, "apply", _no_resync)
    # How long _master_switched waits for the pool's Sentinel to name the announced master (the switch-back test's
    # wait): shortened so the tests are quick.
    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 1.0)
    replica = RedisServer(replica_of=redis_server.port).start()
    try:
        sentinel = SentinelServer(redis_server).start()
    except BaseException:
        replica.stop()
        raise
    asks = aioredis.Redis(host="127.0.0.1", port=sentinel.port)
    node = manager.RedisManager(sentinel.url, channel="test-switched")
    promoted = ("127.0.0.1", replica.port)
    try:
        async with _listening(node):
            await _fail_over(asks, sentinel.service)
            for _ in range(600):
                # Not while _master_switched is still dropping connections (_switching): subscribed again after it.
                followed = node._switched_to == promoted and not node._switching
                if followed and node._listening_on() == promoted and node._subscribed.is_set():
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"the node never followed the failover: it listens on {node._listening_on()}")
            await _recovered(node)
            yield node, f"{sentinel.service} 127.0.0.1 {redis_server.port} 127.0.0.1 {replica.port}"
    finally:
        await asks.aclose()
        sentinel.stop()
        replica.stop()


async def test_a_switch_announced_and_found_again_on_subscribing_is_acted_on_once(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The node followed Sentinel's ``+switch-master``; the same switch comes again (found by the follower's check on
    subscribing, or announced by a second Sentinel): the node's connections are kept. (Without ``_master_switched``'s
    check of ``_switched_to``, every connection of its pool was dropped again: its subscription on the new master
    broke, and its watchers resynced.)"""
    async with _followed_a_failover(redis_server, monkeypatch) as (node, switch):
        subscribed_on = node.pubsub.connection
        await node._master_switched(switch)  # as sentinel._switched_meanwhile passes it on
        assert node.pubsub.connection is subscribed_on and subscribed_on.is_connected


async def test_a_lagging_sentinel_announcing_a_switch_back_leaves_the_connections_where_they_are(redis_server, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """After a failover the node followed, a switch back to the old master is announced (by a Sentinel that lags) while
    the pool's Sentinel still names the new one, where the node's subscription is: its connections are kept. (Without
    ``_master_switched``'s check that the pool's Sentinel names the master the subscription is on, they were dropped
    and came back to the same master: a break of the subscription and a resync for nothing.)"""
    async with _followed_a_failover(redis_server, monkeypatch) as (node, switch):
        service, old_host, old_port, new_host, new_port = switch.split(" ")
        subscribed_on = node.pubsub.connection
        await node._master_switched(f"{service} {new_host} {new_port} {old_host} {old_port}")
        assert node.pubsub.connection is subscribed_on and subscribed_on.is_connected
        assert "its connections are kept" in caplog.text


async def test_a_subscription_closed_while_a_message_is_handled_is_not_silently_reconnected(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The subscription's connection is closed by someone else (its pool's connections dropped, as for a Sentinel
    failover) while the listener handles a message: the listener treats it as broken (this node's watchers resync).
    (Before: redis-py's read reconnected and subscribed again by itself, and what came between was lost with no
    resync.)"""
    import redis.asyncio as aioredis

    from realtime import manager

    applied = _recorded_ops(monkeypatch)
    node = manager.RedisManager(redis_server.url, channel="test-closed-meanwhile")
    publisher = aioredis.from_url(redis_server.url)
    received: list[bytes] = []

    async def consume() -> None:
        async for message in node._redis_listen_with_retries():
            if message["type"] == "message":
                received.append(message["data"])
                if message["data"] == b'{"m": "1"}':  # handled while the pool's connections are dropped
                    await node.redis.connection_pool.disconnect(inuse_connections=True)

    listener = asyncio.ensure_future(consume())
    try:
        await asyncio.wait_for(node._subscribed.wait(), 10)
        await _recovered(node)
        await publisher.publish("test-closed-meanwhile", b'{"m": "1"}')
        await _back_after_a_break(node, applied, publisher, "test-closed-meanwhile", received)
    finally:
        await _stop(node, listener, publisher)


async def test_after_a_redis_restart_the_pools_idle_connections_connect_afresh(redis_server, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """Redis restarted while the pool held idle connections: once the listener is back, reads and broadcasts work at
    the first try, and the restarted Redis gets a new epoch. (redis-py 8 lent those dead connections unchecked:
    most reads failed, and the epoch check after resubscribing could fail too, honouring old since tokens.)"""
    from realtime import manager

    monkeypatch.setattr(manager.room_ops, "apply", _no_resync)
    node = manager.RedisManager(redis_server.url, channel="test-restart-idle")
    async with _listening(node):
        await asyncio.gather(*(node.position(f"project_{i}", since=None, budget=10_000) for i in range(12)))  # 12 idle now
        redis_server.stop()
        await _unsubscribed(node)
        redis_server.start()
        await asyncio.wait_for(node._subscribed.wait(), 15)
        await _recovered(node)  # the epoch check after resubscribing
        reads = await asyncio.gather(*(node.numbering.position(f"project_{i}", since=None, budget=10_000) for i in range(12)),
                                     return_exceptions=True)  # fmt: skip
        assert [r for r in reads if isinstance(r, BaseException)] == []
        assert "could not check the history epoch" not in caplog.text


async def test_idle_connections_closed_by_redis_connect_afresh_when_lent(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Redis (or a proxy's idle timeout) closes the pool's idle connections while the subscription stays up: the next
    reads connect afresh instead of failing. (redis-py 8 lent them unchecked: every read failed once.)"""
    import redis.asyncio as aioredis

    from realtime import manager

    monkeypatch.setattr(manager.room_ops, "apply", _no_resync)
    node = manager.RedisManager(redis_server.url, channel="test-idle-closed")
    admin = aioredis.from_url(redis_server.url)
    try:
        async with _listening(node):
            await asyncio.gather(*(node.position(f"project_{i}", since=None, budget=10_000) for i in range(12)))  # 12 idle now
            assert await admin.execute_command("CLIENT KILL TYPE normal SKIPME yes") >= 12
            reads = await asyncio.gather(*(node.numbering.position(f"project_{i}", since=None, budget=10_000) for i in range(12)),
                                         return_exceptions=True)  # fmt: skip
            assert [r for r in reads if isinstance(r, BaseException)] == []
            assert node._subscribed.is_set()  # the subscription (TYPE pubsub) was left alone
    finally:
        await admin.aclose()


async def _consume(node: Any, received: list[bytes]) -> None:
    """``node``'s listener run as python-socketio runs it, each message's data kept in ``received``."""
    async for message in node._redis_listen_with_retries():
        if message["type"] == "message":
            received.append(message["data"])


async def _stop(node: Any, listener: asyncio.Future, *clients: Any) -> None:
    """End a test's listener task, close its other Redis clients, then stop ``node`` (``_close``)."""
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)
    for client in clients:
        await client.aclose()
    await _close(node)


async def _arrives(received: list[bytes], data: bytes) -> None:
    """Wait until ``data`` is among what ``_consume`` received (the test fails otherwise)."""
    for _ in range(500):
        if data in received:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{data!r} never arrived: {received}")


async def _back_after_a_break(node: Any, applied: list[dict], publisher: Any, channel: str, received: list[bytes]) -> None:
    """``node`` notices its subscription broke, subscribes again and has its watchers resync once (``applied``: see
    ``_recorded_ops``); what is published on ``channel`` afterwards reaches it (the test fails otherwise)."""
    from realtime import room_ops

    await _unsubscribed(node)
    await asyncio.wait_for(node._subscribed.wait(), 10)
    await _recovered(node)
    assert applied == [room_ops.resync()]
    await publisher.publish(channel, b'{"m": "after"}')
    await _arrives(received, b'{"m": "after"}')


def _recorded_ops(monkeypatch: Any) -> list[dict]:
    """The room operations the node applies to its own clients (a resync of its watchers), recorded, not applied."""
    from realtime import manager

    applied: list[dict] = []

    async def record(server: object, op: dict) -> None:
        applied.append(op)

    monkeypatch.setattr(manager.room_ops, "apply", record)
    return applied


async def _recovered(node: Any) -> None:
    """Wait for the check ``node`` runs once subscribed (a new epoch for a restarted Redis; a resync if it broke)."""
    await asyncio.wait_for(asyncio.shield(node._recovering), 15)


async def test_a_subscription_gone_half_open_is_noticed_replaced_and_its_watchers_resync(redis_server, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """The subscription's connection stops carrying anything without closing (a NAT or load balancer dropped it,
    and the pool's idle connections with it): the listener pings it, gets no answer, finds Redis answering on a new
    connection, subscribes afresh and resyncs this node's watchers, and broadcasts published afterwards reach it.
    (Before: ``listen()`` waited forever, and the node missed every broadcast other nodes published while its own
    publishes, on other connections, still went out. Asked on a pooled connection, as dead, Redis was taken for
    hung: a false outage first.)"""
    import redis.asyncio as aioredis

    from realtime import manager, subscription
    from tests.support.proxy import FreezingProxy

    monkeypatch.setattr(subscription, "QUIET_BEFORE_PING", 0.2)
    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 1.0)
    applied = _recorded_ops(monkeypatch)
    publisher = aioredis.from_url(redis_server.url)
    async with FreezingProxy(redis_server.port) as proxy:
        node = manager.RedisManager(proxy.redis_url, channel="test-half-open")
        received: list[bytes] = []
        listener = asyncio.ensure_future(_consume(node, received))
        try:
            await asyncio.wait_for(node._subscribed.wait(), 10)
            await publisher.publish("test-half-open", b'{"m": "before"}')
            await _arrives(received, b'{"m": "before"}')
            proxy.freeze()
            await publisher.publish("test-half-open", b'{"m": "lost"}')  # Redis sends it into the dead connection
            await _back_after_a_break(node, applied, publisher, "test-half-open", received)  # resynced for what it swallowed
            assert b'{"m": "lost"}' not in received  # the proxy swallowed it; the resync above makes up for it
            assert "answers no ping" not in caplog.text  # Redis was never taken for hung
            assert "Redis subscription lost" in caplog.text and "Redis unreachable" not in caplog.text  # nor logged so
        finally:
            await _stop(node, listener, publisher)


async def test_a_subscription_redis_does_not_confirm_does_not_count(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Redis hangs (SIGSTOP) as the listener subscribes on a connection already open: the node does not count itself
    subscribed (``_subscribed``, which joins' position reads wait for) and its watchers do not resync until Redis
    confirms; then they do. (Before: after PUBLISH_TIMEOUT it counted itself subscribed and resynced its watchers
    before the subscription was up, so what came between was lost to them.)"""
    from realtime import manager, room_ops

    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 0.5)
    applied = _recorded_ops(monkeypatch)
    node = manager.RedisManager(redis_server.url, channel="test-unconfirmed")
    # Opened while Redis answers: the subscription reuses it, so only SUBSCRIBE's reply hangs (what the old code
    # took for confirmed after PUBLISH_TIMEOUT). A new connection would hang in its handshake instead, as before.
    pool = node.numbering.redis.connection_pool
    opened = await pool.get_connection()
    await opened.send_command("PING")
    assert await opened.read_response() == b"PONG"
    await pool.release(opened)
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    paused = True
    received: list[bytes] = []
    listener = asyncio.ensure_future(_consume(node, received))
    try:
        for _ in range(30):  # several tries' worth of PUBLISH_TIMEOUT and backoff
            await asyncio.sleep(0.1)
            assert not node._subscribed.is_set()
            if _ == 0:
                assert node.pubsub.connection is opened  # the case above: SUBSCRIBE sent, its reply hung
        assert applied == []
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        paused = False
        await asyncio.wait_for(node._subscribed.wait(), 15)
        await _recovered(node)
        assert applied == [room_ops.resync()]
    finally:
        if paused:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        await _stop(node, listener)


@pytest.mark.parametrize("connections", [5, 0, -3])
def test_too_few_redis_connections_are_refused_at_start_with_the_reason(settings, connections) -> None:  # type: ignore[no-untyped-def]
    """Under the minimum, joins' reads would take the connections kept for broadcasts and the outage watcher (or, at
    0 or below, none could run): the server refuses to start and says why, rather than serving slowly."""
    from django.core.exceptions import ImproperlyConfigured

    from realtime import manager

    settings.REALTIME_REDIS_CONNECTIONS = connections
    with pytest.raises(ImproperlyConfigured, match=f"REALTIME_REDIS_CONNECTIONS is {connections}; .* at least 6"):
        manager.RedisManager("redis://127.0.0.1:1/0", channel="test-too-few")


async def test_the_fewest_redis_connections_allowed_serve_a_join(redis_server, settings) -> None:  # type: ignore[no-untyped-def]
    """The boundary: the minimum (6) itself is accepted, and a join's history read has its one connection besides
    the subscription and the headroom."""
    from realtime import manager

    settings.REALTIME_REDIS_CONNECTIONS = manager.MIN_REDIS_CONNECTIONS
    node = manager.RedisManager(redis_server.url, channel="test-fewest")
    async with _listening(node):
        assert (await node.position("project_fewest", since=None, budget=10_000)).seq == 0


@pytest.mark.parametrize("protocol", [2, 3])
async def test_an_idle_healthy_subscription_answers_its_pings_and_is_kept(redis_server, monkeypatch, protocol) -> None:  # type: ignore[no-untyped-def]
    """Many quiet periods on a healthy subscription, under either Redis protocol: every ping is answered, so the
    subscription is never dropped (no outage, no resync) and a message published afterwards arrives."""
    import redis.asyncio as aioredis

    from realtime import manager, subscription

    monkeypatch.setattr(subscription, "QUIET_BEFORE_PING", 0.05)
    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 0.3)
    applied = _recorded_ops(monkeypatch)
    node = manager.RedisManager(f"{redis_server.url}?protocol={protocol}", channel=f"test-idle-{protocol}")
    publisher = aioredis.from_url(redis_server.url)
    received: list[bytes] = []
    listener = asyncio.ensure_future(_consume(node, received))
    try:
        await asyncio.wait_for(node._subscribed.wait(), 10)
        await _recovered(node)

        async def pings() -> int:
            return (await publisher.info("commandstats")).get("cmdstat_ping", {}).get("calls", 0)

        first = await pings()
        for _ in range(300):  # until 10 quiet periods have each ended with a ping (only the heartbeat pings here)
            await asyncio.sleep(0.1)
            if await pings() >= first + 10:
                break
            assert node._subscribed.is_set() and not node._outage and applied == []
        assert await pings() >= first + 10
        assert node._subscribed.is_set() and not node._outage and applied == []
        await publisher.publish(f"test-idle-{protocol}", b'{"m": "still here"}')
        await _arrives(received, b'{"m": "still here"}')
    finally:
        await _stop(node, listener, publisher)


async def test_a_hung_redis_starts_the_outage_but_keeps_the_subscription(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Redis hangs (SIGSTOP) under an idle subscription: its ping goes unanswered and so does one on another
    connection, so the outage starts (joins refused at once) but the subscription is kept, and once Redis resumes
    what was published meanwhile arrives on it, with no resync. (Dropping it, as the first heartbeat did, cost every
    watcher of every node a resync when Redis came back, for nothing lost.)"""
    import redis.asyncio as aioredis

    from realtime import manager, subscription

    monkeypatch.setattr(subscription, "QUIET_BEFORE_PING", 0.1)
    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 0.5)
    applied = _recorded_ops(monkeypatch)
    node = manager.RedisManager(redis_server.url, channel="test-hung-kept")
    publisher = aioredis.from_url(redis_server.url, socket_timeout=None)  # its publish waits out the hang
    await publisher.ping()  # connected before the hang: its publish waits in Redis's buffer, not in a handshake
    received: list[bytes] = []
    listener = asyncio.ensure_future(_consume(node, received))
    paused = False
    try:
        await asyncio.wait_for(node._subscribed.wait(), 10)
        await _recovered(node)
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        paused = True
        meanwhile = asyncio.ensure_future(publisher.publish("test-hung-kept", b'{"m": "meanwhile"}'))
        for _ in range(300):  # the subscription's ping, then one on another connection, go unanswered
            if node._outage and node._ping_failed:
                break
            await asyncio.sleep(0.01)
        assert node._outage and node._ping_failed
        for _ in range(20):  # a few more rounds of the heartbeat
            await asyncio.sleep(0.1)
            assert node._subscribed.is_set()
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        paused = False
        assert await asyncio.wait_for(meanwhile, 10) == 1  # reached the subscription it was kept for
        await _arrives(received, b'{"m": "meanwhile"}')
        await asyncio.wait_for(asyncio.shield(node._watcher), 15)  # a ping answered: the outage ends
        assert not node._outage and node._subscribed.is_set() and applied == []
    finally:
        if paused:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        await _stop(node, listener, publisher)


async def test_a_subscription_that_died_while_a_message_was_handled_is_not_silently_reconnected(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The connection goes half-open while the listener is busy handling a message; the watchdog closes it meanwhile.
    Back for the next message, the listener treats the subscription as broken (resubscribes, its watchers resync).
    (Without the check before each read, redis-py's parse_response reconnects a closed pubsub connection and
    resubscribes by itself: what was published in between was lost with no resync.)"""
    import redis.asyncio as aioredis

    from realtime import manager, subscription
    from tests.support.proxy import FreezingProxy

    monkeypatch.setattr(subscription, "QUIET_BEFORE_PING", 0.2)
    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 0.5)
    applied = _recorded_ops(monkeypatch)
    publisher = aioredis.from_url(redis_server.url)
    async with FreezingProxy(redis_server.port) as proxy:
        node = manager.RedisManager(proxy.redis_url, channel="test-dead-while-busy")
        handling, go_on = asyncio.Event(), asyncio.Event()
        received: list[bytes] = []

        async def consume() -> None:  # as python-socketio's listener: each message handled before the next read
            async for message in node._redis_listen_with_retries():
                if message["type"] == "message":
                    received.append(message["data"])
                    if message["data"] == b'{"m": "slow"}':
                        handling.set()
                        await go_on.wait()

        listener = asyncio.ensure_future(consume())
        try:
            await asyncio.wait_for(node._subscribed.wait(), 10)
            await _recovered(node)
            await publisher.publish("test-dead-while-busy", b'{"m": "slow"}')
            await asyncio.wait_for(handling.wait(), 10)
            proxy.freeze()
            subscribed_on = node.pubsub.connection
            for _ in range(1500):  # the watchdog: ping, no answer, Redis answers a new connection, grace, close
                if not subscribed_on.is_connected:
                    break
                await asyncio.sleep(0.01)
            assert not subscribed_on.is_connected
            await publisher.publish("test-dead-while-busy", b'{"m": "lost"}')  # reaches no connection of this node
            go_on.set()
            await _back_after_a_break(node, applied, publisher, "test-dead-while-busy", received)
        finally:
            go_on.set()
            await _stop(node, listener, publisher)


async def test_a_broadcast_whose_stamp_timed_out_in_a_hang_reaches_this_nodes_clients_once(redis_server, monkeypatch, settings) -> None:  # type: ignore[no-untyped-def]
    """Redis hangs as this node broadcasts: the stamp times out, so this node's clients get the broadcast at once,
    unnumbered. When Redis resumes it runs the stamp all the same and the subscription (kept through the hang)
    brings its echo back: skipped here, so those clients get it once. (Before: twice, the second time numbered.)"""
    import uuid

    import redis.asyncio as aioredis

    from realtime import manager

    monkeypatch.setattr(manager, "PUBLISH_TIMEOUT", 0.5)
    monkeypatch.setattr(manager.room_ops, "apply", _no_resync)
    delivered: list[tuple[str, Any]] = []

    async def deliver(self: Any, event: str, data: Any, namespace: Any = None, room: Any = None, **kwargs: Any) -> None:
        delivered.append((event, data))  # this node's clients, whether sent here directly or from the subscription

    monkeypatch.setattr(manager.FastManager, "emit", deliver)
    room = str(uuid.uuid4())  # named like a project's room: numbered
    channel = settings.REALTIME_REDIS_CHANNEL  # the one STAMP publishes to
    node = manager.RedisManager(redis_server.url, channel=channel)
    publisher = aioredis.from_url(redis_server.url, socket_timeout=None)
    await publisher.ping()
    listener = asyncio.ensure_future(node._thread())  # python-socketio's listener: decodes, then _handle_emit
    paused = False
    try:
        await asyncio.wait_for(node._subscribed.wait(), 10)
        await _recovered(node)
        # A first broadcast loads the script into Redis (a first EVALSHA sent in the hang would fail with NOSCRIPT)
        # and leaves its connection open: the next stamp waits in Redis, not in a handshake.
        await node.emit("task_updated", {"id": "t0", "version": 1}, room=str(uuid.uuid4()))
        for _ in range(500):
            if delivered:
                break
            await asyncio.sleep(0.01)
        assert [data["id"] for _, data in delivered] == ["t0"]  # from the subscription, numbered
        delivered.clear()
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        paused = True
        await node.emit("task_updated", {"id": "t1", "version": 2}, room=room)  # times out: delivered here, unnumbered
        assert [event for event, _ in delivered] == ["task_updated"]
        os.kill(redis_server.proc.pid, signal.SIGCONT)
        paused = False
        # Redis runs the stamp sent during the hang in its first round after it resumes, before it answers the
        # outage watcher's ping sent since (the repair then gives a new epoch), and before the marker below.
        await asyncio.wait_for(asyncio.shield(node._watcher), 15)
        marker = {"method": "emit", "event": "marker", "data": [{}], "namespace": "/", "room": "elsewhere", "host_id": "b"}
        await publisher.publish(channel, json.dumps(marker))  # after the echo on the same channel: handled after it
        for _ in range(500):
            if len(delivered) > 1 and delivered[-1][0] == "marker":
                break
            await asyncio.sleep(0.01)
        assert [event for event, _ in delivered] == ["task_updated", "marker"]
    finally:
        if paused:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        await _stop(node, listener, publisher)


async def test_what_is_no_json_object_on_the_channel_is_dropped_and_the_listener_goes_on(redis_server, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """Anything published on the channel that is not a JSON object (another program sharing Redis, a stray
    ``PUBLISH``) is dropped with a warning; the subscription stays and the next broadcast arrives. (Before:
    python-socketio's listener raised on it, ``'method' in 1``, outside its handlers' ``try`` and started over on a
    new subscription: what was published in between was lost, with no resync.)"""
    import redis.asyncio as aioredis

    from realtime import manager

    monkeypatch.setattr(manager.room_ops, "apply", _no_resync)
    delivered: list[str] = []

    async def deliver(self: Any, event: str, data: Any, namespace: Any = None, room: Any = None, **kwargs: Any) -> None:
        delivered.append(event)

    monkeypatch.setattr(manager.FastManager, "emit", deliver)
    channel = "test-no-json-object"
    node = manager.RedisManager(redis_server.url, channel=channel)
    node.server = SimpleNamespace(logger=logging.getLogger("socketio.test"))  # _thread logs its errors there
    publisher = aioredis.from_url(redis_server.url, socket_timeout=None)
    listener = asyncio.ensure_future(node._thread())  # python-socketio's listener: decodes, then dispatches
    try:
        await asyncio.wait_for(node._subscribed.wait(), 10)
        await _recovered(node)
        subscription = node.pubsub
        for junk in (b"1", b'["method"]', b'"method"', b"\xff\xfe"):
            await publisher.publish(channel, junk)
        for malformed in (b"{not json", b"{}", b'{"x": 1}'):  # objects, or not JSON at all: passed on, and harmless
            await publisher.publish(channel, malformed)
        marker = {"method": "emit", "event": "marker", "data": [{}], "namespace": "/", "room": "elsewhere", "host_id": "b"}
        await publisher.publish(channel, json.dumps(marker))
        for _ in range(500):
            if delivered:
                break
            await asyncio.sleep(0.01)
        assert delivered == ["marker"]
        assert node.pubsub is subscription and not listener.done()
        assert caplog.text.count("not a JSON object") == 1  # the first one only: a flood is not logged line by line
    finally:
        await _stop(node, listener, publisher)


async def test_a_broadcast_echoed_before_its_stamp_timed_out_is_not_delivered_again(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Redis runs the stamp just before the deadline: the echo reaches this node (delivered, numbered) while the
    reply is still on its way, then the stamp times out. The broadcast is not delivered a second time, unnumbered,
    nor recorded as lost (it reached every node). (With the id recorded only after the timeout: twice.)"""
    import uuid

    from realtime import manager

    delivered: list[str] = []

    async def deliver(self: Any, event: str, data: Any, namespace: Any = None, room: Any = None, **kwargs: Any) -> None:
        delivered.append(data["id"])

    monkeypatch.setattr(manager.FastManager, "emit", deliver)
    node = manager.RedisManager("redis://127.0.0.1:1/0", channel="test-echo-first")  # never reached: the stamp is stubbed
    lost: list[str] = []

    def record_loss(error: Exception, *, room: str = "") -> asyncio.Future:
        lost.append(room)
        done = asyncio.get_running_loop().create_future()
        done.set_result([])
        return done

    monkeypatch.setattr(node, "_lost", record_loss)
    monkeypatch.setattr(node, "_down", lambda error: None)

    class Numbering:
        async def stamp(self, keys: list[str], argv: list[Any]) -> None:
            message = json.loads(argv[7] + "{}]}")  # python-socketio's message, as the subscription would bring it
            await node._handle_emit({**message, "data": [{"id": "t1"}]})
            raise TimeoutError  # and then the reply does not come in time

    monkeypatch.setattr(manager.RedisManager, "numbering", property(lambda self: Numbering()))
    await node.emit("task_updated", {"id": "t1", "version": 2}, room=str(uuid.uuid4()))
    assert delivered == ["t1"] and lost == [] and not node._stamps


async def test_a_subscription_that_breaks_again_during_its_check_resyncs_the_watchers_once(redis_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The subscription breaks, comes back, and breaks again while the check after the first return is still under
    way (claiming the epoch slowed to 1 s): the earlier check is superseded, so this node's watchers reload once, not twice in a
    row. (Before: both checks ran to their end, two resyncs.)"""
    import redis.asyncio as aioredis

    from realtime import manager, room_ops
    from realtime.redis_history import RedisHistory

    applied = _recorded_ops(monkeypatch)
    claim_epoch = RedisHistory.claim_epoch

    async def slow_claim(self: Any, run_id: str) -> None:
        await asyncio.sleep(1.0)
        await claim_epoch(self, run_id)

    monkeypatch.setattr(RedisHistory, "claim_epoch", slow_claim)
    node = manager.RedisManager(redis_server.url, channel="test-flapping")
    admin = aioredis.from_url(redis_server.url)
    received: list[bytes] = []
    listener = asyncio.ensure_future(_consume(node, received))
    try:
        await asyncio.wait_for(node._subscribed.wait(), 10)
        await _recovered(node)  # the first subscription's check: nothing broke, no resync
        assert applied == []
        for _ in range(2):  # the second break comes while the check after the first is in its slow read
            await admin.client_kill_filter(_type="pubsub")
            await _unsubscribed(node)
            await asyncio.wait_for(node._subscribed.wait(), 10)
        await _recovered(node)
        assert applied == [room_ops.resync()]
    finally:
        await _stop(node, listener, admin)


@pytest.mark.parametrize("sent", [True, False], ids=["in-its-redis-call", "before-it-was-sent"])
async def test_a_broadcast_cancelled_before_redis_numbered_it_is_recorded_as_lost(monkeypatch, sent) -> None:  # type: ignore[no-untyped-def]
    """The task that broadcasts is cancelled (a crawl stopped mid-progress, a caller's own timeout) while the broadcast
    waits for Redis's answer, or behind a drain before it is sent: it may be numbered nowhere, so its room is recorded
    as lost for a server to repair (its watchers resync), this node's clients get it, and the cancellation goes on.
    Redis may be well: no outage starts. (Before: nothing recorded, and other nodes' watchers silently missed it.)"""
    import uuid

    from realtime import manager
    from realtime.models import LostBroadcast

    delivered: list[str] = []

    async def deliver(self: Any, event: str, data: Any, namespace: Any = None, room: Any = None, **kwargs: Any) -> None:
        delivered.append(data["id"])

    monkeypatch.setattr(manager.FastManager, "emit", deliver)
    node = manager.RedisManager("redis://127.0.0.1:1/0", channel="test-cancelled")  # never reached: the stamp is stubbed
    waiting = asyncio.Event()

    class Numbering:
        async def stamp(self, keys: list[str], argv: list[Any]) -> None:
            waiting.set()
            await asyncio.Event().wait()  # Redis does not answer

    monkeypatch.setattr(manager.RedisManager, "numbering", property(lambda self: Numbering()))
    room = str(uuid.uuid4())
    if not sent:
        await node._publishing.acquire()  # a drain under way: the broadcast waits behind it, not sent yet
    broadcast = asyncio.ensure_future(node.emit("task_updated", {"id": "t1", "version": 2}, room=room))
    if sent:
        await asyncio.wait_for(waiting.wait(), 5)
    else:
        for _ in range(500):
            if node._publishing._waiters:
                break
            await asyncio.sleep(0.01)
    broadcast.cancel()
    with pytest.raises(asyncio.CancelledError):
        await broadcast
    assert delivered == ["t1"]
    assert await db(lambda: list(LostBroadcast.objects.values_list("room", flat=True)))() == [room]
    assert not node._outage and not node._numbering_down  # no outage: Redis may be well; the room alone is repaired
    # Sent, its echo is skipped here should Redis run it yet; never sent, there is none to skip.
    assert list(node._stamps.values()) == ([manager.DELIVERED_HERE] if sent else [])


@pytest.mark.parametrize("bound", ["10", "1"])
async def test_a_server_stopped_while_a_broadcast_waits_for_a_hung_redis_records_it_as_lost(spawn, redis_server, bound) -> None:  # type: ignore[no-untyped-def]
    """A chat message posted over Socket.IO (its handler is not a request: uvicorn does not wait for it) while Redis
    hangs, then the server is told to stop: shutdown waits for its broadcast (``bus.finish_sends``), whose Redis call
    times out (5 s) and records its room as lost, so another server repairs it (the room's watchers resync). With a
    bound shorter than that (REALTIME_RESPONSE_WAIT_SECONDS=1), every room ("") is recorded instead. (Before: uvicorn
    ended the process with the broadcast still waiting, nothing recorded, and other nodes' watchers silently missed it.)"""
    from chat import services as chat_services
    from chat.models import ChatMessage
    from realtime.models import LostBroadcast

    server = spawn(REDIS_URL=redis_server.url, REALTIME_RESPONSE_WAIT_SECONDS=bound)
    alice = await db(f.make_user)("alice")
    session = await db(chat_services.chat_session_create)(created_by=alice, title="stop", participants=[])
    client = CLIENT_KINDS["python"]()
    paused = False
    try:
        await client.connect(server.url, auth={"token": await db(f.token_for)(alice)})
        assert (await client.call("join_chat", {"session_id": str(session.pk)}))["ok"]
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        paused = True
        await client.send("chat_message", {"session_id": str(session.pk), "body": "last words"})
        for _ in range(500):  # stored: its broadcast is on its way to the hung Redis
            if await db(ChatMessage.objects.filter(session=session).exists)():
                break
            await asyncio.sleep(0.01)
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(server.proc.wait, 60)
        rooms = await db(lambda: list(LostBroadcast.objects.values_list("room", flat=True)))()
        assert rooms == ([f"chat_{session.pk}"] if bound == "10" else [""]), server.output()
    finally:
        if paused:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        await client.close()


async def test_a_subscription_redis_refuses_is_logged_once_and_costs_other_nodes_nil(redis_server, monkeypatch, caplog, settings) -> None:  # type: ignore[no-untyped-def]
    """Redis answers but its ACL refuses this server's SUBSCRIBE (publishing is allowed): logged once, with that
    cause, and no outage. This node's broadcasts go numbered to the other nodes and straight to its own clients; its
    room operations reach the other nodes; joins get their snapshot at once. Once the ACL allows it, the node
    subscribes and its watchers resync. (Before: every retry, seconds apart, logged "Redis unreachable" then "Redis
    is back", and in between this node's broadcasts went numbered through Redis, which it could not hear: its own
    clients silently missed them.)"""
    import logging
    import uuid

    import redis.asyncio as aioredis

    from realtime import manager, room_ops

    monkeypatch.setattr(manager, "MAX_BACKOFF", 0.5)
    applied = _recorded_ops(monkeypatch)
    delivered: list[str] = []

    async def deliver(self: Any, event: str, data: Any, namespace: Any = None, room: Any = None, **kwargs: Any) -> None:
        delivered.append(data["id"])

    monkeypatch.setattr(manager.FastManager, "emit", deliver)
    admin = aioredis.from_url(redis_server.url)
    await admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-subscribe")
    channel = settings.REALTIME_REDIS_CHANNEL  # the one STAMP publishes to
    other_node = admin.pubsub()  # what another node hears on the channel
    await other_node.subscribe(channel)
    node = manager.RedisManager(f"redis://app:pw@127.0.0.1:{redis_server.port}/0", channel=channel)
    received: list[bytes] = []
    with caplog.at_level(logging.WARNING, logger="realtime.manager"):
        listener = asyncio.ensure_future(_consume(node, received))
        try:
            for _ in range(500):
                if node._subscription_refused:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(2)  # several retries of the listener (MAX_BACKOFF 0.5 s)
            assert node._subscription_refused and not node._outage
            await node.emit("task_updated", {"id": "t1", "version": 2}, room=str(uuid.uuid4()))
            leave = room_ops.leave(members_of="user_7", room="project_x")
            await node.publish_op(leave)  # applied here, and published
            assert delivered == ["t1"]  # to this node's clients, at once
            heard = [m async for m in _messages(other_node, 2)]
            assert b'"t1"' in heard[0] and b'"_live"' in heard[0]  # numbered, to the other nodes
            assert b"project_x" in heard[1]  # the room operation too: not held
            with pytest.raises(ConnectionError, match="refuses"):
                await node.position(str(uuid.uuid4()), since=None, budget=10_000)  # a snapshot at once, not after 5 s
            assert caplog.text.count("Redis refuses this server's subscription") == 1
            assert "Redis unreachable" not in caplog.text and "Redis is back" not in caplog.text
            await admin.execute_command("ACL", "SETUSER", "app", "+subscribe")
            await asyncio.wait_for(node._subscribed.wait(), 10)
            await _recovered(node)
            assert applied == [leave, room_ops.resync()]  # then this node's watchers reload what they could not hear
            assert "Redis allows this server's subscription again" in caplog.text
        finally:
            await other_node.aclose()
            await _stop(node, listener, admin)


async def _messages(pubsub: Any, count: int) -> AsyncIterator[bytes]:
    """The data of the next ``count`` messages ``pubsub`` receives (the test fails after 10 s without them)."""
    async with asyncio.timeout(10):
        while count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                count -= 1
                yield message["data"]
