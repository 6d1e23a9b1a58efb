"""The board in real browsers: live between users, from the admin, across a server restart, and refused to outsiders."""

from __future__ import annotations

import re

from django.db import connection
from playwright.async_api import expect

from projects import services
from projects.models import Project, Task
from tests.conftest import db
from tests.support import factories as f
from tests.support.live_server import free_port

from .conftest import NOT_CONNECTED, card, column, live, screenshot_path


async def test_two_users_see_each_others_changes_without_reload(server, open_page):
    alice, bob = await db(f.make_user)("alice"), await db(f.make_user)("bob")
    project = await db(f.make_project)(alice, title="Launch plan", members=(bob,))
    board = f"/projects/{project.id}/"
    # Alice's browser may only long-poll, Bob's only use websockets: both boards go live all the same
    # (and between them cover both of the server's delivery paths: queue and direct write).
    alice_page = await open_page(server.url, "alice", path=board, init_script="window.LIVE_TRANSPORTS = ['polling']")
    bob_page = await open_page(server.url, "bob", path=board, init_script="window.LIVE_TRANSPORTS = ['websocket']")
    await live(alice_page)
    await live(bob_page)
    assert await alice_page.evaluate("window.__live.socket.io.engine.transport.name") == "polling"
    assert await bob_page.evaluate("window.__live.socket.io.engine.transport.name") == "websocket"

    # Created by Alice: appears for Bob in "todo".
    await alice_page.get_by_test_id("new-task-title").fill("Write the announcement")
    await alice_page.get_by_test_id("new-task-submit").click()
    mine = column(alice_page, "todo").get_by_test_id("task").filter(has_text="Write the announcement")
    await expect(mine).to_have_count(1)
    task = await db(Task.objects.get)(pk=await mine.get_attribute("data-task-id"))
    created = card(bob_page, task.id)
    await expect(column(bob_page, "todo").locator(f"[data-task-id='{task.id}']")).to_be_visible()
    await expect(created.get_by_test_id("task-title")).to_have_text("Write the announcement")
    await expect(created).to_have_attribute("data-version", "1")
    await expect(alice_page.get_by_test_id("new-task-title")).to_have_value("")

    # Moved by Alice: moves for Bob.
    await card(alice_page, task.id).get_by_test_id("task-move").select_option("doing")
    await expect(column(bob_page, "doing").locator(f"[data-task-id='{task.id}']")).to_be_visible()
    await expect(created).to_have_attribute("data-status", "doing")
    await expect(created).to_have_attribute("data-version", "2")
    await expect(column(bob_page, "todo").get_by_test_id("task")).to_have_count(0)
    await expect(card(alice_page, task.id)).to_have_attribute("data-status", "doing")

    # Renamed by Bob (inline input, Enter): renamed for Alice.
    await created.get_by_test_id("task-rename").click()
    await created.get_by_test_id("task-rename-input").fill("Write and send the announcement")
    await created.get_by_test_id("task-rename-input").press("Enter")
    await expect(card(alice_page, task.id).get_by_test_id("task-title")).to_have_text("Write and send the announcement")
    await expect(created.get_by_test_id("task-rename-input")).to_have_count(0)
    await expect(card(alice_page, task.id)).to_have_attribute("data-version", "3")

    # Escape leaves the rename without saving.
    await created.get_by_test_id("task-rename").click()
    await created.get_by_test_id("task-rename-input").fill("Not this")
    await created.get_by_test_id("task-rename-input").press("Escape")
    await expect(created.get_by_test_id("task-title")).to_have_text("Write and send the announcement")
    await expect(created.get_by_test_id("task-rename-input")).to_have_count(0)
    await expect(bob_page.get_by_test_id("board-error")).to_be_hidden()

    # Deleted by Alice: disappears for Bob.
    await card(alice_page, task.id).get_by_test_id("task-delete").click()
    await expect(card(bob_page, task.id)).to_have_count(0)
    await expect(card(alice_page, task.id)).to_have_count(0)
    assert not await db(Task.objects.filter(pk=task.id).exists)()

    # A few tasks in several columns, made through the ORM (they broadcast too), for the screenshot.
    seeded = {
        "todo": ["Draft the press release", "Book the venue", "Order the stickers"],
        "doing": ["Record the demo video", "Polish the landing page"],
        "review": ["Pricing page copy"],
        "done": ["Pick the launch date", "Set up the mailing list"],
    }

    def seed() -> None:
        for status, titles in seeded.items():
            for order, title in enumerate(titles):
                f.make_task(project, title=title, status=status, task_order=order, assignee="alice" if order % 2 else "bob")

    await db(seed)()
    for status, titles in seeded.items():
        await expect(column(bob_page, status).get_by_test_id("task-title")).to_have_text(titles)
        await expect(column(alice_page, status).get_by_test_id("task-title")).to_have_text(titles)
    await alice_page.screenshot(path=screenshot_path("board.png"), full_page=True)


