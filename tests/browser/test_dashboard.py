"""The dashboard in a real browser: the live project list, creating a project, a tracked import."""

from __future__ import annotations

import re

from playwright.async_api import expect

from projects import services
from projects.models import Project
from tests.conftest import db
from tests.support import factories as f

from .conftest import column, live


async def test_the_project_list_is_live_and_a_project_can_be_created(server, open_page):
    alice = await db(f.make_user)("alice")
    await db(f.make_user)("bob")
    first = await db(f.make_project)(alice, title="Alpha")
    page = await open_page(server.url, "alice", path="/")
    other = await open_page(server.url, "bob", path="/")
    await live(page)
    await live(other)
    items = page.get_by_test_id("project-item")
    await expect(items).to_have_count(1)
    first_link = page.locator(f"[data-testid=project-item][data-project-id='{first.id}'] a")
    await expect(first_link).to_have_attribute("href", f"/projects/{first.id}/")

    await page.get_by_test_id("new-project-title").fill("Beta")
    await page.get_by_test_id("new-project-submit").click()
    await expect(items).to_have_count(2)
    await expect(page.get_by_test_id("project-list")).to_contain_text("Beta")
    await expect(page.get_by_test_id("new-project-title")).to_have_value("")
    await expect(other.get_by_test_id("project-item")).to_have_count(0)  # Bob sees none of them

    # Shared with Bob elsewhere (here: a service call): his list gains it at once, and only it.
    beta = await db(Project.objects.get)(title="Beta")
    await db(lambda: services.project_update(project=Project.objects.get(pk=beta.pk), member_usernames=["bob"]))()
    await expect(other.locator(f"[data-testid=project-item][data-project-id='{beta.id}']")).to_be_visible()
    await expect(other.get_by_test_id("project-item")).to_have_count(1)

    # A refused create says why (the input's length limit lifted by hand).
    await page.evaluate("document.querySelector('[data-testid=new-project-title]').removeAttribute('maxlength')")
    await page.get_by_test_id("new-project-title").fill("x" * 300)
    await page.get_by_test_id("new-project-submit").click()
    await expect(page.get_by_test_id("dashboard-error")).to_contain_text("title")
    await expect(items).to_have_count(2)


async def test_a_tracked_import_shows_its_progress_and_links_the_new_project(server, open_page):
    await db(f.make_user)("alice")
    page = await open_page(server.url, "alice", path="/")
    await live(page)
    await page.get_by_test_id("import-title").fill("Imported")
    await page.get_by_test_id("import-format").select_option("markdown")
    await page.get_by_test_id("import-content").fill("- [ ] Write the spec\n- [x] Set up the repository\n- [ ] Ship it\n")
    await page.get_by_test_id("import-submit").click()

    progress = page.get_by_test_id("import-progress")
    await expect(progress).to_have_attribute("data-status", "completed")
    await expect(progress).to_have_attribute("data-percentage", "100")
    await expect(page.get_by_test_id("import-step")).to_have_text("completed")
    link = page.get_by_test_id("import-project-link")
    await expect(link).to_have_text("Imported")
    project = await db(Project.objects.get)(title="Imported")
    await expect(link).to_have_attribute("href", f"/projects/{project.id}/")
    await expect(page.locator(f"[data-testid=project-item][data-project-id='{project.id}']")).to_be_visible()

    await link.click()
    await page.wait_for_url(re.compile(f"/projects/{project.id}/$"))
    await live(page)
    await expect(column(page, "todo").get_by_test_id("task-title")).to_have_text(["Write the spec", "Ship it"])
    await expect(column(page, "done").get_by_test_id("task-title")).to_have_text(["Set up the repository"])


async def test_a_failed_import_says_why(server, open_page):
    await db(f.make_user)("alice")
    page = await open_page(server.url, "alice", path="/")
    await live(page)
    await page.get_by_test_id("import-title").fill("Broken")
    await page.get_by_test_id("import-format").select_option("csv")
    await page.get_by_test_id("import-content").fill("name,status\nno title column,todo\n")
    await page.get_by_test_id("import-submit").click()
    progress = page.get_by_test_id("import-progress")
    await expect(progress).to_have_attribute("data-status", "error")
    await expect(page.get_by_test_id("import-result")).to_contain_text("title")

    # Logging out is a POST with the CSRF token; the pages then ask to log in again.
    await page.get_by_test_id("logout").click()
    await page.wait_for_url(re.compile(r"/accounts/login/$"))
    await page.goto("/")
    await page.wait_for_url(re.compile(r"/accounts/login/\?next=/$"))


async def test_the_project_list_is_whole_when_it_comes_in_several_frames(server, open_page, settings):
    settings.REALTIME_SNAPSHOT_FRAME_BYTES = 4_000  # the in-process server reads it per list
    alice = await db(f.make_user)("alice")
    titles = [f"Project {i:02}" for i in range(18)]

    def seed() -> None:
        for title in titles:
            Project.objects.create(owner=alice, title=title, description="d" * 900)

    await db(seed)()
    page = await open_page(server.url, "alice", path="/")
    await live(page)
    items = page.get_by_test_id("project-item")
    await expect(items).to_have_count(len(titles))
    await expect(items.locator("a")).to_have_text(titles)

    # A change: the new list is broadcast in frames too, and shown only once whole.
    await db(lambda: Project.objects.create(owner=alice, title="Project 99", description="d" * 900))()
    await expect(items).to_have_count(len(titles) + 1)
    await expect(items.locator("a")).to_have_text([*titles, "Project 99"])
