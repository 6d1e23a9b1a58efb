"""Access taken away reaches open connections: staff loss, a deleted user, logout, a password change, a Redis outage.

Also login throttling (django-axes) on /accounts/login/ and /admin/login/, which closes the same door from the
other side: a password cannot be guessed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

import realtime
from crawls.models import CrawlJob
from tests.conftest import CLIENT_KINDS, db
from tests.realtime.test_remote import watcher
from tests.support import factories as f
from tests.support.clients import ConnectionRefused
from tests.support.processes import manage


def mark_progress(crawl: CrawlJob, mark: Any) -> None:
    """A marked ``crawl_progress`` to the crawl's room, straight from here (the test's thread)."""
    realtime.emit_now_ignoring_transaction(
        "crawl_progress", {"progressId": str(crawl.progress_id), "mark": mark}, room=str(crawl.progress_id)
    )


async def wait_disconnected(client: Any, seconds: float = 5.0) -> None:
    # Neither client wrapper exposes a disconnect event to await: poll, bounded.
    async with asyncio.timeout(seconds):
        while client.connected:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def alive(client: Any) -> bool:
    """Connected and answering (a round trip through the server)."""
    return client.connected and (await client.call("unsubscribe_projects")) == {"ok": True}


async def join(client: Any, project: Any) -> None:
    assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"]
    await client.wait_for("initial_tasks", lambda d: d["project_id"] == str(project.pk))


def crawl_of(user: Any) -> CrawlJob:
    return CrawlJob.objects.create(start_url="http://127.0.0.1:9/", started_by=user)


def set_fields(user: Any, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(user, name, value)
    user.save()


# --- staff loss -------------------------------------------------------------------------------------------------


async def test_losing_staff_leaves_what_is_no_longer_visible_and_stays_connected(connect):
    alice, carol = await db(f.make_user)("alice"), await db(f.make_user)("carol", staff=True)
    theirs, mine = await db(f.make_project)(alice, title="alice's"), await db(f.make_project)(carol, title="carol's")
    their_crawl, my_crawl = await db(crawl_of)(alice), await db(crawl_of)(carol)
    shared = await db(f.make_project)(alice, title="shared", members=(carol,))

    client = await connect(carol)
    for project in (theirs, mine, shared):
        await join(client, project)
    for crawl in (their_crawl, my_crawl):
        assert (await client.call("crawl_subscribe", {"progress_id": str(crawl.progress_id)}))["ok"]
    assert (await client.call("subscribe_projects"))["ok"]
    await client.wait_for("projects_update")
    alice_client = await connect(alice)
    await join(alice_client, theirs)

    await db(set_fields)(carol, is_staff=False)
    update = await client.wait_for("projects_update")
    assert {p["title"] for p in update["projects"]} == {"carol's", "shared"}

    # Rooms are left before the new list is sent: nothing of alice's reaches carol any more.
    await db(f.make_task)(theirs, title="hidden")
    assert (await alice_client.wait_for("task_created"))["title"] == "hidden"
    for crawl in (their_crawl, my_crawl):
        mark_progress(crawl, "after")
    await db(f.make_task)(shared, title="shared marker")
    await db(f.make_task)(mine, title="own marker")
    await client.wait_for("task_created", lambda t: t["title"] == "own marker")
    mark = await client.wait_for("crawl_progress", lambda p: p.get("mark") == "after")
    assert mark["progressId"] == str(my_crawl.progress_id)
    assert [t["title"] for t in client.received("task_created")] == ["shared marker", "own marker"]
    assert [p["progressId"] for p in client.received("crawl_progress") if p.get("mark")] == [str(my_crawl.progress_id)]
    assert await alive(client)
    assert (await client.call("join_project", {"project_id": str(theirs.pk)})) == {"ok": False, "error": "project not found"}


async def test_a_save_that_keeps_staff_changes_no_room(connect):
    alice, carol = await db(f.make_user)("alice"), await db(f.make_user)("carol", staff=True)
    theirs = await db(f.make_project)(alice)
    client = await connect(carol)
    await join(client, theirs)
    await db(set_fields)(carol, first_name="Carol")
    await db(f.make_task)(theirs, title="still visible")
    assert (await client.wait_for("task_created"))["title"] == "still visible"


async def test_staff_loss_from_a_command_reaches_every_node_through_redis(spawn, redis_server, database_url):
    a, b = spawn(REDIS_URL=redis_server.url), spawn(REDIS_URL=redis_server.url)
    alice, carol = await db(f.make_user)("alice"), await db(f.make_user)("carol", staff=True)
    theirs = await db(f.make_project)(alice, title="alice's")
    task = await db(f.make_task)(theirs, title="before")
    carol_on_a, carol_on_b = await watcher(a, carol, theirs), await watcher(b, carol, theirs, "node")
    alice_on_b = await watcher(b, alice, theirs)
    for client in (carol_on_a, carol_on_b):
        await client.call("subscribe_projects")
        await client.wait_for("projects_update")
    try:
        code = "from django.contrib.auth.models import User; u = User.objects.get(username='carol'); u.is_staff = False; u.save()"
        result = await db(manage)(database_url, "shell", "-c", code, REDIS_URL=redis_server.url)
        assert result.returncode == 0, result.stderr
        for client in (carol_on_a, carol_on_b):
            update = await client.wait_for("projects_update")
            assert str(theirs.pk) not in {p["id"] for p in update["projects"]}
        token = await db(f.token_for)(alice)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as rest:
            response = await rest.patch(f"{a.url}/api/tasks/{task.pk}/", json={"title": "carol must not see this"})
            assert response.status_code == 200
        await alice_on_b.wait_for("task_updated", lambda t: t["title"] == "carol must not see this")
        for client in (carol_on_a, carol_on_b):
            assert client.received("task_updated") == []
            assert await alive(client)
    finally:
        for client in (carol_on_a, carol_on_b, alice_on_b):
            await client.close()


async def test_staff_lost_between_the_two_checks_of_a_join_keeps_no_room(connect, monkeypatch):
    """The window made deterministic: staff is removed right after a join's first check passed (on the stale user)."""
    from crawls.live import CRAWLS
    from projects import selectors

    alice, carol = await db(f.make_user)("alice"), await db(f.make_user)("carol", staff=True)
    theirs, mine = await db(f.make_project)(alice, title="alice's"), await db(f.make_project)(carol, title="carol's")
    their_crawl, my_crawl = await db(crawl_of)(alice), await db(crawl_of)(carol)
    client = await connect(carol)
    await join(client, mine)
    assert (await client.call("crawl_subscribe", {"progress_id": str(my_crawl.progress_id)}))["ok"]

    real_check, real_find = selectors.can_see_project, CRAWLS._lookup

    # Both run in the server's worker thread (sync, ORM): the revocation is written right there.
    def check_then_revoke(*, user: Any, project_id: Any) -> bool:
        seen = real_check(user=user, project_id=project_id)
        if str(project_id) == str(theirs.pk) and user.is_staff:  # the first check, on the user read before it
            set_fields(type(carol).objects.get(pk=carol.pk), is_staff=False)
        return seen

    def find_then_revoke(progress_id: str) -> Any:
        operation = real_find(progress_id)
        if progress_id == str(their_crawl.progress_id):
            set_fields(type(carol).objects.get(pk=carol.pk), is_staff=False)
        return operation

    monkeypatch.setattr(selectors, "can_see_project", check_then_revoke)
    assert await client.call("join_project", {"project_id": str(theirs.pk)}) == {"ok": False, "error": "project not found"}
    await db(set_fields)(carol, is_staff=True)
    monkeypatch.setattr(CRAWLS, "_lookup", find_then_revoke)
    refused = await client.call("crawl_subscribe", {"progress_id": str(their_crawl.progress_id)})
    assert refused == {"ok": False, "error": "unknown progress id"}
    monkeypatch.undo()

    # Nothing of alice's reaches carol afterwards; her own rooms still do (the markers prove delivery had its chance).
    await db(f.make_task)(theirs, title="hidden")
    mark_progress(their_crawl, 1)
    mark_progress(my_crawl, 2)
    await db(f.make_task)(mine, title="own marker")
    await client.wait_for("task_created", lambda t: t["title"] == "own marker")
    await client.wait_for("crawl_progress", lambda p: p.get("mark") == 2)
    assert [t["title"] for t in client.received("task_created")] == ["own marker"]
    assert [p["progressId"] for p in client.received("crawl_progress") if p.get("mark")] == [str(my_crawl.progress_id)]
    assert await alive(client)


