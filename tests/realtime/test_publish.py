"""The signed bus door (/_realtime/publish) against a real server: every malformed or unsafe request is a 4xx with a
reason, nothing reaches a client, nobody is disconnected, and the server keeps serving."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings

from realtime import room_ops, signing
from tests.conftest import db
from tests.support import factories as f

URL = "/_realtime/publish"


def signed(body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """Headers signing ``body`` with this run's key (the in-process server shares the test's settings)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {signing.TIMESTAMP_HEADER: str(timestamp), signing.SIGNATURE_HEADER: signing.sign(body, timestamp)}


def batch(*messages: Any, nonce: str | None = None) -> bytes:
    return json.dumps({"nonce": nonce or secrets.token_hex(16), "messages": list(messages)}).encode()


def emit(title: str, room: Any) -> dict[str, Any]:
    return {"op": "emit", "event": "task_updated", "data": {"title": title}, "room": room}


async def watching(connect: Any) -> tuple[Any, Any]:
    """A project and a client in its room (also in its user's room, which operations address)."""
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"]
    await client.wait_for("initial_tasks")
    return project, client


async def still_there(http: httpx.AsyncClient, client: Any, project: Any, *, refused: list[str]) -> None:
    """The client is connected, in the room, and got nothing refused (a genuine message after them arrives alone)."""
    body = batch(emit("genuine", str(project.pk)))
    response = await http.post(URL, content=body, headers=signed(body))
    assert response.json() == {"ok": True, "delivered": 1}
    assert (await client.wait_for("task_updated"))["title"] == "genuine"
    assert client.connected
    titles = [u["title"] for u in client.received("task_updated")]
    assert titles == ["genuine"], titles
    assert not set(titles) & set(refused)


async def test_unsigned_forged_and_odd_signatures_are_refused_before_parsing(connect, http):
    project, client = await watching(connect)
    good = batch(emit("forged", str(project.pk)))
    cases = {
        "unsigned": (good, {}),
        "forged": (good, {signing.TIMESTAMP_HEADER: str(int(time.time())), signing.SIGNATURE_HEADER: "0" * 64}),
        "tampered": (batch(emit("tampered", str(project.pk))), signed(good)),
        "non-ascii signature": (good, {signing.TIMESTAMP_HEADER: str(int(time.time())), signing.SIGNATURE_HEADER: "é" * 64}),
        "malformed timestamp": (good, {signing.TIMESTAMP_HEADER: "soon", signing.SIGNATURE_HEADER: "0" * 64}),
        "stale": (good, signed(good, timestamp=int(time.time()) - 120)),
        # Unsigned garbage is refused for its signature: it is never parsed at all.
        "unsigned deep JSON": (b"[" * 100_000, {}),
    }
    seen_before = len(signing._seen)
    answers = {}
    for name, (body, headers) in cases.items():
        encoded = {k: v.encode("latin-1") for k, v in headers.items()}  # httpx would refuse a non-ASCII str header
        response = await http.post(URL, content=body, headers=encoded)
        answers[name] = (response.status_code, response.json()["error"])
    assert answers == {
        "unsigned": (403, "unsigned request"),
        "forged": (403, "bad signature"),
        "tampered": (403, "bad signature"),
        "non-ascii signature": (403, "bad signature"),
        "malformed timestamp": (403, "malformed timestamp"),
        "stale": (403, "stale request"),
        "unsigned deep JSON": (403, "unsigned request"),
    }
    assert len(signing._seen) == seen_before, "a request without the key added to the nonce store"
    await still_there(http, client, project, refused=["forged", "tampered"])


async def test_oversize_bodies_are_refused_with_413_by_header_and_by_actual_size(connect, http, settings):
    project, client = await watching(connect)
    settings.REALTIME_PUBLISH_MAX_BYTES = 2_000  # the in-process server reads the same settings
    big = batch(emit("x" * 3_000, str(project.pk)))

    declared = await http.post(URL, content=big, headers=signed(big))
    assert (declared.status_code, declared.json()["error"]) == (413, "request body over 2000 bytes")

    async def chunks():  # no Content-Length at all: the body itself is measured
        for start in range(0, len(big), 500):
            yield big[start : start + 500]

    streamed = await http.post(URL, content=chunks(), headers=signed(big))
    assert "content-length" not in streamed.request.headers
    assert (streamed.status_code, streamed.json()["error"]) == (413, "request body over 2000 bytes")

    await still_there(http, client, project, refused=["x" * 3_000])


