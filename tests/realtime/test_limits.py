"""Abuse limits on the live server, with both client kinds: events per second, rooms, connections, failed logins; cookies.

The server runs in this process and reads its limits per use, so each test sets small ones with
pytest-django's ``settings``. Client addresses come from ``X-Forwarded-For``, which uvicorn takes
from a loopback peer (its default ``forwarded_allow_ips``): each test throttles its own address.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from typing import Any

import pytest

from realtime import dispatcher, limits, rooms
from realtime import server as realtime_server
from tests.conftest import db
from tests.support import factories as f
from tests.support.clients import ConnectionRefused

_addresses = itertools.count(1)


def fresh_address() -> dict[str, str]:
    """Headers that make this connection come from an address no other test uses (loopback, never dialled)."""
    n = next(_addresses) + os.getpid() % 1000 * 1000
    return {"X-Forwarded-For": f"127.{n // 65536 % 256}.{n // 256 % 256}.{n % 256 or 1}"}


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("condition not met")


def in_room(client: Any, room: str) -> bool:
    """Whether the client's connection is in ``room`` of the in-process server (python-socketio's client knows its engine.io sid)."""
    members = realtime_server.sio.manager.rooms["/"].get(room, {})
    return client.sid in members or client.sid in members.values()


def _realtime_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("realtime") and r.levelno == logging.WARNING]


# --- events per connection ------------------------------------------------------------------


async def test_events_over_the_rate_are_refused_before_validation_and_the_database(connect, settings, monkeypatch):
    settings.REALTIME_EVENT_RATE = 0.001  # practically no refill during the test: the burst is all there is
    settings.REALTIME_EVENT_BURST = 3
    lookups = []
    original = dispatcher.Dispatcher.current_user

    async def counting(self: Any, sid: str, session: Any = None) -> Any:
        lookups.append(sid)
        return await original(self, sid, session)

    monkeypatch.setattr(dispatcher.Dispatcher, "current_user", counting)
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    client = await connect(alice)
    join = {"project_id": str(project.pk)}

    for _ in range(3):
        assert await client.call("join_project", join) == {"ok": True, "project_id": str(project.pk)}
    # How many times an accepted join reads the user is the handler's business (it reads again inside
    # the room); what counts here is that refused events add none.
    accepted = len(lookups)
    assert accepted >= 3 and accepted % 3 == 0, lookups
    # Over the burst: refused with the reason, whatever the event: the handler does not run,
    # the payload is not validated and the user is not looked up.
    assert await client.call("join_project", join) == {"ok": False, "error": "rate limited"}
    assert await client.call("drop_database", {"x": 1}) == {"ok": False, "error": "rate limited"}
    assert await client.call("join_project", "not an object") == {"ok": False, "error": "rate limited"}
    assert len(lookups) == accepted
    await asyncio.sleep(0.2)  # a fourth snapshot would have arrived by now
    assert len(client.received("initial_tasks")) == 3
    assert client.connected  # refused, not disconnected: the abuse threshold is far away

    # Another connection has its own bucket.
    other = await connect(alice)
    assert await other.call("join_project", join) == {"ok": True, "project_id": str(project.pk)}


async def test_a_connection_that_keeps_flooding_is_disconnected(connect, settings, caplog):
    settings.REALTIME_EVENT_RATE = 0.001
    settings.REALTIME_EVENT_BURST = 2
    settings.REALTIME_EVENT_ABUSE_DISCONNECT = 5
    caplog.set_level(logging.INFO, logger="realtime")
    alice = await db(f.make_user)("alice")
    client = await connect(alice)
    assert await client.call("subscribe_projects") == {"ok": True}
    assert await client.call("unsubscribe_projects") == {"ok": True}
    for _ in range(4):
        assert await client.call("subscribe_projects") == {"ok": False, "error": "rate limited"}
    assert client.connected
    for _ in range(3):  # the fifth refusal in a row closes the connection
        try:
            await client.send("subscribe_projects")
        except (ConnectionError, OSError):
            break
    await wait_until(lambda: not client.connected)

    logged = _realtime_warnings(caplog)
    assert any("5 events in a row over the rate limit" in m and m.startswith("disconnected ") for m in logged), logged
    assert sum("rate limited" in m for m in logged) == 1, logged  # once per run of refusals, not per event
    # The user is not locked out: a new connection is served.
    fresh = await connect(alice)
    assert await fresh.call("subscribe_projects") == {"ok": True}


# --- rooms per connection -------------------------------------------------------------------


async def test_rooms_beyond_the_cap_are_refused_and_internal_rooms_do_not_count(connect, settings):
    settings.REALTIME_MAX_ROOMS_PER_CONNECTION = 2
    alice = await db(f.make_user)("alice")
    one, two, three = [await db(f.make_project)(alice, title=t) for t in ("one", "two", "three")]
    # Cookie-authenticated: the connection is in user_, session_ and cookies_ rooms already.
    client = await connect(alice, cookie=True)

    def join(project: Any) -> Any:
        return client.call("join_project", {"project_id": str(project.pk)})

    assert (await join(one))["ok"] and (await join(two))["ok"]
    assert (await join(two))["ok"]  # a room it is already in costs nothing
    refused = await join(three)
    assert refused["ok"] is False and refused["error"].startswith("too many rooms (limit 2)"), refused
    assert await client.call("subscribe_projects") == {"ok": False, "error": refused["error"]}
    await asyncio.sleep(0.2)
    assert [s["project_id"] for s in client.received("initial_tasks")] == [str(one.pk), str(two.pk), str(two.pk)]

    assert (await client.call("leave_project", {"project_id": str(one.pk)}))["ok"]
    assert (await join(three))["ok"]
    await db(f.make_task)(three, title="live in three")
    assert (await client.wait_for("task_created"))["title"] == "live in three"


# --- connections per user ------------------------------------------------------------------


async def test_connections_per_user_are_capped(connect, settings):
    settings.REALTIME_MAX_CONNECTIONS_PER_USER = 2
    alice, bob = await db(f.make_user)("alice"), await db(f.make_user)("bob")
    first = await connect(alice)
    await connect(alice, cookie=True)  # tokens and cookies alike
    with pytest.raises(ConnectionRefused) as refusal:
        await connect(alice)
    assert refusal.value.message.startswith("too many connections for this user (limit 2)"), refusal.value.message
    assert (await (await connect(bob)).call("subscribe_projects"))["ok"]  # other users are not affected

    await first.close()  # a closed connection frees its place
    await wait_until(lambda: limits.connections.of(alice.pk) < 2)
    again = await connect(alice)
    assert (await again.call("subscribe_projects"))["ok"]


# --- failed authentication per address ------------------------------------------------------


async def test_failed_authentication_is_throttled_per_address_without_the_database(connect, settings, monkeypatch, caplog):
    settings.REALTIME_AUTH_FAILURES_PER_MINUTE = 3
    caplog.set_level(logging.INFO, logger="realtime")
    alice = await db(f.make_user)("alice")
    attacker, someone_else = fresh_address(), fresh_address()
    checks = []
    original = realtime_server.authenticate

    def counting(environ: Any, auth: Any) -> Any:
        checks.append(auth)
        return original(environ, auth)

    monkeypatch.setattr(realtime_server, "authenticate", counting)

    for guess in ("guess-1", "guess-2", "guess-3"):
        with pytest.raises(ConnectionRefused) as refusal:
            await connect(auth={"token": guess}, headers=attacker)
        assert refusal.value.message == "invalid token"
    assert len(checks) == 3
    # Now even a good token from that address is refused, and nothing is looked up.
    good = {"token": await db(f.token_for)(alice)}
    for _ in range(2):
        with pytest.raises(ConnectionRefused) as refusal:
            await connect(auth=good, headers=attacker)
        assert refusal.value.message.startswith("too many failed attempts"), refusal.value.message
    assert len(checks) == 3
    assert any("too many failed attempts" in m for m in _realtime_warnings(caplog))

    # Another address is served as usual.
    client = await connect(auth=good, headers=someone_else)
    assert (await client.call("subscribe_projects"))["ok"]


def test_failed_attempts_expire_after_the_minute_and_the_table_stays_bounded(settings, monkeypatch):
    settings.REALTIME_AUTH_FAILURES_PER_MINUTE = 2
    now = [1000.0]
    monkeypatch.setattr(limits.time, "monotonic", lambda: now[0])
    table = limits.FailedAttempts(max_entries=100)

    table.record("a")
    assert not table.blocked("a")
    table.record("a")
    assert table.blocked("a")
    now[0] += 59.9
    assert table.blocked("a")  # for the rest of the minute
    now[0] += 0.2
    assert not table.blocked("a")

    for i in range(1_000):  # a spray of addresses within one minute: the oldest are forgotten
        table.record(f"10.0.{i // 256}.{i % 256}")
    assert len(table) == 100
    now[0] += 61
    table.record("b")  # expired entries are pruned as new ones come
    assert len(table) == 1


# --- cookies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "before",
    ['bad"cookie=1', 'prefs={"theme": "dark", "size": 2}', "tracker=a b c", "broken=\\"],
    ids=["quote", "json", "spaces", "backslash"],
)
async def test_a_malformed_cookie_before_the_session_cookie_does_not_refuse_a_logged_in_browser(connect, before):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    session_cookie = await db(f.session_cookie)(alice)
    client = await connect(headers={"Cookie": f"{before}; {session_cookie}; after=1"})
    assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"] is True

    # Authenticated by the session: the connection is in its session's and its user's cookie rooms
    # (logout and password changes close those).
    session_key = session_cookie.split("=", 1)[1]
    assert in_room(client, rooms.session(session_key))
    assert in_room(client, rooms.user_cookies(alice.pk))


async def test_token_connections_are_in_no_session_room(connect):
    alice = await db(f.make_user)("alice")
    client = await connect(alice)
    assert in_room(client, rooms.user(alice.pk))
    assert not any(
        in_room(client, name) for name in list(realtime_server.sio.manager.rooms["/"]) if str(name).startswith(("session_", "cookies_"))
    )
