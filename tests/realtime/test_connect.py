"""The connection phase against the live server: revocation while authenticating, a handshake closed mid-connect,
connections that never authenticate, and events in flight per connection.

Hostile clients are driven by hand (httpx for long-polling, ``websockets`` for a websocket); the others are the real
clients of the ``connect`` fixture. The server runs in this process: its tables are read directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from realtime import dispatcher, limits, room_kinds
from realtime import server as realtime_server
from realtime.models import ApiToken
from tests.conftest import db
from tests.realtime.test_limits import fresh_address, wait_until
from tests.support import factories as f
from tests.support.clients import ConnectionRefused

sio = realtime_server.sio


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records that must never appear: tracebacks and errors."""
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("realtime") and r.levelno == logging.WARNING]


def _ghost(eio_sid: str) -> bool:
    """Whether the server still holds anything of a Socket.IO connection over engine.io session ``eio_sid``."""
    sid = sio.manager.sid_from_eio_sid(eio_sid, "/")
    pending = [s for sids in sio.manager.pending_connect.values() for s in sids]
    return sid is not None or eio_sid in sio.eio.sockets or eio_sid in limits.handshakes or (sid is not None and sid in pending)


class Polling:
    """One engine.io long-polling session driven by hand."""

    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
        self.http = http
        self.headers = headers or {}
        self.sid = ""

    async def open(self) -> httpx.Response:
        response = await self.http.get("/socket.io/", params={"EIO": "4", "transport": "polling"}, headers=self.headers)
        if response.status_code == 200:
            self.sid = json.loads(response.text[1:])["sid"]
        return response

    async def post(self, body: str) -> httpx.Response:
        params = {"EIO": "4", "transport": "polling", "sid": self.sid}
        return await self.http.post("/socket.io/", params=params, content=body, headers=self.headers)

    async def poll(self) -> httpx.Response:
        return await self.http.get("/socket.io/", params={"EIO": "4", "transport": "polling", "sid": self.sid}, headers=self.headers)


# --- 1. credentials revoked while the connection authenticates --------------------------------------------------------


async def test_a_token_revoked_before_the_rooms_are_entered_refuses_the_connection(connect, monkeypatch):
    """The review's repro, made deterministic: the token is deleted (and its sockets closed) right after the first check."""
    alice = await db(f.make_user)("alice")
    token = await db(f.token_for)(alice)
    original, checks = realtime_server.authenticate, []

    def check_then_revoke(environ: Any, auth: Any) -> Any:
        identity = original(environ, auth)  # raises Refused on the second check
        checks.append(identity)
        if len(checks) == 1:  # committed now: its "disconnect token_<id>" runs before this sid is in that room
            ApiToken.objects.filter(pk=identity.token_id).delete()
        return identity

    monkeypatch.setattr(realtime_server, "authenticate", check_then_revoke)
    with pytest.raises(ConnectionRefused) as refusal:
        await connect(auth={"token": token})
    assert refusal.value.message == "invalid token"
    assert len(checks) == 1
    monkeypatch.undo()
    await wait_until(lambda: limits.connections.of(alice.pk) == 0)
    assert not [s for sids in sio.manager.pending_connect.values() for s in sids]
    # Not a failed guess of this address, and the user is not locked out.
    again = await connect(alice)
    assert (await again.call("subscribe_projects"))["ok"]


async def test_a_session_logged_out_before_the_rooms_are_entered_refuses_the_connection(connect, monkeypatch):
    from importlib import import_module

    from django.conf import settings

    alice = await db(f.make_user)("alice")
    cookie = await db(f.session_cookie)(alice)
    original, checks = realtime_server.authenticate, []

    def check_then_log_out(environ: Any, auth: Any) -> Any:
        identity = original(environ, auth)
        checks.append(identity)
        if len(checks) == 1:
            import_module(settings.SESSION_ENGINE).SessionStore(identity.session_key).delete()
        return identity

    monkeypatch.setattr(realtime_server, "authenticate", check_then_log_out)
    with pytest.raises(ConnectionRefused) as refusal:
        await connect(headers={"Cookie": cookie})
    assert refusal.value.message.startswith("authentication required"), refusal.value.message
    monkeypatch.undo()
    await wait_until(lambda: limits.connections.of(alice.pk) == 0)


