"""Bad client -> server input, from both client kinds: every one is acked {"ok": false, "error": <reason>}, nothing breaks.

Each case sends one event with some arguments; ``OWN`` and ``OTHER`` in the arguments stand for
the id of a project the user owns and of another user's project.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from django.conf import settings

from realtime import dispatcher
from tests.conftest import db
from tests.support import factories as f
from tests.support.py_client import PyClient

OWN, OTHER = "<own project>", "<another user's project>"
LIMIT = settings.REALTIME_MAX_EVENT_PAYLOAD_BYTES
assert LIMIT == 16 * 1024


def case(event: str, *args: Any, reason: str | None = None, id: str) -> Any:
    return pytest.param(event, args, reason, id=id)


CASES = [
    # join_project: the payload itself
    case("join_project", reason="project_id", id="join-no-payload"),
    case("join_project", None, reason="project_id", id="join-null"),
    case("join_project", "7b2d8a4e-0000-4000-8000-000000000000", reason="must be an object", id="join-string"),
    case("join_project", 42, reason="must be an object", id="join-number"),
    case("join_project", True, reason="must be an object", id="join-bool"),
    case("join_project", [OWN], reason="must be an object", id="join-list"),
    case("join_project", {}, reason="project_id", id="join-empty-object"),
    # join_project: project_id
    case("join_project", {"project_id": None}, reason="project_id", id="project_id-null"),
    case("join_project", {"project_id": 12345}, reason="project_id", id="project_id-int"),
    case("join_project", {"project_id": True}, reason="project_id", id="project_id-bool"),
    case("join_project", {"project_id": [OWN]}, reason="project_id", id="project_id-list"),
    case("join_project", {"project_id": {"$ne": None}}, reason="project_id", id="project_id-dict"),
    case("join_project", {"project_id": ""}, reason="project_id", id="project_id-empty"),
    case("join_project", {"project_id": "not-a-uuid"}, reason="project_id", id="project_id-not-a-uuid"),
    case("join_project", {"project_id": "' OR 1=1 --"}, reason="project_id", id="project_id-sql"),
    case("join_project", {"project_id": "x" * 10_000}, reason="project_id", id="project_id-10KB"),
    case("join_project", {"project_id": str(uuid.uuid4())}, reason="project not found", id="project_id-nonexistent"),
    case("join_project", {"project_id": OTHER}, reason="project not found", id="project_id-another-users"),
    case("join_project", {"project_id": OWN, "as_user": 1}, reason="as_user", id="join-extra-key"),
    case("join_project", {"project_id": OWN}, {"project_id": OWN}, reason="one payload", id="join-two-arguments"),
    case("join_project", {"project_id": OWN, "pad": "x" * 20_000}, reason="payload too large", id="join-20KB"),
    case("leave_project", {"project_id": "not-a-uuid"}, reason="project_id", id="leave-not-a-uuid"),
    # progress subscriptions
    case("subscribe_progress", {"progress_id": "not-a-uuid"}, reason="progress_id", id="progress-malformed"),
    case("subscribe_progress", {}, reason="progress_id", id="progress-missing"),
    case("subscribe_progress", {"progress_id": 7}, reason="progress_id", id="progress-int"),
    case("crawl_subscribe", {"progress_id": "not-a-uuid"}, reason="progress_id", id="crawl-malformed"),
    case("crawl_subscribe", {"progress_id": ["../../etc/passwd"]}, reason="progress_id", id="crawl-list"),
    case("crawl_subscribe", {"progress_id": str(uuid.uuid4())}, reason="unknown progress id", id="crawl-unknown"),
    case("unsubscribe_progress", {"progress_id": "../../etc/passwd"}, reason="progress_id", id="unsubscribe-progress-malformed"),
    # events without a payload still refuse one
    case("subscribe_projects", {"all_users": True}, reason="all_users", id="subscribe-projects-extra-key"),
    case("subscribe_projects", "please", reason="must be an object", id="subscribe-projects-string"),
    case("subscribe_projects", ["x" * 1000] * 20, reason="payload too large", id="subscribe-projects-20KB"),
    case("unsubscribe_projects", {"all_users": True}, reason="all_users", id="unsubscribe-projects-extra-key"),
    # crawls and chat
    case("crawl_unsubscribe", {"progress_id": 7}, reason="progress_id", id="crawl-unsubscribe-int"),
    case("crawl_stop", {"progress_id": "not-a-uuid"}, reason="progress_id", id="crawl-stop-malformed"),
    case("crawl_stop", {}, reason="progress_id", id="crawl-stop-missing"),
    case("join_chat", {"session_id": "not-a-uuid"}, reason="session_id", id="join-chat-malformed"),
    case("join_chat", {"session_id": str(uuid.uuid4())}, reason="chat session not found", id="join-chat-unknown"),
    case("leave_chat", {"session_id": ["x"]}, reason="session_id", id="leave-chat-list"),
    case("chat_message", {"session_id": str(uuid.uuid4())}, reason="body", id="chat-message-no-body"),
    case("chat_message", {"session_id": str(uuid.uuid4()), "body": ""}, reason="body", id="chat-message-empty-body"),
    case("chat_message", {"session_id": str(uuid.uuid4()), "body": 42}, reason="body", id="chat-message-int-body"),
    # unknown events
    case("drop_database", {}, reason="unknown event", id="drop_database"),
    case("", {"project_id": OWN}, reason="unknown event", id="empty-event-name"),
    case("x" * 200, reason="unknown event", id="200-char-event-name"),
    case("JOIN_PROJECT", {"project_id": OWN}, reason="unknown event", id="wrong-case"),
    case("join_project ", {"project_id": OWN}, reason="unknown event", id="trailing-space"),
    case("__proto__", {}, reason="unknown event", id="proto"),
    case("join_project\x00", {"project_id": OWN}, reason="unknown event", id="nul-in-name"),
    case("\ud800", {}, reason="unknown event", id="lone-surrogate-name"),
]


def test_every_client_event_the_server_knows_is_tried_with_bad_input() -> None:
    """The cases follow the server: each event it registers has one, and each "unknown event" case names one it does not know."""
    known = set(dispatcher.registered())
    tried = {param.values[0] for param in CASES}
    unknown = {param.values[0] for param in CASES if param.values[2] == "unknown event"}
    assert known - tried == set(), "client events without a bad-input case"
    assert known & unknown == set(), "'unknown event' cases that the server knows"
    assert tried - unknown <= known, "cases for events the server does not register (renamed?)"


def resolve(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, (list, tuple)):
        return type(value)(resolve(v, ids) for v in value)
    if isinstance(value, dict):
        return {k: resolve(v, ids) for k, v in value.items()}
    return value


async def _world() -> tuple[Any, Any, Any, dict[str, str]]:
    alice, bob = await db(f.make_user)("alice"), await db(f.make_user)("bob")
    own = await db(f.make_project)(alice, title="own")
    other = await db(f.make_project)(bob, title="bob's")
    return alice, own, other, {OWN: str(own.pk), OTHER: str(other.pk)}


def assert_refused(ack: Any, reason: str | None) -> str:
    assert isinstance(ack, dict) and set(ack) == {"ok", "error"}, ack
    assert ack["ok"] is False, ack
    error = ack["error"]
    assert isinstance(error, str) and error.strip(), ack
    assert len(error) <= 300, f"the reason echoes the input back: {len(error)} chars"
    if reason is not None:
        assert reason in error, ack
    return error


@pytest.mark.parametrize(("event", "args", "reason"), CASES)
async def test_bad_input_is_refused_with_a_reason(connect, caplog, event, args, reason):
    alice, own, other, ids = await _world()
    client = await connect(alice)
    caplog.set_level(logging.INFO, logger="realtime")

    assert_refused(await client.call(event, *resolve(args, ids)), reason)

    # Logged once, at warning level, and not as a failure of the server.
    ours = [r for r in caplog.records if r.name.startswith("realtime") and r.levelno >= logging.WARNING]
    assert [r.levelno for r in ours] == [logging.WARNING], [r.getMessage()[:200] for r in ours]
    assert "refused" in ours[0].getMessage()

    # The same connection is still served, and the refusal left nothing behind.
    assert client.connected
    assert await client.call("join_project", {"project_id": ids[OWN]}) == {"ok": True, "project_id": ids[OWN]}
    snapshot = await client.wait_for("initial_tasks")
    assert (snapshot["project_id"], snapshot["tasks"]) == (ids[OWN], [])  # a snapshot's frame also carries its part/parts
    assert client.received("initial_tasks") == [snapshot]


async def test_refused_joins_leave_the_client_outside_and_the_server_serving(connect, settings):
    # Every case on one connection, as fast as the acks come back: more than the event rate limit's
    # burst (which has its own tests in test_limits.py). The in-process server reads the setting per event.
    settings.REALTIME_EVENT_BURST = len(CASES) + 20
    alice, own, other, ids = await _world()
    client = await connect(alice)

    reasons = {}
    for param in CASES:
        event, args, reason = param.values
        reasons[param.id] = assert_refused(await client.call(event, *resolve(args, ids)), reason)
    # Unknown and invisible projects get the same answer: no probing for ids.
    assert reasons["project_id-nonexistent"] == reasons["project_id-another-users"] == "project not found"
    assert client.connected
    assert client.received("initial_tasks") == []
    assert client.received("projects_update") == []

    assert await client.call("join_project", {"project_id": ids[OWN]}) == {"ok": True, "project_id": ids[OWN]}
    await client.wait_for("initial_tasks")

    # Nothing of the refused project reaches the client: a marker in the joined one arrives after it would have.
    secret = await db(f.make_task)(other, title="secret")
    await db(f.make_task)(other, title="secret 2")
    await db(secret.delete)()
    await db(f.make_task)(own, title="marker")
    await client.wait_for("task_created", lambda t: t["title"] == "marker")
    assert [t["title"] for t in client.received("task_created")] == ["marker"]
    assert client.received("task_deleted") == []
    assert [s["project_id"] for s in client.received("initial_tasks")] == [ids[OWN]]

    # And a new connection is accepted and served.
    fresh = await connect(alice)
    assert await fresh.call("join_project", {"project_id": ids[OWN]}) == {"ok": True, "project_id": ids[OWN]}
    snapshot = await fresh.wait_for("initial_tasks")
    assert [t["title"] for t in snapshot["tasks"]] == ["marker"]


async def test_refused_progress_subscriptions_deliver_nothing(connect):
    alice, own, other, ids = await _world()
    client = await connect(alice)
    for event in ("subscribe_progress", "crawl_subscribe"):
        assert_refused(await client.call(event, {"progress_id": "nope"}), "progress_id")
    assert client.received("project_progress") == client.received("crawl_progress") == []
    assert await client.call("subscribe_projects") == {"ok": True}
    assert (await client.wait_for("projects_update"))["projects"][0]["id"] == ids[OWN]


@pytest.mark.parametrize("event", ["connect", "disconnect"])
async def test_reserved_event_names_sent_by_a_client_are_refused(server, event):
    # Only python-socketio lets a client emit these names; socket.io-client refuses them locally.
    alice, own, other, ids = await _world()
    client = PyClient()
    try:
        await client.connect(server.url, auth={"token": await db(f.token_for)(alice)})
        try:
            ack = await client.call(event, {"project_id": ids[OWN]}, timeout=2)
        except TimeoutError:
            ack = None
        assert_refused(ack, "unknown event")
    finally:
        await client.close()
