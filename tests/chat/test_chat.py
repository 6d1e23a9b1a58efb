"""Chat rooms chat_{session_id}: history on join, live messages, participants only, posts by script."""

import pytest

from chat import services
from chat.schemas import MAX_BODY
from realtime.testing import unstamped
from tests.conftest import db
from tests.support import factories as f


async def world():
    alice, bob, eve = [await db(f.make_user)(n) for n in ("alice", "bob", "eve")]
    session = await db(services.chat_session_create)(created_by=alice, title="design", participants=["bob"])
    await db(services.chat_message_post)(session=session, author=alice, body="earlier")
    return alice, bob, eve, session


async def test_participants_get_history_then_live_messages(connect):
    alice, bob, _, session = await world()
    a, b = await connect(alice), await connect(bob)
    for client in (a, b):
        assert (await client.call("join_chat", {"session_id": str(session.pk)}))["ok"]
        history = await client.wait_for("chat_history")
        assert history["session_id"] == str(session.pk) and [m["body"] for m in history["messages"]] == ["earlier"]
    ack = await a.call("chat_message", {"session_id": str(session.pk), "body": "hello bob"})
    assert ack["ok"] and ack["message_id"]
    for client in (a, b):
        message = await client.wait_for("chat_message")
        assert (message["author"], message["body"], message["id"]) == ("alice", "hello bob", ack["message_id"])


async def test_a_non_participant_can_neither_join_nor_post_nor_read(connect):
    alice, _, eve, session = await world()
    intruder = await connect(eve)
    assert await intruder.call("join_chat", {"session_id": str(session.pk)}) == {"ok": False, "error": "chat session not found"}
    assert await intruder.call("chat_message", {"session_id": str(session.pk), "body": "let me in"}) == {
        "ok": False,
        "error": "chat session not found",
    }
    insider = await connect(alice)
    await insider.call("join_chat", {"session_id": str(session.pk)})
    await insider.call("chat_message", {"session_id": str(session.pk), "body": "secret"})
    await insider.wait_for("chat_message")
    assert intruder.received("chat_history") == [] and intruder.received("chat_message") == []
    assert [m.body for m in await db(lambda: list(session.messages.all()))()] == ["earlier", "secret"]


async def test_a_script_posts_with_a_token_and_it_arrives_live(connect, http):
    alice, bob, eve, session = await world()
    client = await connect(alice)
    await client.call("join_chat", {"session_id": str(session.pk)})
    await client.wait_for("chat_history")
    token = await db(f.token_for)(bob)  # e.g. an agent acting for bob
    response = await http.post(
        f"/api/chat/{session.pk}/messages/", json={"body": "from the agent"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 201
    assert unstamped(await client.wait_for("chat_message")) == response.json()
    outsider = await http.post(
        f"/api/chat/{session.pk}/messages/", json={"body": "x"}, headers={"Authorization": f"Bearer {await db(f.token_for)(eve)}"}
    )
    assert outsider.status_code == 404
    listing = await http.get(f"/api/chat/{session.pk}/messages/", headers={"Authorization": f"Bearer {token}"})
    assert [m["body"] for m in listing.json()] == ["earlier", "from the agent"]


async def test_a_removed_participant_leaves_the_room(connect):
    alice, bob, _, session = await world()
    watcher = await connect(bob)
    await watcher.call("join_chat", {"session_id": str(session.pk)})
    await watcher.wait_for("chat_history")
    await db(session.participants.remove)(bob)
    poster = await connect(alice)
    await poster.call("join_chat", {"session_id": str(session.pk)})
    await poster.call("chat_message", {"session_id": str(session.pk), "body": "after bob left"})
    await poster.wait_for("chat_message")
    # bob's next round trip proves the message had its chance to arrive.
    assert (await watcher.call("join_chat", {"session_id": str(session.pk)}))["ok"] is False
    assert watcher.received("chat_message") == []


async def test_bad_chat_input_is_refused_with_a_reason(connect):
    alice, _, _, session = await world()
    client = await connect(alice)
    for payload, needle in [
        ({"session_id": "x"}, "session_id"),
        ({"session_id": str(session.pk), "body": ""}, "body"),
        ({"session_id": str(session.pk), "body": "x" * 5000}, "body"),
        ({"session_id": str(session.pk)}, "body"),
    ]:
        ack = await client.call("chat_message", payload)
        assert ack["ok"] is False and needle in ack["error"], ack


@pytest.mark.parametrize("how", ["from the user's side", "by clearing the session"])
async def test_a_participant_removed_from_either_side_leaves_the_room(connect, how):
    alice, bob, _, session = await world()
    watcher = await connect(bob)
    await watcher.call("join_chat", {"session_id": str(session.pk)})
    await watcher.wait_for("chat_history")
    if how == "by clearing the session":
        await db(session.participants.clear)()
    else:
        await db(bob.chat_sessions.remove)(session)
    await db(services.chat_message_post)(session=session, author=alice, body="after bob left")
    # bob's next round trip proves the message had its chance to arrive.
    assert await watcher.call("join_chat", {"session_id": str(session.pk)}) == {"ok": False, "error": "chat session not found"}
    assert watcher.received("chat_message") == []


async def test_a_blank_message_is_refused_with_the_reason(connect):
    alice, _, _, session = await world()
    client = await connect(alice)
    ack = await client.call("chat_message", {"session_id": str(session.pk), "body": "   "})
    assert ack == {"ok": False, "error": "invalid payload: body: empty message"}


async def test_one_body_limit_over_socketio_and_rest(connect, http):
    alice, _, eve, session = await world()
    client = await connect(alice)
    headers = {"Authorization": f"Bearer {await db(f.token_for)(alice)}"}
    path = f"/api/chat/{session.pk}/messages/"
    assert (await client.call("chat_message", {"session_id": str(session.pk), "body": "x" * MAX_BODY}))["ok"]
    assert (await http.post(path, json={"body": "y" * MAX_BODY}, headers=headers)).status_code == 201
    over = await client.call("chat_message", {"session_id": str(session.pk), "body": "x" * (MAX_BODY + 1)})
    assert over["ok"] is False and f"at most {MAX_BODY} characters" in over["error"]
    assert (await http.post(path, json={"body": "y" * (MAX_BODY + 1)}, headers=headers)).status_code == 400
    outsider = await http.get(path, headers={"Authorization": f"Bearer {await db(f.token_for)(eve)}"})
    assert (outsider.status_code, outsider.json()) == (404, {"detail": "chat session not found"})
