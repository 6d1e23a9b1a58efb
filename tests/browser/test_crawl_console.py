"""The crawl console in a real browser, against the local test site (never the internet)."""

from __future__ import annotations

import re
import time

from playwright.async_api import Page, expect

from crawls.models import CrawledPage, CrawlJob
from tests.conftest import db
from tests.support import factories as f

from .conftest import live, screenshot_path


async def start_crawl(page: Page, url: str, *, max_pages: int, max_depth: int) -> str:
    await page.get_by_test_id("crawl-url").fill(url)
    await page.get_by_test_id("crawl-max-pages").fill(str(max_pages))
    await page.get_by_test_id("crawl-max-depth").fill(str(max_depth))
    await page.get_by_test_id("crawl-start").click()
    progress = page.get_by_test_id("crawl-progress")
    await expect(progress).to_have_attribute("data-progress-id", re.compile(r"^[0-9a-f-]{36}$"))
    return await progress.get_attribute("data-progress-id")


async def test_a_crawl_runs_to_100_percent_and_lists_its_pages(server, open_page, site):
    await db(f.make_user)("alice")
    page = await open_page(server.url, "alice", path="/crawls/")
    await live(page)
    await expect(page.get_by_test_id("crawl-status")).to_have_text("idle")

    progress_id = await start_crawl(page, site.url + "/", max_pages=60, max_depth=20)
    progress = page.get_by_test_id("crawl-progress")
    await expect(progress).to_have_attribute("data-status", "completed", timeout=30_000)
    await expect(progress).to_have_attribute("data-percentage", "100")
    await expect(page.get_by_test_id("crawl-status")).to_have_text("completed")
    await expect(page.get_by_test_id("crawl-stop")).to_be_disabled()

    job = await db(CrawlJob.objects.get)(progress_id=progress_id)
    await expect(page.get_by_test_id("crawl-pages-done")).to_have_text(str(job.pages_done))
    await expect(page.get_by_test_id("crawl-log")).to_contain_text(f"completed: {job.pages_done} pages")
    # The page subscribes once the API has answered, so the crawl's first events may precede it: the
    # subscription's current state stands in for them. Coalesced (about 10 a second), the log has
    # some pages' lines and always the last.
    await expect(page.get_by_test_id("crawl-log")).to_contain_text(f"{site.url}/page/")

    # The history (refreshed when the crawl ended) has it as completed; its row lists its pages.
    row = page.locator(f"[data-testid=crawl-row][data-progress-id='{progress_id}']")
    await expect(row).to_have_attribute("data-status", "completed")
    await row.click()
    pages = page.get_by_test_id("crawl-page-list").get_by_test_id("crawl-page")
    await expect(pages).to_have_count(await db(CrawledPage.objects.filter(job=job).count)())
    await expect(page.get_by_test_id("crawl-page-list")).to_contain_text("Page 1")
    await page.screenshot(path=screenshot_path("crawl-console.png"), full_page=True)


async def test_a_stopped_crawl_shows_cancelled_and_fetches_nothing_more(spawn, open_page, site):
    process = spawn(CRAWL_DELAY="0.05")  # its own server process, slowed down: the crawl is still running when stopped
    await db(f.make_user)("alice")
    page = await open_page(process.url, "alice", path="/crawls/")
    await live(page)
    # Every status the console shows, in order.
    await page.evaluate(
        """() => {
            const status = document.querySelector("[data-testid=crawl-status]");
            window.__statuses = [];
            const record = () => window.__statuses.push(status.textContent);
            new MutationObserver(record).observe(status, { childList: true, characterData: true, subtree: true });
        }"""
    )

    progress_id = await start_crawl(page, site.url + "/", max_pages=500, max_depth=50)
    progress = page.get_by_test_id("crawl-progress")
    await expect(progress).to_have_attribute("data-status", "crawling")
    await expect(page.get_by_test_id("crawl-pages-done")).to_have_text(re.compile(r"^([2-9]|\d{2,})$"))
    await page.get_by_test_id("crawl-stop").click()

    await expect(page.get_by_test_id("crawl-status")).to_have_text("cancelled")
    await expect(progress).to_have_attribute("data-status", "cancelled")
    cancelled_at = time.monotonic()
    statuses = await page.evaluate("window.__statuses")
    assert "stopping…" in statuses and statuses[-1] == "cancelled", statuses
    await expect(page.get_by_test_id("crawl-log")).to_contain_text("Crawl stopped")
    await expect(page.get_by_test_id("crawl-stop")).to_be_disabled()

    # The count stays put: polled for a second (bounded), not a single look.
    done = await page.get_by_test_id("crawl-pages-done").text_content()
    for _ in range(10):
        await page.wait_for_timeout(100)
        assert await page.get_by_test_id("crawl-pages-done").text_content() == done
    assert site.requests_after(cancelled_at) == []

    job = await db(CrawlJob.objects.get)(progress_id=progress_id)
    assert job.status == "cancelled" and str(job.pages_done) == done
    assert job.pages_done < len(site.depths)  # stopped before the end of the site
    assert await db(CrawledPage.objects.filter(job=job).count)() == job.pages_done
    await expect(page.locator(f"[data-testid=crawl-row][data-progress-id='{progress_id}']")).to_have_attribute("data-status", "cancelled")