async def test_a_revocation_reaching_a_connection_still_connecting_is_not_lost(connect, monkeypatch):
    """The other window: the second check has read the token, then it is revoked before the connection is connected.

    python-socketio ignores a disconnect of a connection still connecting; the server remembers it and refuses.
    """
    alice = await db(f.make_user)("alice")
    token = await db(f.token_for)(alice)
    original, checks = realtime_server.authenticate, []

    def revoke_after_the_second_check(environ: Any, auth: Any) -> Any:
        identity = original(environ, auth)
        checks.append(identity)
        if len(checks) == 2:  # this sid is in token_<id> now, and still connecting
            ApiToken.objects.filter(pk=identity.token_id).delete()
            deadline = time.monotonic() + 5  # (a worker thread: waits for the server's loop to apply the disconnect)
            while not sio._revoked_connecting and time.monotonic() < deadline:
                time.sleep(0.01)
        return identity

    monkeypatch.setattr(realtime_server, "authenticate", revoke_after_the_second_check)
    with pytest.raises(ConnectionRefused) as refusal:
        await connect(auth={"token": token})
    assert refusal.value.message == "access revoked while connecting"
    monkeypatch.undo()
    await wait_until(lambda: limits.connections.of(alice.pk) == 0)
    assert not sio._revoked_connecting


# --- 2. a long-polling handshake closed mid-connect -------------------------------------------------------------------


async def test_closing_a_polling_session_while_it_connects_leaves_nothing_behind(server, caplog):
    caplog.set_level(logging.INFO)
    alice = await db(f.make_user)("alice")
    token = await db(f.token_for)(alice)
    tries, answers = 100, {}
    opened: list[str] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        for _ in range(tries):
            session = Polling(http, fresh_address())  # the pending-handshake cap is per address
            assert (await session.open()).status_code == 200
            opened.append(session.sid)
            connect_answer, close_answer = await asyncio.gather(session.post("40" + json.dumps({"token": token})), session.post("1"))
            key = (connect_answer.status_code, close_answer.status_code)
            answers[key] = answers.get(key, 0) + 1

    await wait_until(lambda: not any(_ghost(eio_sid) for eio_sid in opened))
    assert limits.connections.of(alice.pk) == 0
    assert not [s for sids in sio.manager.pending_connect.values() for s in sids]
    assert _problems(caplog) == []
    closed_while_connecting = sum("connection closed" in m for m in _warnings(caplog))
    print(f"\n{tries} tries: answers (connect POST, close POST) {answers}; refused as closed while connecting: {closed_while_connecting}")


# --- 3. connections that never authenticate ---------------------------------------------------------------------------


async def test_a_polling_session_that_never_connects_is_closed_after_the_timeout(server, settings, caplog):
    settings.REALTIME_CONNECT_TIMEOUT = 0.5
    caplog.set_level(logging.INFO, logger="realtime")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session = Polling(http, fresh_address())
        assert (await session.open()).status_code == 200
        await wait_until(lambda: session.sid not in sio.eio.sockets)
        assert (await session.poll()).status_code == 400  # the session is gone
    assert session.sid not in limits.handshakes
    assert any(m.endswith("no Socket.IO connect within 0.5 s") for m in _warnings(caplog)), _warnings(caplog)


async def test_a_websocket_that_answers_pings_but_never_connects_is_closed(server, settings, caplog):
    settings.REALTIME_CONNECT_TIMEOUT = 0.5
    caplog.set_level(logging.INFO, logger="realtime")
    url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with ws_connect(url, additional_headers=fresh_address()) as ws:
        opened = await ws.recv()
        assert opened.startswith("0"), opened
        eio_sid = json.loads(opened[1:])["sid"]
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    if await ws.recv() == "2":  # engine.io's ping: answered, the transport stays alive
                        await ws.send("3")
    await wait_until(lambda: not _ghost(eio_sid))
    assert any(m.endswith("no Socket.IO connect within 0.5 s") for m in _warnings(caplog)), _warnings(caplog)


async def test_a_connected_client_outlives_the_connect_timeout(connect, settings):
    settings.REALTIME_CONNECT_TIMEOUT = 0.3
    alice = await db(f.make_user)("alice")
    client = await connect(alice)
    await asyncio.sleep(1.0)  # well past the timeout: it was cancelled when the namespace connected
    assert client.connected
    assert (await client.call("subscribe_projects"))["ok"]


