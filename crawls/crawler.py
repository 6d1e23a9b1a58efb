"""The site crawler: real HTTP (httpx, async), selectolax parsing, robots.txt, limits. No Django here.

Breadth-first from the start URL with bounded concurrency. Each URL is fetched
at most once (normalised, de-duplicated, redirects followed only within the
site). A failing page is reported, never fatal: whatever goes wrong with one
page (an invalid or un-encodable URL, a refused address, a slow drip) becomes
that page's ``error`` and the crawl goes on. Cancelling the task running
``Crawler.run`` cancels in-flight requests at once.

Bounded work: every fetch (robots.txt included) has a total deadline besides the
per-read timeout, bodies have byte caps, and the CPU work of a page — HTML
parsing, link extraction, pattern and robots.txt matching — runs in a worker
thread (``asyncio.to_thread``), never on the event loop. Connections go through
``netguard`` (public addresses only, unless private networks are allowed).
"""

import asyncio
import codecs
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.robotparser import RobotFileParser

import httpcore
import httpx
from selectolax.lexbor import LexborHTMLParser

from . import links, netguard

log = logging.getLogger(__name__)

USER_AGENT = "ArchonCrawler/1.0 (+https://github.com/; live Django over Socket.IO)"
MAX_REDIRECTS = 5
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
# In-scope links kept from one page (a page of 100k links would amplify); anchors after the last kept one are not read.
MAX_LINKS_PER_PAGE = 1_000
# Distinct origins (scheme://host:port) a crawl may touch, each costing a robots.txt fetch: one page
# linking to 2,000 ports would otherwise open 2,000 connections.
MAX_ORIGINS = 50
MAX_ROBOTS_LINES = 1_000  # robots.txt lines parsed: can_fetch walks every rule for every link
# Charsets a page may declare. Anything else (``punycode`` decodes in quadratic time, ``rot13``, …) is read as UTF-8.
WEB_ENCODINGS = frozenset(
    codecs.lookup(name).name
    for name in (
        "utf-8",
        "utf-16",
        "utf-16-le",
        "utf-16-be",
        "latin-1",
        "ascii",
        "windows-1250",
        "windows-1251",
        "windows-1252",
        "windows-1253",
        "windows-1254",
        "windows-1255",
        "windows-1256",
        "windows-1257",
        "windows-1258",
        *(f"iso-8859-{n}" for n in (2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16)),
        "koi8-r",
        "koi8-u",
        "shift_jis",
        "cp932",
        "euc-jp",
        "iso-2022-jp",
        "euc-kr",
        "cp949",
        "gb2312",
        "gbk",
        "gb18030",
        "big5",
        "big5hkscs",
        "cp874",
    )
)


def web_encoding(declared: str | None) -> str:
    """The codec to decode a page with: its declared charset if a web encoding, else UTF-8."""
    try:
        name = codecs.lookup(declared or "utf-8").name
    except LookupError:  # an unknown charset in Content-Type
        return "utf-8"
    return name if name in WEB_ENCODINGS else "utf-8"