async def test_rest_errors_show_in_the_error_line(server, open_page):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice, title="Errors")
    task = await db(f.make_task)(project, title="Doomed")
    page = await open_page(server.url, "alice", path=f"/projects/{project.id}/")
    await live(page)
    await expect(card(page, task.id)).to_be_visible()

    def delete_silently() -> None:  # gone behind the page's back: raw SQL sends no signal, so no event
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {Task._meta.db_table} WHERE id = %s", [Task._meta.pk.get_db_prep_value(task.id, connection)])

    await db(delete_silently)()
    await card(page, task.id).get_by_test_id("task-move").select_option("done")
    await expect(page.get_by_test_id("board-error")).to_have_text(re.compile("task not found"))
    await expect(card(page, task.id)).to_have_attribute("data-status", "todo")  # the page moved nothing by itself


async def test_a_change_saved_in_the_admin_shows_on_an_open_board(server, open_page):
    alice = await db(f.make_user)("alice")
    await db(f.make_user)("root", superuser=True)
    project = await db(f.make_project)(alice, title="Admin-driven")
    task = await db(f.make_task)(project, title="Old title")
    board = await open_page(server.url, "alice", path=f"/projects/{project.id}/")
    await live(board)
    await expect(card(board, task.id).get_by_test_id("task-title")).to_have_text("Old title")

    admin = await open_page(server.url, path="/admin/login/?next=/admin/")
    await admin.fill("#id_username", "root")
    await admin.fill("#id_password", f.PASSWORD)
    await admin.click("input[type=submit]")
    await admin.wait_for_url(re.compile(r"/admin/$"))
    await admin.goto(f"/admin/projects/task/{task.id}/change/")
    await admin.fill("#id_title", "Edited in the admin")
    await admin.select_option("#id_status", "review")
    await admin.click("input[name=_save]")
    await admin.wait_for_url(re.compile(r"/admin/projects/task/$"))

    moved = column(board, "review").locator(f"[data-task-id='{task.id}']")
    await expect(moved).to_be_visible()
    await expect(moved.get_by_test_id("task-title")).to_have_text("Edited in the admin")
    await expect(moved).to_have_attribute("data-version", "2")
    await expect(column(board, "todo").get_by_test_id("task")).to_have_count(0)


async def test_the_board_comes_back_by_itself_after_a_server_restart(fixed_port_server, open_page):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice, title="Restart")
    task = await db(f.make_task)(project, title="Before the restart")
    port = free_port()
    process = fixed_port_server(port)
    page = await open_page(process.url, "alice", path=f"/projects/{project.id}/")
    await live(page)
    await expect(card(page, task.id).get_by_test_id("task-title")).to_have_text("Before the restart")

    process.stop()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", NOT_CONNECTED)
    await expect(page.get_by_test_id("connection")).to_have_text(NOT_CONNECTED)

    def change_meanwhile() -> None:  # nobody is listening: the page must reload its snapshot
        services.task_update(task=Task.objects.get(pk=task.id), title="Changed while the server was down", status="done")
        f.make_task(Project.objects.get(pk=project.id), title="Added while the server was down")

    await db(change_meanwhile)()
    restarted = fixed_port_server(port)
    assert restarted.url == process.url

    await live(page)  # reconnected by itself, no reload
    changed = column(page, "done").locator(f"[data-task-id='{task.id}']")
    await expect(changed.get_by_test_id("task-title")).to_have_text("Changed while the server was down")
    await expect(changed).to_have_attribute("data-version", "2")
    await expect(column(page, "todo").get_by_test_id("task-title")).to_have_text(["Added while the server was down"])
    # And it is live again: a change now arrives as an event.
    await page.get_by_test_id("new-task-title").fill("After the restart")
    await page.get_by_test_id("new-task-submit").click()
    await expect(column(page, "todo").get_by_test_id("task-title")).to_have_text(["Added while the server was down", "After the restart"])


