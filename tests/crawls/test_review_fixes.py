"""Regressions from a hostile review of the crawler: compression bombs, link amplification, costly RE2
programs, robots.txt fan-out, hostile charsets, special-purpose addresses, huge robots.txt rule sets.

A small loopback HTTP server serves exactly the hostile responses; names other than loopback go
through the stub resolver (``fake_dns``) and never leave the machine.
"""

import asyncio
import gzip
import socket
from collections.abc import Callable

import pytest

from crawls import crawler as crawler_module
from crawls import links, netguard
from crawls.crawler import Crawler, Options, Page, web_encoding
from crawls.models import CrawlJob
from tests.conftest import db

from .test_abuse import post, user_token

Route = tuple[dict[str, str], bytes]


class Site:
    """A loopback HTTP/1.1 server: ``routes[path]`` or ``default(path)`` gives (headers, body); 404 otherwise."""

    def __init__(self, routes: dict[str, Route], default: Callable[[str], Route | None] | None = None) -> None:
        self.routes, self.default = routes, default
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.writers: set[asyncio.StreamWriter] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while line := await reader.readline():
                path = line.split()[1].decode()
                headers = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                self.requests.append((path, headers))
                route = self.routes.get(path) or (self.default(path) if self.default else None)
                status, (head, body) = (200, route) if route else (404, ({"content-type": "text/plain"}, b"not found"))
                lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in head.items()), f"content-length: {len(body)}"]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
                await writer.drain()
        except (ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for writer in self.writers:  # keep-alive connections left open: closed, their handlers read EOF and return
            writer.close()
        await asyncio.sleep(0.05)

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


HTML = {"content-type": "text/html"}
TEXT = {"content-type": "text/plain"}
NO_ROBOTS = {"/robots.txt": (TEXT, b"")}


async def crawl(start: str, **options) -> tuple[Crawler, dict[str, Page], list[str]]:
    pages: dict[str, Page] = {}
    notes: list[str] = []

    async def on_page(page: Page, stats) -> None:
        pages["/" + page.url.split("/", 3)[3]] = page

    async def on_note(note: str) -> None:
        notes.append(note)

    settings = {"max_pages": 20, "max_depth": 5, "timeout": 5, "fetch_deadline": 10, "allow_private": True, **options}
    crawler = Crawler(start, Options(**settings), on_page=on_page, on_note=on_note)
    await crawler.run()
    return crawler, pages, notes


# -- 1. compression bombs ----------------------------------------------------------------------


async def test_compressed_pages_are_refused_unread_and_identity_is_asked_for():
    bomb = gzip.compress(gzip.compress(b"\0" * 20_000_000))  # 20 MB of zeros in ~250 bytes: gzip of gzip
    routes = {
        **NO_ROBOTS,
        "/": (HTML, b"<a href=/bomb>b</a><a href=/one>o</a><a href=/br>br</a><a href=/plain>p</a>"),
        "/bomb": ({**HTML, "content-encoding": "gzip, gzip"}, bomb),
        "/one": ({**HTML, "content-encoding": "gzip"}, gzip.compress(b"<title>gz</title>")),
        "/br": ({**HTML, "content-encoding": "br"}, b"\x0b\x02\x80hello\x03"),
        "/plain": ({**HTML, "content-encoding": "identity"}, b"<title>Plain</title>"),
    }
    async with Site(routes) as base:
        _, pages, _ = await crawl(base + "/")
    assert pages["/bomb"].error == "compressed response refused: gzip, gzip"
    assert pages["/one"].error == "compressed response refused: gzip"
    assert pages["/br"].error == "compressed response refused: br"
    assert (pages["/plain"].error, pages["/plain"].title) == ("", "Plain")  # identity is not compression
    assert not pages["/bomb"].content_hash  # its body was never read


async def test_a_compressed_robots_txt_counts_as_none():
    robots = gzip.compress(b"User-agent: *\nDisallow: /\n")
    routes = {
        "/robots.txt": ({**TEXT, "content-encoding": "gzip"}, robots),
        "/": (HTML, b"<a href=/page>p</a>"),
        "/page": (HTML, b"<title>Page</title>"),
    }
    async with Site(routes) as base:
        _, pages, notes = await crawl(base + "/")
    assert pages["/page"].title == "Page"  # no rules apply: it was unreadable
    assert any("robots.txt refused (compressed: gzip)" in note for note in notes), notes


async def test_every_request_asks_for_identity():
    routes = {**NO_ROBOTS, "/": (HTML, b"<title>t</title>")}
    site = Site(routes)
    async with site as base:
        await crawl(base + "/")
    assert site.requests and all(headers.get("accept-encoding") == "identity" for _, headers in site.requests)


# -- 2. link amplification ---------------------------------------------------------------------


def many_links(path: str) -> Route | None:
    """Every page links to 3,000 distinct pages under it (and /x/…, which robots.txt disallows)."""
    if not path.startswith("/p"):
        return None
    links = "".join(f"<a href={path}/{i}>.</a><a href=/x{path}/{i}>.</a>" for i in range(1_500))
    return HTML, f"<title>{path}</title>{links}".encode()


async def test_links_per_page_and_urls_remembered_are_bounded():
    site = Site({"/robots.txt": (TEXT, b"User-agent: *\nDisallow: /x\n")}, default=many_links)
    async with site as base:
        crawler, pages, _ = await crawl(base + "/p", max_pages=10, max_depth=50, concurrency=1)
    assert len(pages) == 10
    assert all(len(page.links) == crawler_module.MAX_LINKS_PER_PAGE for page in pages.values())  # 3,000 offered
    assert crawler.seen_cap == 10 * 10 + 1_000
    assert len(crawler.seen) <= crawler.seen_cap  # 10 pages × 3,000 links were offered
    assert not any(path.startswith("/x") for path in site.paths())
    print(f"\n10 pages × 3,000 links: {len(crawler.seen)} URLs remembered (cap {crawler.seen_cap})")


async def test_disallowed_links_count_against_the_memory_cap():
    """Links robots.txt forbids never count toward discovery, so only the ``seen`` cap bounds them."""

    def only_disallowed(path: str) -> Route | None:
        if not path.startswith("/p"):
            return None
        n = int(path[2:] or 0)
        links = "".join(f"<a href=/x/{n}/{i}>.</a>" for i in range(900))
        return HTML, f"<a href=/p{n + 1}>next</a>{links}".encode()

    site = Site({"/robots.txt": (TEXT, b"User-agent: *\nDisallow: /x\n")}, default=only_disallowed)
    async with site as base:
        crawler, pages, _ = await crawl(base + "/p0", max_pages=30, max_depth=50, concurrency=1)
    assert len(crawler.seen) <= crawler.seen_cap == 1_300  # 30 pages × 900 disallowed links were offered
    assert not any(path.startswith("/x") for path in site.paths())


# -- 3. RE2 program size -----------------------------------------------------------------------


def test_patterns_with_a_huge_re2_program_are_refused():
    costly = "(?:.?.?.?.?){1000}z"  # RE2 program of 36,005 instructions: ~110 ms per 2 KB URL
    with pytest.raises(ValueError) as refused:
        links.compile_pattern(costly)
    assert str(refused.value) == f"pattern too complex: '{costly}' (RE2 program size 36005, at most 1000)"
    with pytest.raises(ValueError, match="too complex"):
        Crawler("http://127.0.0.1:9/", Options(exclude_patterns=["ok", costly]), on_page=None)
    # Ordinary patterns, even long ones, stay well under the bound.
    for pattern in (r"/page/\d+$", "a" * 500, r"^https?://[^/]+/(blog|news)/\d{4}/"):
        links.compile_pattern(pattern)


def test_patterns_together_are_bounded_and_the_one_over_is_named():
    many = [f"{'a' * 497}{k:03d}" for k in range(10)]  # 504 RE2 instructions each: 5,040 in all
    errors = links.pattern_errors(include=many[:6], exclude=many[6:])
    assert list(errors) == ["exclude_patterns"]
    [message] = errors["exclude_patterns"]
    assert message.startswith(f"patterns too complex together: '{many[9][:40]}'") and "at most 5000" in message
    assert links.pattern_errors(include=many[:5], exclude=many[5:9]) == {}


async def test_the_api_refuses_a_too_complex_pattern_naming_it(http):
    headers = await user_token()
    response = await post(http, headers, "http://127.0.0.1:9/", include_patterns=["(?:.?.?.?.?){1000}z"])
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["field"] == "include_patterns" and "too complex" in error["message"] and "(?:.?.?.?.?){1000}z" in error["message"]
    assert await db(CrawlJob.objects.count)() == 0


# -- 4. robots.txt fan-out ---------------------------------------------------------------------


@pytest.fixture
def asked(fake_dns, monkeypatch) -> list[str]:
    """Every name the crawler resolves (through the stub: other names fail as NXDOMAIN, nothing leaves)."""
    names: list[str] = []
    stub = socket.getaddrinfo

    def recording(host, *args, **kwargs):
        names.append(host.decode() if isinstance(host, bytes) else str(host))
        return stub(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    return names


@pytest.mark.parametrize(("max_pages", "bound"), [(3, 3), (500, crawler_module.MAX_ORIGINS)])
async def test_robots_txt_is_fetched_for_no_more_origins_than_the_budget_or_the_cap(asked, max_pages, bound):
    anchors = "".join(f"<a href=http://h{i}.test/>h</a>" for i in range(2_000))
    async with Site({**NO_ROBOTS, "/": (HTML, anchors.encode())}) as base:
        crawler, pages, _ = await crawl(base + "/", max_pages=max_pages, max_depth=1, same_site_only=False, timeout=2)
    other_hosts = {name for name in asked if name.endswith(".test")}
    assert len(other_hosts) <= bound  # 2,000 origins were offered
    assert len(crawler.origins) <= bound and len(crawler.robots) <= bound
    assert crawler.stats.done <= bound
    print(f"\nmax_pages={max_pages}, one page linking to 2,000 hosts: {len(other_hosts)} names resolved, {len(crawler.robots)} robots.txt")


# -- 5. charsets -------------------------------------------------------------------------------


def test_only_web_encodings_are_used_to_decode():
    assert web_encoding("punycode") == web_encoding("rot13") == web_encoding("no-such-charset") == web_encoding(None) == "utf-8"
    assert web_encoding("idna") == web_encoding("uu_codec") == web_encoding("utf-7") == "utf-8"
    assert web_encoding("Shift_JIS") == "shift_jis" and web_encoding("windows-1252") == "cp1252"
    assert web_encoding("ISO-8859-15") == "iso8859-15" and web_encoding("latin-1") == "iso8859-1"


async def test_a_page_declaring_punycode_is_read_as_utf8():
    hostile = ("é" * 20_000).encode("punycode")  # seconds of quadratic decoding if decoded as punycode
    routes = {
        **NO_ROBOTS,
        "/": (HTML, b"<a href=/puny>p</a><a href=/latin>l</a>"),
        "/puny": ({"content-type": "text/html; charset=punycode"}, "<title>Caf\u00e9</title>".encode() + hostile),
        "/latin": ({"content-type": "text/html; charset=windows-1252"}, "<title>Caf\u00e9 \u20ac</title>".encode("cp1252")),
    }
    async with Site(routes) as base:
        _, pages, _ = await crawl(base + "/")
    assert pages["/puny"].title == "Café" and pages["/puny"].error == ""
    assert pages["/latin"].title == "Café €"


# -- 6. special-purpose addresses --------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "192.0.0.8",  # IETF protocol assignments: "global" to Python 3.11.7's ipaddress
        "192.0.0.170",
        "fec0::1",  # site-local: "global" to Python 3.11.7's ipaddress
        "100.64.0.1",
        "100.127.255.254",
        "198.18.0.1",
        "198.19.255.1",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "198.51.100.7",
        "203.0.113.9",
        "2001:db8::1",
        "::ffff:192.0.0.8",
        "64:ff9b::c000:8",  # NAT64 of 192.0.0.8
        "64:ff9b:1::1",
    ],
)
def test_special_purpose_addresses_are_not_public(address):
    assert netguard.why_not_public(address) is not None
    with pytest.raises(netguard.Refused, match=r"^refused: .* is "):
        netguard.check([address])