async def test_deeply_nested_json_is_a_400_not_a_500(connect, http):
    project, client = await watching(connect)
    for body in (b"[" * 100_000, b'{"nonce": "' + b"a" * 32 + b'", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"):
        response = await http.post(URL, content=body, headers=signed(body))
        assert (response.status_code, response.json()["error"]) == (400, "malformed request: JSON nested too deeply")
    await still_there(http, client, project, refused=[])


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([emit("no room", None)], "emit needs a room (a message to everyone is refused)"),
        ([{"op": "emit", "event": "task_updated", "data": {"title": "missing room"}}], "emit needs a room"),
        ([emit("empty room", "")], "emit needs a room"),
        ([{"op": "disconnect"}], "disconnect needs members_of"),
        ([{"op": "disconnect", "members_of": None}], "disconnect needs members_of"),
        ([{"op": "disconnect", "members_of": 7}], "disconnect needs members_of"),
        ([{"op": "leave", "room": "x"}], "leave needs members_of"),
        ([{"op": "recheck", "members_of": ["user_1"]}], "recheck needs members_of"),
        ([{"op": "explode", "members_of": "user_1"}], "unknown op 'explode'"),
        (["not an object"], "a message must be an object"),
        ([{"op": "emit", "event": room_ops.OP_EVENT, "data": {"op": "disconnect"}, "room": "r"}], "'realtime:op' is reserved"),
        ([{"op": "emit", "event": "task_updated", "room": "r"}], "emit needs data"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
async def test_messages_that_would_reach_everyone_or_are_malformed_are_refused(connect, http, messages, error):
    project, client = await watching(connect)
    # A valid emit first: the whole batch is refused, so not even it is delivered.
    body = batch(emit("before the bad one", str(project.pk)), *messages)
    response = await http.post(URL, content=body, headers=signed(body))
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"malformed message 1: {error}"), response.json()
    await still_there(http, client, project, refused=["before the bad one", "no room", "missing room", "empty room"])


async def test_malformed_batches_are_400_with_a_reason(http, server):
    cases = [b"{not json", b"\xff\xfe", b"[]", b'"text"', b'{"nonce": "' + b"a" * 32 + b'"}', b'{"messages": {"op": "emit"}}']
    for body in cases:
        response = await http.post(URL, content=body, headers=signed(body))
        assert response.status_code == 400, body
        assert response.json()["error"].startswith("malformed request"), response.json()
    missing_nonce = json.dumps({"messages": []}).encode()
    response = await http.post(URL, content=missing_nonce, headers=signed(missing_nonce))
    assert (response.status_code, response.json()["error"]) == (403, "missing nonce")


async def test_a_valid_batch_is_delivered_in_order_and_cannot_be_replayed(connect, http):
    project, client = await watching(connect)
    body = batch(emit("one", str(project.pk)), emit("two", str(project.pk)))
    headers = signed(body)
    assert (await http.post(URL, content=body, headers=headers)).json() == {"ok": True, "delivered": 2}
    assert [(await client.wait_for("task_updated"))["title"] for _ in range(2)] == ["one", "two"]
    replay = await http.post(URL, content=body, headers=headers)
    assert (replay.status_code, replay.json()["error"]) == (403, "replayed request")


async def test_a_signed_operation_still_works_when_well_formed(connect, http):
    project, client = await watching(connect)
    user_room = f"user_{await db(lambda: project.owner_id)()}"
    body = batch({"op": "disconnect", "members_of": user_room})
    assert (await http.post(URL, content=body, headers=signed(body))).json() == {"ok": True, "delivered": 1}
    from tests.realtime.test_revocation import wait_disconnected

    await wait_disconnected(client)


def test_the_nonce_store_is_bounded_and_pruned(monkeypatch):
    monkeypatch.setattr(signing, "_seen", type(signing._seen)())
    monkeypatch.setattr(signing, "MAX_NONCES", 3)
    for n in range(3):
        assert signing.claim(f"{n:032d}") is None
    assert signing.claim("x" * 32) == "too many signed requests: try again shortly"
    assert signing.claim(f"{0:032d}") == "replayed request"
    now = time.time()
    monkeypatch.setattr(signing.time, "time", lambda: now + 3 * signing.MAX_AGE)  # every nonce has expired
    assert signing.claim("y" * 32) is None
    assert list(signing._seen) == ["y" * 32]


async def test_ops_without_a_room_arriving_through_redis_do_nothing(spawn, redis_server, database_url):
    """Defence in depth: a malformed operation published on the Redis channel reaches room_ops.apply, which ignores it."""
    from tests.support.py_client import PyClient

    node = spawn(REDIS_URL=redis_server.url)
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = PyClient()
    await client.connect(node.url, auth={"token": await db(f.token_for)(alice)})
    try:
        assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"]
        publisher = redis.Redis.from_url(redis_server.url)
        channel = settings.REALTIME_REDIS_CHANNEL

        def publish(event: str, data: Any, room: Any = None) -> None:
            message = {"method": "emit", "event": event, "data": [data], "namespace": "/", "room": room, "host_id": "test"}
            publisher.publish(channel, json.dumps(message))

        for bad in ({"op": "disconnect"}, {"op": "disconnect", "members_of": None}, {"op": "leave", "room": str(project.pk)}, "junk"):
            publish(room_ops.OP_EVENT, bad)
        publish("task_updated", {"title": "after the bad ops"}, room=str(project.pk))  # the listener handles in order
        assert (await client.wait_for("task_updated"))["title"] == "after the bad ops"
        assert client.connected
        assert "ignored room operation" in node.output()
        publisher.close()
    finally:
        await client.close()
