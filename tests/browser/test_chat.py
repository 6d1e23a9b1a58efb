"""Chat in real browsers: two participants talk live; a third user can neither read nor join."""

from __future__ import annotations

import re

from playwright.async_api import expect

from chat.models import ChatSession
from tests.conftest import db
from tests.support import factories as f

from .conftest import live


async def test_two_participants_chat_and_an_outsider_cannot_read_it(server, open_page):
    for name in ("alice", "bob", "carol"):
        await db(f.make_user)(name)

    # Alice starts a session with Bob from the list page.
    alice = await open_page(server.url, "alice", path="/chat/")
    await live(alice)
    await alice.get_by_test_id("chat-new-title").fill("Release planning")
    await alice.get_by_test_id("chat-new-participants").fill(" bob , ")
    await alice.get_by_test_id("chat-new-submit").click()
    item = alice.get_by_test_id("chat-item")
    await expect(item).to_have_count(1)
    await expect(item).to_contain_text("Release planning")
    await expect(item).to_contain_text("alice, bob")
    session = await db(ChatSession.objects.get)(title="Release planning")
    session_id = str(session.id)
    await expect(item).to_have_attribute("data-session-id", session_id)
    await item.get_by_role("link").click()
    await alice.wait_for_url(re.compile(f"/chat/{session_id}/$"))
    await live(alice)

    # Bob finds it in his list and opens it.
    bob = await open_page(server.url, "bob", path="/chat/")
    await bob.locator(f"[data-testid=chat-item][data-session-id='{session_id}'] a").click()
    await bob.wait_for_url(re.compile(f"/chat/{session_id}/$"))
    await live(bob)

    # Carol, not a participant: not in her list, the room is a 404, a hand-written join is refused.
    carol = await open_page(server.url, "carol", path="/chat/")
    await live(carol)
    await expect(carol.get_by_test_id("chat-list")).to_contain_text("No sessions yet.")
    await expect(carol.get_by_test_id("chat-item")).to_have_count(0)
    carol_room = await open_page(server.url, "carol", path=None)
    response = await carol_room.goto(f"/chat/{session_id}/")
    assert response is not None and response.status == 404
    outcome = await carol.evaluate(
        """async (sessionId) => {
            const socket = window.__live.socket;
            window.__carolGot = [];
            for (const event of ["chat_history", "chat_message"]) socket.on(event, (data) => window.__carolGot.push([event, data]));
            const join = await new Promise((resolve) => socket.emit("join_chat", { session_id: sessionId }, resolve));
            const post = await new Promise((resolve) => socket.emit("chat_message", { session_id: sessionId, body: "let me in" }, resolve));
            return { join, post, got: window.__carolGot };
        }""",
        session_id,
    )
    assert outcome == {
        "join": {"ok": False, "error": "chat session not found"},
        "post": {"ok": False, "error": "chat session not found"},
        "got": [],
    }

    # Alice and Bob talk; each message shows once for both, with its author.
    await alice.get_by_test_id("chat-input").fill("Hello Bob, shall we ship on Friday?")
    await alice.get_by_test_id("chat-send").click()
    for page in (alice, bob):
        messages = page.get_by_test_id("chat-message")
        await expect(messages).to_have_count(1)
        await expect(messages.first).to_contain_text("alice")
        await expect(messages.first).to_contain_text("Hello Bob, shall we ship on Friday?")
    await expect(alice.get_by_test_id("chat-input")).to_have_value("")

    await bob.get_by_test_id("chat-input").fill("Friday works.")
    await bob.get_by_test_id("chat-input").press("Enter")
    for page in (alice, bob):
        messages = page.get_by_test_id("chat-message")
        await expect(messages).to_have_count(2)
        await expect(messages.nth(1)).to_contain_text("bob")
        await expect(messages.nth(1)).to_contain_text("Friday works.")
        ids = await messages.evaluate_all("nodes => nodes.map(n => n.dataset.messageId)")
        assert len(set(ids)) == 2

    # A reload brings the history back (join_chat's chat_history), each message once.
    await bob.reload()
    await live(bob)
    await expect(bob.get_by_test_id("chat-message")).to_have_count(2)
    await expect(bob.get_by_test_id("chat-messages")).to_contain_text("Hello Bob, shall we ship on Friday?")

    # A message the server refuses (over 4000 characters: the input's limit lifted by hand) says why.
    await alice.evaluate("document.querySelector('[data-testid=chat-input]').removeAttribute('maxlength')")
    await alice.get_by_test_id("chat-input").fill("x" * 4001)
    await alice.get_by_test_id("chat-send").click()
    await expect(alice.get_by_test_id("chat-error")).to_contain_text("Not sent")
    await expect(alice.get_by_test_id("chat-input")).to_have_value("x" * 4001)  # kept, to fix and resend
    await alice.get_by_test_id("chat-input").fill("Great, see you then.")
    await alice.get_by_test_id("chat-send").click()
    await expect(alice.get_by_test_id("chat-error")).to_be_hidden()
    await expect(bob.get_by_test_id("chat-message")).to_have_count(3)
    # Carol received nothing of all this, though her page stayed connected.
    assert await carol.evaluate("window.__carolGot") == []
    await expect(carol.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