async def test_pending_handshakes_per_address_are_capped(server, connect, settings, caplog):
    settings.REALTIME_MAX_PENDING_PER_ADDRESS = 3
    caplog.set_level(logging.INFO, logger="realtime")
    alice = await db(f.make_user)("alice")
    token = await db(f.token_for)(alice)
    attacker = fresh_address()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        opened: list[Polling] = []

        async def handshake(headers: dict[str, str]) -> httpx.Response:
            session = Polling(http, headers)
            opened.append(session)
            return await session.open()

        try:
            sessions = [Polling(http, attacker) for _ in range(3)]
            opened += sessions
            for session in sessions:
                assert (await session.open()).status_code == 200
            refused = await handshake(attacker)
            assert refused.status_code == 401
            assert refused.json() == {"detail": "too many connections not yet authenticated from this address (limit 3)"}
            assert (await handshake(fresh_address())).status_code == 200  # other addresses are not affected

            # A session that authenticates is no longer pending: its place is free.
            assert (await sessions[0].post("40" + json.dumps({"token": token}))).text == "OK"
            assert (await sessions[0].poll()).text.startswith("40")
            assert limits.handshakes.of(attacker["X-Forwarded-For"]) == 2
            # A real client from that address takes the place while it connects, and gives it back.
            client = await connect(alice, headers=attacker)
            assert (await client.call("subscribe_projects"))["ok"]
            assert limits.handshakes.of(attacker["X-Forwarded-For"]) == 2
            assert (await handshake(attacker)).status_code == 200  # the third place
            assert (await handshake(attacker)).status_code == 401
            # A closed session frees its place.
            assert (await sessions[1].post("1")).status_code == 200
            await wait_until(lambda: limits.handshakes.of(attacker["X-Forwarded-For"]) == 2)
            assert (await handshake(attacker)).status_code == 200
        finally:  # closed now, not by their timeout during a later test
            for session in opened:
                if session.sid:
                    await session.post("1")
    assert any(m.startswith("refused handshake from ") for m in _warnings(caplog))


def test_the_pending_table_counts_per_address_and_forgets_removed_entries(settings):
    settings.REALTIME_MAX_PENDING_PER_ADDRESS = 2
    table = limits.PendingHandshakes()
    expired: list[str] = []
    assert table.add("a1", "10.0.0.1", expired.append) and table.add("a2", "10.0.0.1", expired.append)
    assert not table.add("a3", "10.0.0.1", expired.append)
    assert table.add("b1", "10.0.0.2", expired.append)
    table.remove("a1")
    table.remove("a1")  # twice: once
    assert table.of("10.0.0.1") == 1 and len(table) == 2
    assert table.add("a3", "10.0.0.1", expired.append)
    for sid in ("a2", "a3", "b1"):
        table.remove(sid)
    assert len(table) == 0 and table.of("10.0.0.1") == 0 and table.of("10.0.0.2") == 0
    assert expired == []


def test_a_storm_of_handshakes_is_admitted_at_the_pace_of_the_pending_bound(settings):
    settings.REALTIME_MAX_PENDING = 3
    table = limits.PendingHandshakes()
    for n in range(3):
        assert not table.busy()
        assert table.add(f"s{n}", f"10.0.0.{n}", lambda sid: None)
    assert table.busy()  # a fourth handshake, from any address, is refused: its client retries
    table.remove("s0")
    assert not table.busy()


# --- 4. events in flight per connection -------------------------------------------------------------------------------


async def test_events_beyond_the_in_flight_bound_are_refused_without_running(connect, settings, monkeypatch):
    settings.REALTIME_MAX_EVENTS_IN_FLIGHT = 2
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    join = {"project_id": str(project.pk)}
    release, entered = threading.Event(), []
    real_join = room_kinds.join_room

    async def slow_join(kind: Any, client: Any, key: Any, **options: Any) -> Any:
        entered.append(key)
        await asyncio.to_thread(release.wait, 20)  # (the server's loop is not this test's: a thread waits)
        return await real_join(kind, client, key, **options)

    monkeypatch.setattr(room_kinds, "join_room", slow_join)
    calls = [asyncio.create_task(client.call("join_project", join, timeout=20)) for _ in range(6)]
    try:
        await wait_until(lambda: sum(c.done() for c in calls) == 4)
        assert [c.result() for c in calls if c.done()] == [{"ok": False, "error": dispatcher.BUSY}] * 4
        assert len(entered) == 2  # the refused four never reached the handler
    finally:
        release.set()
    answers = await asyncio.gather(*calls)
    assert sorted(a["ok"] for a in answers) == [False] * 4 + [True] * 2
    monkeypatch.undo()

    # Every place is given back, also by refused and failed handlers.
    for _ in range(3):
        assert (await client.call("join_project", {"project_id": "00000000-0000-0000-0000-000000000000"}))["ok"] is False
    assert await asyncio.gather(*[client.call("join_project", join) for _ in range(2)]) == [{"ok": True, **join}] * 2
    assert client.connected


# --- a frame before the connect: JSON that engine.io would decode again, deeper --------------------------------------


@pytest.mark.parametrize("depth", [975, 980, 5_000])
async def test_an_unclosed_json_array_frame_closes_the_websocket_without_a_traceback(server, caplog, depth):
    """Found by test_fuzz: '4' + '[' x ~975 fails as invalid JSON in the check, but hit the recursion limit in engine.io's decode."""
    caplog.set_level(logging.INFO)
    url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with ws_connect(url, additional_headers=fresh_address()) as ws:
        assert (await ws.recv()).startswith("0")
        await ws.send("4" + "[" * depth)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    assert _problems(caplog) == []
    assert any("malformed engine.io packet" in m for m in _warnings(caplog)), _warnings(caplog)