def test_a_name_is_refused_without_saying_what_it_resolves_to(fake_dns):
    fake_dns["intranet.test"] = ["93.184.216.34", "192.0.0.8"]
    with pytest.raises(netguard.Refused) as refused:
        netguard.check_url("http://intranet.test/")
    assert str(refused.value) == "refused: intranet.test resolves to a non-public address"
    with pytest.raises(netguard.Refused, match=r"^refused: 100\.64\.0\.1 is not a public address$"):
        netguard.check_url("http://100.64.0.1/")  # a literal the user typed may be echoed


# -- 7. robots.txt rule count ------------------------------------------------------------------


async def test_only_the_first_robots_txt_lines_are_parsed():
    rules = "".join(f"Disallow: /nope{i}\n" for i in range(crawler_module.MAX_ROBOTS_LINES + 500))
    robots = f"User-agent: *\n{rules}Disallow: /late\n".encode()
    routes = {
        "/robots.txt": (TEXT, robots),
        "/": (HTML, b"<a href=/nope5>n</a><a href=/late>l</a>"),
        "/nope5": (HTML, b"<title>no</title>"),
        "/late": (HTML, b"<title>Late</title>"),
    }
    site = Site(routes)
    async with site as base:
        _, pages, notes = await crawl(base + "/")
    assert "/nope5" not in site.paths()  # a rule within the first lines applies
    assert pages["/late"].title == "Late"  # a rule past them does not
    assert any(f"over {crawler_module.MAX_ROBOTS_LINES} lines" in note for note in notes), notes