async def test_an_outsider_can_neither_see_nor_join_a_project(server, open_page):
    alice, mallory = await db(f.make_user)("alice"), await db(f.make_user)("mallory")
    secret = await db(f.make_project)(alice, title="Secret plans")
    await db(f.make_task)(secret, title="Hidden task")
    own = await db(f.make_project)(mallory, title="Mallory's own")

    page = await open_page(server.url, "mallory", path="/")
    await live(page)
    items = page.get_by_test_id("project-list").get_by_test_id("project-item")
    await expect(items).to_have_count(1)  # the list has loaded: her own project only
    await expect(page.locator(f"[data-testid=project-item][data-project-id='{own.id}']")).to_be_visible()
    await expect(page.locator(f"[data-testid=project-item][data-project-id='{secret.id}']")).to_have_count(0)
    await expect(page.get_by_test_id("project-list")).not_to_contain_text("Secret plans")

    # A hand-written join is refused, and no snapshot arrives (it would come before the answer).
    outcome = await page.evaluate(
        """async (projectId) => {
            const socket = window.__live.socket;
            const snapshots = [];
            socket.on("initial_tasks", (data) => snapshots.push(data));
            const ack = await new Promise((resolve) => socket.emit("join_project", { project_id: projectId }, resolve));
            // One more round trip: anything the server sent for the join has arrived by now.
            await new Promise((resolve) => socket.emit("subscribe_projects", resolve));
            return { ack, snapshots };
        }""",
        str(secret.id),
    )
    assert outcome == {"ack": {"ok": False, "error": "project not found"}, "snapshots": []}

    response = await page.goto(f"/projects/{secret.id}/")
    assert response is not None and response.status == 404
    await expect(page.locator("body")).not_to_contain_text("Hidden task")
    # Her own board works.
    response = await page.goto(f"/projects/{own.id}/")
    assert response is not None and response.status == 200
    await live(page)


async def test_an_edit_from_a_stale_view_is_refused_and_shows_the_other_users_change(server, open_page):
    alice, bob = await db(f.make_user)("alice"), await db(f.make_user)("bob")
    project = await db(f.make_project)(alice, title="Conflicts", members=(bob,))
    task = await db(f.make_task)(project, title="Original")
    alice_page = await open_page(server.url, "alice", path=f"/projects/{project.id}/")
    bob_page = await open_page(server.url, "bob", path=f"/projects/{project.id}/")
    await live(alice_page)
    await live(bob_page)
    mine, theirs = card(alice_page, task.id), card(bob_page, task.id)
    await expect(mine).to_have_attribute("data-version", "1")
    await expect(alice_page.get_by_test_id("conflict")).to_be_hidden()

    # 1. Alice starts renaming; while she types, Bob renames it. Her rename was made from version 1: refused.
    await mine.get_by_test_id("task-rename").click()
    await mine.get_by_test_id("task-rename-input").fill("Alice's title")
    await theirs.get_by_test_id("task-rename").click()
    await theirs.get_by_test_id("task-rename-input").fill("Bob's title")
    await theirs.get_by_test_id("task-rename-input").press("Enter")
    await expect(mine).to_have_attribute("data-version", "2")  # arrived live, under her open input
    await mine.get_by_test_id("task-rename-input").press("Enter")

    notice = alice_page.get_by_test_id("conflict")
    await expect(notice).to_be_visible()
    await expect(notice).to_contain_text("was changed by someone else; your change was not applied")
    await expect(notice).to_contain_text("Bob's title")
    await expect(mine.get_by_test_id("task-title")).to_have_text("Bob's title")
    await expect(mine.get_by_test_id("task-rename-input")).to_have_count(0)
    assert await db(lambda: Task.objects.values_list("title", "version").get(pk=task.id))() == ("Bob's title", 2)
    await expect(bob_page.get_by_test_id("conflict")).to_be_hidden()

    # 2. Alice's page stops hearing about changes (a network blip); Bob moves the task. Her move, made from
    #    what her page still shows, is refused, and her board then shows his change.
    await alice_page.evaluate("window.__live.socket.disconnect()")
    await theirs.get_by_test_id("task-move").select_option("review")
    await expect(theirs).to_have_attribute("data-version", "3")
    await expect(mine).to_have_attribute("data-version", "2")  # stale
    await mine.get_by_test_id("task-move").select_option("done")
    await expect(column(alice_page, "review").locator(f"[data-task-id='{task.id}']")).to_be_visible()
    await expect(mine).to_have_attribute("data-version", "3")
    await expect(mine.get_by_test_id("task-move")).to_have_value("review")
    await expect(notice).to_contain_text("your change was not applied")
    assert await db(lambda: Task.objects.values_list("status", "version").get(pk=task.id))() == ("review", 3)

    # 3. Reviewed, she retries: now from the current version, it goes through and the notice goes away.
    await mine.get_by_test_id("task-move").select_option("done")
    await expect(mine).to_have_attribute("data-version", "4")
    await expect(notice).to_be_hidden()
    await expect(column(bob_page, "done").locator(f"[data-task-id='{task.id}']")).to_be_visible()
    assert await db(lambda: Task.objects.values_list("title", "status", "version").get(pk=task.id))() == ("Bob's title", "done", 4)


