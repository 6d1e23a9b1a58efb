"""The site crawler: real HTTP (httpx, async), selectolax parsing, robots.txt, limits. No Django here.

Breadth-first from the start URL with bounded concurrency. Each URL is fetched
at most once (normalised, de-duplicated, redirects followed only within the
site). A failing page is reported, never fatal. Cancelling the task running
``Crawler.run`` cancels in-flight requests at once.
"""

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.robotparser import RobotFileParser

import httpx
from selectolax.lexbor import LexborHTMLParser

from . import urls

USER_AGENT = "ArchonCrawler/1.0 (+https://github.com/; live Django over Socket.IO)"
MAX_REDIRECTS = 5


@dataclass(frozen=True)
class Options:
    max_pages: int = 50
    max_depth: int = 3
    same_site_only: bool = True
    include_patterns: list[str] = field(default_factory=list)
    exclude_patterns: list[str] = field(default_factory=list)
    concurrency: int = 4
    timeout: float = 10.0
    delay: float = 0.0  # per-host pause between requests
    max_bytes: int = 2_000_000


@dataclass
class Page:
    url: str
    depth: int
    final_url: str = ""
    status_code: int | None = None
    title: str = ""
    text: str = ""
    content_hash: str = ""
    error: str = ""
    links: list[str] = field(default_factory=list)


@dataclass
class Stats:
    done: int = 0
    discovered: int = 1
    current_url: str = ""


OnPage = Callable[[Page, Stats], Awaitable[None]]
OnFetch = Callable[[str, Stats], Awaitable[None]]


class Crawler:
    def __init__(
        self,
        start_url: str,
        options: Options,
        *,
        on_page: OnPage,
        on_fetch: OnFetch | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        start = urls.normalize(start_url)
        if start is None:
            raise ValueError(f"not an http(s) URL: {start_url!r}")
        self.start, self.options = start, options
        self.on_page, self.on_fetch, self.should_stop = on_page, on_fetch, should_stop
        self.stats = Stats()
        self.seen: set[str] = {start}
        self.queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self.robots: dict[str, RobotFileParser] = {}
        self.host_locks: dict[str, asyncio.Lock] = {}
        self.host_last: dict[str, float] = {}
        self.claimed = 0  # fetches started: never more than max_pages

    async def run(self) -> Stats:
        limits = httpx.Limits(max_connections=self.options.concurrency * 2)
        timeout = httpx.Timeout(self.options.timeout)
        async with httpx.AsyncClient(
            headers={"User-Agent": USER_AGENT}, timeout=timeout, limits=limits, follow_redirects=False, trust_env=False
        ) as self.client:
            await self.queue.put((self.start, 0))
            workers = [asyncio.create_task(self._worker()) for _ in range(self.options.concurrency)]
            try:
                await self.queue.join()
            finally:
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        return self.stats

    async def _worker(self) -> None:
        while True:
            url, depth = await self.queue.get()
            try:
                if self.claimed < self.options.max_pages and not self.should_stop():
                    self.claimed += 1
                    await self._visit(url, depth)
            finally:
                self.queue.task_done()

    async def _visit(self, url: str, depth: int) -> None:
        self.stats.current_url = url
        if self.on_fetch:
            await self.on_fetch(url, self.stats)
        page = await self._fetch(url, depth)
        self.stats.done += 1
        if page.links and depth < self.options.max_depth:
            for link in page.links:
                if link not in self.seen and self.stats.discovered < self._discovery_cap():
                    self.seen.add(link)
                    if not await self._allowed(link):
                        continue  # robots.txt forbids it: not a page of this crawl
                    self.stats.discovered += 1
                    await self.queue.put((link, depth + 1))
        await self.on_page(page, self.stats)

    def _discovery_cap(self) -> int:
        # Discovering far beyond max_pages only inflates the denominator of the percentage.
        return self.options.max_pages

    def _in_scope(self, url: str) -> bool:
        if self.options.same_site_only and not urls.same_site(url, self.start):
            return False
        return urls.allowed_by_patterns(url, self.options.include_patterns, self.options.exclude_patterns) or url == self.start

    async def _allowed(self, url: str) -> bool:
        origin = url.split("/", 3)[:3]
        key = "/".join(origin)
        if key not in self.robots:
            parser = RobotFileParser()
            try:
                response = await self.client.get(key + "/robots.txt")
                parser.parse(response.text.splitlines() if response.status_code == 200 else [])
            except httpx.HTTPError:
                parser.parse([])  # unreachable robots.txt: nothing is forbidden
            self.robots[key] = parser
        return self.robots[key].can_fetch(USER_AGENT, url)

    async def _polite(self, url: str) -> None:
        if self.options.delay <= 0:
            return
        host = url.split("/", 3)[2]
        lock = self.host_locks.setdefault(host, asyncio.Lock())
        async with lock:
            wait = self.host_last.get(host, 0) + self.options.delay - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.host_last[host] = time.monotonic()

    async def _fetch(self, url: str, depth: int) -> Page:
        page = Page(url=url, depth=depth, final_url=url)
        try:
            for _ in range(MAX_REDIRECTS + 1):
                if not await self._allowed(page.final_url):
                    page.error = "disallowed by robots.txt"
                    return page
                await self._polite(page.final_url)
                async with self.client.stream("GET", page.final_url) as response:
                    page.status_code = response.status_code
                    if response.is_redirect:
                        target = urls.normalize(response.headers.get("location", ""), page.final_url)
                        if target is None or not urls.same_site(target, self.start):
                            page.error = f"redirect off the site to {target}"
                            return page
                        page.final_url = target
                        self.seen.add(target)
                        continue
                    return await self._read(page, response)
            page.error = "too many redirects"
        except httpx.TimeoutException:
            page.error = f"timed out after {self.options.timeout:g} s"
        except httpx.HTTPError as error:
            page.error = f"{type(error).__name__}: {error}"
        return page

    async def _read(self, page: Page, response: httpx.Response) -> Page:
        if response.status_code >= 400:
            page.error = f"HTTP {response.status_code}"
            return page
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("text/html", "application/xhtml+xml"):
            page.error = f"not HTML ({kind or 'no content type'})"
            return page
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.options.max_bytes:
                page.error = f"larger than {self.options.max_bytes} bytes"
                return page
        html = bytes(body).decode(response.encoding or "utf-8", errors="replace")
        page.content_hash = hashlib.sha256(body).hexdigest()
        tree = LexborHTMLParser(html)
        title = tree.css_first("title")
        page.title = title.text(strip=True)[:500] if title else ""
        body_node = tree.body
        if body_node is not None:
            for node in body_node.css("script, style, noscript"):
                node.decompose()
            page.text = body_node.text(separator=" ", strip=True)
        for anchor in tree.css("a[href]"):
            link = urls.normalize(anchor.attributes.get("href") or "", page.final_url)
            if link is not None and self._in_scope(link):
                page.links.append(link)
        return page