def _compressed(response: httpx.Response) -> str:
    """The response's Content-Encoding if it is one (we ask for ``identity``), else ""."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    return "" if encoding in ("", "identity") else encoding


@dataclass(frozen=True)
class Options:
    max_pages: int = 50
    max_depth: int = 3
    same_site_only: bool = True
    include_patterns: list[str] = field(default_factory=list)
    exclude_patterns: list[str] = field(default_factory=list)
    concurrency: int = 4
    timeout: float = 10.0  # per read / connect
    delay: float = 0.0  # per-host pause between requests
    max_bytes: int = 2_000_000
    fetch_deadline: float = 30.0  # one request and its whole body, however slowly it drips
    robots_max_bytes: int = 500_000
    allow_private: bool = False  # loopback, RFC 1918, link-local… (SSRF guard off)


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
OnNote = Callable[[str], Awaitable[None]]


def _origin(url: str) -> str:
    return "/".join(url.split("/", 3)[:3])  # URLs here are normalised: scheme://host[:port]


class Crawler:
    def __init__(
        self,
        start_url: str,
        options: Options,
        *,
        on_page: OnPage,
        on_fetch: OnFetch | None = None,
        on_note: OnNote | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        """``ValueError`` for a start URL that is not http(s) or a pattern RE2 refuses."""
        start = links.normalize(start_url)
        if start is None:
            raise ValueError(f"not an http(s) URL: {start_url!r}")
        self.start, self.options = start, options
        self.patterns = links.Patterns.compile(options.include_patterns, options.exclude_patterns)  # once per crawl
        self.on_page, self.on_fetch, self.on_note, self.should_stop = on_page, on_fetch, on_note, should_stop
        self.network_backend = network_backend
        self.stats = Stats()
        self.seen: set[str] = {start}
        # Every URL recorded counts, allowed or not: disallowed links are remembered too, and must not grow without end.
        self.seen_cap = 10 * options.max_pages + 1_000
        self.origins: set[str] = {_origin(start)}  # at most MAX_ORIGINS (plus same-site redirect targets)
        self.queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self.robots: dict[str, RobotFileParser] = {}
        self.robots_locks: dict[str, asyncio.Lock] = {}
        self.host_locks: dict[str, asyncio.Lock] = {}
        self.host_last: dict[str, float] = {}
        self.claimed = 0  # fetches started: never more than max_pages

    async def run(self) -> Stats:
        transport = netguard.GuardedTransport(
            allow_private=self.options.allow_private,
            inner=self.network_backend,
            limits=httpx.Limits(max_connections=self.options.concurrency * 2),
        )
        async with httpx.AsyncClient(
            # identity: httpx inflates a whole read with no output bound, so a compressed body is never
            # read at all (a 1.7 KB gzip-of-gzip is gigabytes); a server that compresses anyway is refused.
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            timeout=httpx.Timeout(self.options.timeout),
            transport=transport,
            follow_redirects=False,
            trust_env=False,
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
            except Exception:
                # Never let one page end a worker: with every worker gone the queue never drains
                # and the crawl would hang holding its slot.
                log.exception("crawl worker: %s", url)
            finally:
                self.queue.task_done()

    async def _visit(self, url: str, depth: int) -> None:
        self.stats.current_url = url
        if self.on_fetch:
            await self.on_fetch(url, self.stats)
        page = await self._fetch(url, depth)
        if page.links and depth < self.options.max_depth:
            try:
                await self._discover(page.links, depth + 1)
            except Exception as error:
                page.error = page.error or f"following its links: {type(error).__name__}: {error}"
        # Counted with no await before it is handed over: a stop in between never counts a page it did not record.
        self.stats.done += 1
        await self.on_page(page, self.stats)

    async def _discover(self, candidates: list[str], depth: int) -> None:
        """Queue the page's new links that robots.txt allows, up to the discovery cap."""
        budget = min(self._discovery_cap() - self.stats.discovered, self.seen_cap - len(self.seen))
        if budget <= 0:
            return
        fresh = []
        for link in candidates:
            if link in self.seen:
                continue
            origin = _origin(link)
            if origin not in self.origins:
                if len(self.origins) >= MAX_ORIGINS:
                    continue  # not a site this crawl may reach any more
                self.origins.add(origin)
            fresh.append(link)
            if len(fresh) >= budget:
                break  # trimmed before any robots.txt fetch: no more robots.txt than pages that could follow
        if not fresh:
            return
        allowed = await self._allowed_many(fresh)
        for link, ok in zip(fresh, allowed, strict=True):
            if self.stats.discovered >= self._discovery_cap() or len(self.seen) >= self.seen_cap:
                break
            if link in self.seen:
                continue  # another worker queued it meanwhile
            self.seen.add(link)
            if ok:  # robots.txt forbids the others: not pages of this crawl
                self.stats.discovered += 1
                await self.queue.put((link, depth))

    def _discovery_cap(self) -> int:
        # Discovering far beyond max_pages only inflates the denominator of the percentage.
        return self.options.max_pages

    def _in_scope(self, url: str) -> bool:
        if self.options.same_site_only and not links.same_site(url, self.start):
            return False
        return url == self.start or self.patterns.allow(url)

    # -- robots.txt ----------------------------------------------------------------------------

    async def _allowed_many(self, targets: list[str]) -> list[bool]:
        """robots.txt's verdict for each URL (matching in a thread: a robots.txt may hold many rules)."""
        for origin in dict.fromkeys(map(_origin, targets)):
            lock = self.robots_locks.setdefault(origin, asyncio.Lock())
            async with lock:  # one fetch per origin, however many workers ask at once
                if origin not in self.robots:
                    self.robots[origin] = await self._load_robots(origin)
        robots = self.robots
        return await asyncio.to_thread(lambda: [robots[_origin(url)].can_fetch(USER_AGENT, url) for url in targets])

    async def _load_robots(self, origin: str) -> RobotFileParser:
        text, note = "", ""
        try:
            async with asyncio.timeout(self.options.fetch_deadline):
                async with self.client.stream("GET", origin + "/robots.txt") as response:
                    if response.status_code == 200 and (encoding := _compressed(response)):
                        note = f"{origin}/robots.txt refused (compressed: {encoding}): no rules apply"
                    elif response.status_code == 200:
                        body, complete = await self._read_capped(response, self.options.robots_max_bytes)
                        if not complete:
                            # As RFC 9309 allows: the rules within the first N bytes apply, the rest is ignored.
                            body = body[: body.rfind(b"\n") + 1]
                            note = f"{origin}/robots.txt is over {self.options.robots_max_bytes} bytes: only its first lines apply"
                        text = body.decode("utf-8", errors="replace")
        except Exception as error:  # unreachable, refused, too slow, invalid host: nothing is forbidden
            log.debug("robots.txt of %s unavailable: %s: %s", origin, type(error).__name__, error)
        lines = text.splitlines()
        if len(lines) > MAX_ROBOTS_LINES:
            lines = lines[:MAX_ROBOTS_LINES]  # the rules in the part read apply, as for one over the byte cap
            note = note or f"{origin}/robots.txt has over {MAX_ROBOTS_LINES} lines: only its first lines apply"
        parser = RobotFileParser()
        await asyncio.to_thread(parser.parse, lines)
        if note and self.on_note:
            await self.on_note(note)
        return parser

    # -- fetching ------------------------------------------------------------------------------

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

    @staticmethod
    async def _read_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
        """The body, streamed, up to ``cap`` bytes; False when there was more (the rest is never read)."""
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > cap:
                return bytes(body[:cap]), False
        return bytes(body), True

    async def _fetch(self, url: str, depth: int) -> Page:
        """Fetch and parse one page; every failure is the page's ``error``, never an exception."""
        page = Page(url=url, depth=depth, final_url=url)
        deadline = self.options.fetch_deadline
        try:
            for _ in range(MAX_REDIRECTS + 1):
                if not (await self._allowed_many([page.final_url]))[0]:
                    page.error = "disallowed by robots.txt"
                    return page
                await self._polite(page.final_url)
                if self.should_stop():  # asked while this worker waited (robots.txt, politeness): send nothing more
                    page.error = "crawl stopped"
                    return page
                target, body, encoding = None, b"", None
                async with asyncio.timeout(deadline):  # the request and its whole body, however it drips
                    async with self.client.stream("GET", page.final_url) as response:
                        page.status_code = response.status_code
                        if response.status_code in REDIRECT_STATUSES and "location" in response.headers:
                            target = links.normalize(response.headers["location"], page.final_url)
                        elif reason := self._unreadable(response):
                            page.error = reason
                            return page
                        else:
                            declared = response.headers.get("content-length", "")
                            if declared.isdigit() and int(declared) > self.options.max_bytes:
                                body, complete = b"", False  # said so up front: not a byte read
                            else:
                                body, complete = await self._read_capped(response, self.options.max_bytes)
                            if not complete:
                                page.error = f"larger than {self.options.max_bytes} bytes"
                                return page
                            encoding = response.encoding or "utf-8"
                if encoding is not None:
                    return await asyncio.to_thread(self._parse, page, body, encoding)
                if target is None or not links.same_site(target, self.start):
                    page.error = f"redirect off the site to {target}"
                    return page
                page.final_url = target
                self.seen.add(target)
            page.error = "too many redirects"
        except TimeoutError:
            page.error = f"fetch deadline: not fetched within {deadline:g} s"
        except httpx.TimeoutException:
            page.error = f"timed out after {self.options.timeout:g} s"
        except netguard.Refused as refused:
            page.error = str(refused)
        except Exception as error:  # an HTTP error, an invalid URL or host name (IDNA), …: this page's, never the crawl's
            page.error = f"{type(error).__name__}: {error}"
        return page

    @staticmethod
    def _unreadable(response: httpx.Response) -> str:
        if response.status_code >= 400:
            return f"HTTP {response.status_code}"
        if encoding := _compressed(response):
            return f"compressed response refused: {encoding}"
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("text/html", "application/xhtml+xml"):
            return f"not HTML ({kind or 'no content type'})"
        return ""

    def _parse(self, page: Page, body: bytes, encoding: str) -> Page:
        """Title, text and in-scope links of an HTML body. CPU-bound: runs in a worker thread."""
        html = body.decode(web_encoding(encoding), errors="replace")
        page.content_hash = hashlib.sha256(body).hexdigest()
        tree = LexborHTMLParser(html)
        title = tree.css_first("title")
        page.title = title.text(strip=True)[:500] if title else ""
        body_node = tree.body
        if body_node is not None:
            for node in body_node.css("script, style, noscript"):
                node.decompose()
            page.text = body_node.text(separator=" ", strip=True)
        found: dict[str, None] = {}  # ordered, without repeats
        for seen_anchors, anchor in enumerate(tree.css("a[href]")):
            if len(found) >= MAX_LINKS_PER_PAGE or (seen_anchors % 100 == 0 and self.should_stop()):
                break
            link = links.normalize(anchor.attributes.get("href") or "", page.final_url)
            if link is not None and link not in found and self._in_scope(link):
                found[link] = None
        page.links = list(found)
        return page