async def test_a_board_shows_a_snapshot_that_came_in_several_frames(server, open_page, settings):
    settings.REALTIME_SNAPSHOT_FRAME_BYTES = 3_000  # the in-process server reads it per snapshot
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice, title="Many")
    titles = [f"Task {i:02}" for i in range(24)]

    def seed() -> None:
        for order, title in enumerate(titles):
            f.make_task(project, title=title, description="d" * 800, task_order=order)

    await db(seed)()
    page = await open_page(server.url, "alice", path=f"/projects/{project.id}/")
    await live(page)
    await expect(column(page, "todo").get_by_test_id("task-title")).to_have_text(titles)
    frames = await page.evaluate(
        """async (projectId) => {
            const socket = window.__live.socket;
            const parts = [];
            const listener = (data) => parts.push([data.part, data.parts]);
            socket.on("initial_tasks", listener);
            await socket.emitWithAck("join_project", { project_id: projectId });
            socket.off("initial_tasks", listener);
            return parts;
        }""",
        str(project.id),
    )
    assert len(frames) > 1 and frames == [[n, len(frames)] for n in range(1, len(frames) + 1)]
    await expect(column(page, "todo").get_by_test_id("task-title")).to_have_text(titles)  # a re-join changes nothing


async def test_a_password_change_closes_other_sessions_and_its_own_comes_back(server, open_page):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice, title="Secrets")
    board = f"/projects/{project.id}/"
    mine = await open_page(server.url, "alice", path=board)
    elsewhere = await open_page(server.url, "alice", path=board)  # another browser, another session
    await live(mine)
    await live(elsewhere)
    before = await mine.evaluate("window.__live.socket.id")

    # Changed from a second tab of the first browser: Django keeps that session valid.
    tab = await mine.context.new_page()
    await tab.goto("/accounts/password_change/")
    await tab.fill("#id_old_password", f.PASSWORD)
    await tab.fill("#id_new_password1", "another-Secret-42")
    await tab.fill("#id_new_password2", "another-Secret-42")
    await tab.click("[type=submit]")
    await tab.wait_for_url(re.compile(r"/accounts/password_change/done/$"))

    # The other session's socket is closed and stays closed (its retry is refused) ...
    await expect(elsewhere.get_by_test_id("connection")).to_have_attribute("data-state", "offline")
    # ... while this session's socket was closed too, and came back on its own with a new connection.
    await live(mine)
    assert await mine.evaluate("window.__live.socket.id") != before
    task = await db(services.task_create)(project=project, title="After the change")
    await expect(card(mine, task.id)).to_be_visible()
    await expect(card(elsewhere, task.id)).to_have_count(0)


async def test_a_board_that_lost_its_connection_gets_only_what_it_missed(server, open_page, monkeypatch):
    """Recovery: the page rejoins naming the last broadcast it applied, and is sent the missed ones, not a snapshot."""
    from projects import selectors

    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice, title="Blip")
    task = await db(f.make_task)(project, title="Before the blip")
    page = await open_page(server.url, "alice", path=f"/projects/{project.id}/")
    await live(page)
    await expect(card(page, task.id).get_by_test_id("task-title")).to_have_text("Before the blip")
    snapshots: list[int] = []
    real = selectors.project_tasks
    monkeypatch.setattr(selectors, "project_tasks", lambda **kw: snapshots.append(1) or real(**kw))

    # The connection drops (as a network blip would): live.js reconnects on its own.
    await page.evaluate("window.__live.socket.io.reconnectionDelay(1500); window.__live.socket.io.engine.close()")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", NOT_CONNECTED)

    def change_meanwhile() -> None:
        services.task_update(task=Task.objects.get(pk=task.id), title="Changed during the blip", status="done")
        f.make_task(Project.objects.get(pk=project.id), title="Added during the blip")

    await db(change_meanwhile)()
    await live(page)
    changed = column(page, "done").locator(f"[data-task-id='{task.id}']")
    await expect(changed.get_by_test_id("task-title")).to_have_text("Changed during the blip")
    await expect(column(page, "todo").get_by_test_id("task-title")).to_have_text(["Added during the blip"])
    assert snapshots == []  # recovered from history: no snapshot was read
    # And live again, in order.
    await db(f.make_task)(project, title="After the blip")
    await expect(column(page, "todo").get_by_test_id("task-title")).to_have_text(["Added during the blip", "After the blip"])


