"""Real-browser fixtures: Debian's Chromium driven by Playwright (async API), logged in through the real login page."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.support import factories
from tests.support.live_server import free_port
from tests.support.processes import ServerProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
# Screenshots go to docs/ only when asked (SCREENSHOTS_TO_DOCS=1): a test run leaves the checkout clean.
DOCS = Path(__file__).resolve().parents[2] / "docs"
if not os.environ.get("SCREENSHOTS_TO_DOCS"):
    DOCS = Path(tempfile.gettempdir()) / "archon-screenshots"

expect.set_options(timeout=15_000)  # live updates arrive in milliseconds; reconnects take a few seconds


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium); it is missing")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


OpenPage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def open_page(browser: Browser) -> AsyncIterator[OpenPage]:
    """``await open_page(base_url, "alice", path="/")``: a fresh browser context (its own cookies), logged in
    through the login form, on ``path``. Uncaught page errors fail the test."""
    errors: list[str] = []

    async def factory(base_url: str, username: str | None = None, *, path: str = "/", init_script: str | None = None) -> Page:
        context = await browser.new_context(base_url=base_url, viewport=VIEWPORT)
        page = await context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{username}: {error}"))
        if init_script:
            await page.add_init_script(init_script)
        if username is not None:
            await login(page, username)
        if path is not None:
            await page.goto(path)
        return page

    yield factory
    assert errors == [], f"uncaught errors in the page: {errors}"


async def login(page: Page, username: str, password: str = factories.PASSWORD) -> None:
    await page.goto("/accounts/login/")
    await page.fill("[data-testid=login-username]", username)
    await page.fill("[data-testid=login-password]", password)
    await page.click("[data-testid=login-submit]")
    await page.wait_for_url(lambda url: "/accounts/login/" not in url)


async def live(page: Page) -> None:
    """The page's Socket.IO connection is up."""
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await expect(page.get_by_test_id("connection")).to_have_text("connected")


def card(page: Page, task_id: Any):
    return page.locator(f"[data-testid=task][data-task-id='{task_id}']")


def column(page: Page, status: str):
    return page.get_by_test_id(f"column-{status}")


NOT_CONNECTED = re.compile(r"^(reconnecting|offline)$")


def screenshot_path(name: str) -> str:
    DOCS.mkdir(parents=True, exist_ok=True)
    return str(DOCS / name)


def server_on_port(database_url: str, port: int, **env: str | None) -> ServerProcess:
    """A ``ServerProcess`` (not started) bound to a given port: a restart comes back where the page left it."""
    process = ServerProcess(database_url, **env)
    process.port = port
    process.url = f"http://127.0.0.1:{port}"
    process.env["REALTIME_SERVER_URL"] = process.url
    return process


@pytest.fixture
def fixed_port_server(database_url: str) -> Iterator[Callable[..., ServerProcess]]:
    """``fixed_port_server(port)``: start a uvicorn process on that port; every one is stopped after the test."""
    started: list[ServerProcess] = []

    def factory(port: int | None = None, **env: str | None) -> ServerProcess:
        process = server_on_port(database_url, port or free_port(), **env).start()
        started.append(process)
        return process

    yield factory
    for process in started:
        if process.proc is not None and process.proc.poll() is None:
            process.stop()