# --- deleted user, logout, password change ----------------------------------------------------------------------------


async def test_deleting_a_user_closes_every_socket_of_theirs(connect):
    bob, alice = await db(f.make_user)("bob"), await db(f.make_user)("alice")
    by_token, by_cookie, other = await connect(bob), await connect(bob, cookie=True), await connect(alice)
    await db(bob.delete)()
    await wait_disconnected(by_token)
    await wait_disconnected(by_cookie)
    assert await alive(other)


async def _logout(base_url: str, cookie: str) -> httpx.Response:
    """POST /accounts/logout/ as the browser holding ``cookie`` would (with its CSRF token)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as browser:
        await browser.get("/accounts/login/")
        csrf = browser.cookies["csrftoken"]
        return await browser.post(
            "/accounts/logout/", data={"csrfmiddlewaretoken": csrf}, headers={"Cookie": f"{cookie}; csrftoken={csrf}"}
        )


async def test_logout_closes_that_sessions_sockets_only(server, connect, client_kind):
    alice = await db(f.make_user)("alice")
    first, second = await db(f.session_cookie)(alice), await db(f.session_cookie)(alice)
    leaving, staying = CLIENT_KINDS[client_kind](), CLIENT_KINDS[client_kind]()
    await leaving.connect(server.url, headers={"Cookie": first})
    await staying.connect(server.url, headers={"Cookie": second})
    by_token = await connect(alice)
    try:
        response = await _logout(server.url, first)
        assert response.status_code in (200, 302), response.text[:500]
        await wait_disconnected(leaving)
        assert await alive(staying) and await alive(by_token)
        again = CLIENT_KINDS[client_kind]()
        try:
            await again.connect(server.url, headers={"Cookie": first})
            raise AssertionError("a logged-out session connected")
        except ConnectionRefused as refusal:
            assert refusal.message.startswith("authentication required")
        finally:
            await again.close()
    finally:
        await leaving.close()
        await staying.close()


async def test_a_password_change_closes_cookie_sockets_and_keeps_token_sockets(server, connect):
    alice = await db(f.make_user)("alice")
    old_cookie = await db(f.session_cookie)(alice)
    by_cookie, by_token = await connect(alice, cookie=True), await connect(alice)

    def change_password() -> None:
        alice.set_password("a new and different passphrase")
        alice.save()

    await db(change_password)()
    await wait_disconnected(by_cookie)
    assert await alive(by_token)
    # The old session is refused at the handshake; a session logged in after the change connects.
    try:
        await connect(headers={"Cookie": old_cookie})
        raise AssertionError("a session from before the password change connected")
    except ConnectionRefused as refusal:
        assert refusal.message.startswith("authentication required")
    assert await alive(await connect(alice, cookie=True))


# --- Redis outage -----------------------------------------------------------------------------------------------


async def test_a_revocation_during_a_redis_outage_reaches_the_other_node_once_redis_is_back(spawn, redis_server):
    a, b = spawn(REDIS_URL=redis_server.url), spawn(REDIS_URL=redis_server.url)
    alice, bob = await db(f.make_user)("alice"), await db(f.make_user)("bob")
    project = await db(f.make_project)(alice, members=(bob,))
    task = await db(f.make_task)(project, title="before")
    alice_on_b, bob_on_b = await watcher(b, alice, project), await watcher(b, bob, project, "node")
    token = await db(f.token_for)(alice)
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as rest:
            redis_server.stop()
            response = await rest.patch(f"{a.url}/api/projects/{project.pk}/", json={"member_usernames": []})
            assert response.status_code == 200
            redis_server.start()  # the same port
            back = time.monotonic()
            # A holds the leave until Redis has been back long enough for B to listen again, then sends it
            # before anything newer: once A's writes reach B again, bob on B has left the room.
            for attempt in range(80):
                response = await rest.patch(f"{a.url}/api/tasks/{task.pk}/", json={"title": f"after outage {attempt}"})
                assert response.status_code == 200
                try:
                    await alice_on_b.wait_for("task_updated", lambda t, n=attempt: t["title"] == f"after outage {n}", timeout=0.5)
                    break
                except TimeoutError:
                    continue
            else:
                raise AssertionError("cross-node delivery did not resume")
            print(f"\ncross-node delivery (held leave first) resumed {time.monotonic() - back:.1f} s after Redis came back")
        assert bob_on_b.received("task_updated") == []
        assert bob_on_b.connected
        assert "1 held room operation(s) published" in a.output(), a.output()  # the leave
        # The since tokens the leave should have voided could not be reached: a new epoch, every watcher resyncs.
        assert "every watcher told to resync" in a.output(), a.output()
        assert (await bob_on_b.call("join_project", {"project_id": str(project.pk)})) == {"ok": False, "error": "project not found"}
    finally:
        for client in (alice_on_b, bob_on_b):
            await client.close()


# --- login throttling (django-axes) -----------------------------------------------------------------------------

LOCKED = "Too many failed login attempts: try again later."


async def _login(base_url: str, username: str, password: str, *, address: str, path: str = "/accounts/login/") -> httpx.Response:
    """One login through the real form, from client ``address`` (uvicorn trusts X-Forwarded-For from loopback)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10, headers={"X-Forwarded-For": address}) as browser:
        page = await browser.get(path)
        assert page.status_code == 200
        data = {"username": username, "password": password, "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
        return await browser.post(path, data=data)


async def test_login_failures_lock_out_the_username_and_the_address(server, settings):
    limit = settings.LOGIN_FAILURE_LIMIT
    await db(f.make_user)("alice")
    await db(f.make_user)("bob")
    await db(f.make_user)("root", superuser=True)
    answers = [(await _login(server.url, "alice", "wrong", address="10.0.0.1")).status_code for _ in range(limit)]
    # The limit-th failure is already answered with the lockout (axes counts it, then refuses).
    assert answers == [200] * (limit - 1) + [429]
    locked = await _login(server.url, "alice", f.PASSWORD, address="10.0.0.2")  # right password, other address
    assert (locked.status_code, locked.text) == (429, LOCKED)
    admin = await _login(server.url, "alice", f.PASSWORD, address="10.0.0.3", path="/admin/login/")
    assert (admin.status_code, admin.text) == (429, LOCKED)
    # The address is locked for everyone; another user elsewhere is not.
    assert (await _login(server.url, "bob", f.PASSWORD, address="10.0.0.1")).status_code == 429
    assert (await _login(server.url, "bob", f.PASSWORD, address="10.0.0.4")).status_code == 302
    assert (await _login(server.url, "root", f.PASSWORD, address="10.0.0.5", path="/admin/login/")).status_code == 302


async def test_one_address_guessing_many_usernames_is_locked_out(server, settings):
    await db(f.make_user)("carol")
    for n in range(settings.LOGIN_FAILURE_LIMIT):
        await _login(server.url, f"nobody{n}", "guess", address="10.0.1.1")
    refused = await _login(server.url, "carol", f.PASSWORD, address="10.0.1.1")
    assert (refused.status_code, refused.text) == (429, LOCKED)
    assert (await _login(server.url, "carol", f.PASSWORD, address="10.0.1.2")).status_code == 302