async def test_a_snapshot_cut_off_by_a_blip_is_asked_for_again(server, open_page, monkeypatch):
    """A join answered "a snapshot follows" whose snapshot never came (the connection dropped between the marker and
    the snapshot) must not name that marker's seq on the next join: it would be told nothing was missed, and the
    board would keep what the lost snapshot was to change."""
    import threading

    from projects import selectors

    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice, title="Cut off")
    task = await db(f.make_task)(project, title="Before")
    page = await open_page(server.url, "alice", path=f"/projects/{project.id}/")
    await live(page)
    title = card(page, task.id).get_by_test_id("task-title")
    await expect(title).to_have_text("Before")

    # Away, and without a position (as after realtime:resync): the next join asks for a snapshot.
    await page.evaluate("window.__live.socket.io.reconnectionDelay(1500); window.__live.socket.io.engine.close()")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", NOT_CONNECTED)
    await db(lambda: services.task_update(task=Task.objects.get(pk=task.id), title="Changed while away"))()
    await page.evaluate("window.__live.streams.clear()")

    # That snapshot is slow; once its marker is in, the connection drops again, so the snapshot is never delivered.
    release, calls = threading.Event(), []
    real = selectors.project_tasks

    def slow(**kw):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            release.wait(10)
        return real(**kw)

    monkeypatch.setattr(selectors, "project_tasks", slow)
    await page.wait_for_function("window.__live.streams.size > 0", timeout=10_000)
    await page.evaluate("window.__live.socket.io.engine.close()")
    release.set()

    await live(page)
    await expect(title).to_have_text("Changed while away")
    assert len(calls) == 2  # the second join was sent the snapshot again


async def test_a_rejoin_answered_without_a_marker_counts_from_the_next_broadcast(server, open_page, monkeypatch):
    """History out of reach for a rejoin (no marker, the snapshot instead): the board does not know where the room
    stands, so it counts from the next broadcast. Kept at its old position, it took every later broadcast for a gap
    and fetched the snapshot again for each; and once history is back, a blip is recovered from the counted position."""
    from projects import selectors
    from realtime import room_kinds

    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice, title="No marker")
    task = await db(f.make_task)(project, title="Before")
    page = await open_page(server.url, "alice", path=f"/projects/{project.id}/")
    await live(page)
    title = card(page, task.id).get_by_test_id("task-title")
    await expect(title).to_have_text("Before")
    snapshots: list[int] = []
    real_tasks, real_positions = selectors.project_tasks, room_kinds._positions
    monkeypatch.setattr(selectors, "project_tasks", lambda **kw: snapshots.append(1) or real_tasks(**kw))

    async def unreachable(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ConnectionError("history out of reach (test)")

    monkeypatch.setattr(room_kinds, "_positions", unreachable)

    async def blip(change: str) -> None:
        await page.evaluate("window.__live.socket.io.reconnectionDelay(1500); window.__live.socket.io.engine.close()")
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", NOT_CONNECTED)
        await db(lambda: services.task_update(task=Task.objects.get(pk=task.id), title=change))()  # the room's seq moves on
        await live(page)
        await expect(title).to_have_text(change)

    await blip("Changed while away")
    assert len(snapshots) == 1  # the rejoin's snapshot
    for i in range(3):
        await db(lambda i=i: services.task_update(task=Task.objects.get(pk=task.id), title=f"Live {i}"))()
        await expect(title).to_have_text(f"Live {i}")
    assert len(snapshots) == 1  # each applied in order: no gap, no snapshot

    monkeypatch.setattr(room_kinds, "_positions", real_positions)
    await blip("Changed while away again")
    assert len(snapshots) == 1  # recovered from history, from the position counted since the markerless join
