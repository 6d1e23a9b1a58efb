"""A small local website for crawler tests to crawl instead of the internet.

Served by the stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (a free port), in a
daemon thread of the test process. Every request is logged with its
``time.monotonic()`` so tests can assert what a crawler fetched (and what it
did not: ``/private/*`` is forbidden by robots.txt, the external URL is off-site).

Site map (``pages`` = N, at least 3)::

    /robots.txt         User-agent: * / Disallow: /private/
    /                   "Home": links /page/1, page/2 (relative), /page/1#top, /page/3?,
                        /slow, /big, /old-page, /missing, /files/report.pdf,
                        /private/secret, /private/other, http://example.invalid/elsewhere
    /page/k             "Page k": links /page/k+1, /page/k+2 (when <= N) and /;
                        /page/1 also links /deep/1
    /deep/k             "Deep k", k = 1..6: links /deep/k+1 (when <= 6) and /
    /old-page           301 -> /new-page
    /new-page           "New page"
    /slow               HTML, answers after ``slow_seconds``
    /big                HTML, > 3 MB
    /missing            404
    /files/report.pdf   application/pdf
    /private/secret, /private/other   HTML (forbidden by robots.txt)

Pages for abuse tests, linked from nowhere (start a crawl there)::

    /drip               HTML that drips one byte every ``drip_interval`` s, for ever (until stop())
    /bad-links          links whose hosts are invalid or fail IDNA (``BAD_LINKS``), and /page/1
    /aaa                links /aaa/<``long_a`` × "a">b<k> (k = 1..5), each an HTML page linking back
    /links?to=URL&to=…  links to the given URLs (e.g. loopback spellings for SSRF tests)

``robots_bytes`` (0 = the small default) makes robots.txt that many bytes: the real rules,
then comment lines, written in chunks.

``depths`` (an extra beyond the core API) maps every same-site, robots-allowed
path a correct crawler reaches (HTML pages, /slow, /big, /missing, the PDF) to
its link depth from "/"; /old-page appears as its target /new-page, at the depth
of the link. It is computed by a BFS over the same link tables the server
renders, so depth-limit tests need not hard-code depths.

Manual use: ``.venv/bin/python -m tests.support.test_site [pages]``.
"""

from __future__ import annotations

import functools
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urljoin, urlsplit

HTML_TYPE = "text/html; charset=utf-8"
DEEP_PAGES = 6
BIG_MIN_BYTES = 3 * 1024 * 1024
EXTERNAL_URL = "http://example.invalid/elsewhere"
PRIVATE_PREFIX = "/private/"
PRIVATE_PATHS = ["/private/secret", "/private/other"]
ROBOTS_TXT = f"User-agent: *\nDisallow: {PRIVATE_PREFIX}\n"
BAD_LINKS = [
    "http://xn--ls8h.example/",  # valid punycode of an emoji: refused by IDNA 2008
    "http://xn--zz.example/",  # not valid punycode
    "http://a..b/",  # an empty label
    "http://[::1",  # an unclosed IPv6 literal
    "http://" + "a" * 64 + ".example/",  # a label over 63 characters
    "http://exa mple.example/",
]
PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
)


def _html(title: str, body: str, links: list[str]) -> bytes:
    items = "\n".join(f'    <li><a href="{href}">{href}</a></li>' for href in links)
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        f'  <meta charset="utf-8">\n  <title>{title}</title>\n'
        "</head>\n<body>\n"
        f"  <h1>{title}</h1>\n  <p>{body}</p>\n  <ul>\n{items}\n  </ul>\n"
        "</body>\n</html>\n"
    ).encode()


@functools.cache
def _big_page() -> bytes:
    paragraph = "<p>" + "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 16 + "</p>\n"
    count = BIG_MIN_BYTES // len(paragraph) + 200  # comfortably over 3 MB
    body = (
        '<!DOCTYPE html>\n<html>\n<head>\n  <meta charset="utf-8">\n  <title>Big</title>\n</head>\n<body>\n'
        "<h1>Big</h1>\n" + paragraph * count + '<p><a href="/">Home</a></p>\n</body>\n</html>\n'
    ).encode()
    assert len(body) > BIG_MIN_BYTES
    return body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, site: TestSite) -> None:
        self.site = site
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's socket.getfqdn(), which may do a slow reverse DNS lookup.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    def handle_error(self, request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        if self.site._stopping.is_set() or isinstance(exc, OSError):
            return  # client went away / server stopping: not worth a traceback
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response sets Content-Length
    timeout = 30  # idle keep-alive connections end eventually
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:  # log every well-formed request, whatever its method
            self.server.site._record(self.path)
        return ok

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, send_body: bool) -> None:
        site = self.server.site
        path = urlsplit(self.path).path or "/"
        if path == "/drip":
            return self._drip()
        if path == "/robots.txt" and site.robots_bytes:
            return self._big_robots(send_body)
        if path == "/links":
            targets = [v for k, v in parse_qsl(urlsplit(self.path).query) if k == "to"]
            return self._send(200, {"Content-Type": HTML_TYPE}, _html("Links", "Links as asked.", targets), send_body)
        if path == "/bad-links":
            return self._send(200, {"Content-Type": HTML_TYPE}, _html("Bad links", "Hosts that fail.", [*BAD_LINKS, "/page/1"]), send_body)
        if path == "/aaa" or path.startswith("/aaa/"):
            links = [f"/aaa/{'a' * site.long_a}b{k}" for k in range(1, 6)] if path == "/aaa" else ["/aaa"]
            return self._send(200, {"Content-Type": HTML_TYPE}, _html("Long paths", "a" * 10, links), send_body)
        if path == site.slow_path:
            site._stopping.wait(site.slow_seconds)
            if site._stopping.is_set():
                self.close_connection = True
                return
        status, headers, body = site._response(path)
        self._send(status, headers, body, send_body)

    def _send(self, status: int, headers: dict[str, str], body: bytes, send_body: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _drip(self) -> None:
        """Headers at once, then one byte per ``drip_interval`` for ever: only a total deadline ends it."""
        site = self.server.site
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", HTML_TYPE)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        self.wfile.write(b"<!DOCTYPE html><html><head><title>Drip</title></head><body>")
        self.wfile.flush()
        while not site._stopping.wait(site.drip_interval):
            self.wfile.write(b"x")  # a client that went away ends this with an OSError (logged nowhere)
            self.wfile.flush()

    def _big_robots(self, send_body: bool) -> None:
        site = self.server.site
        head = ROBOTS_TXT.encode()
        line = b"# " + b"padding " * 12 + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(site.robots_bytes))
        self.end_headers()
        if not send_body:
            return
        self.wfile.write(head)
        left = site.robots_bytes - len(head)
        chunk = line * (65536 // len(line))
        while left > 0 and not site._stopping.is_set():
            part = chunk[:left]
            self.wfile.write(part)
            left -= len(part)


class TestSite:
    """The local site. ``TestSite(pages=30).start()`` ... ``.stop()``."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, pages: int = 30, slow_seconds: float = 1.5) -> None:
        if pages < 3:
            raise ValueError("pages must be >= 3 (home links /page/1, page/2 and /page/3?)")
        self.pages = pages
        self.slow_seconds = slow_seconds
        self.drip_interval = 0.1
        self.robots_bytes = 0
        self.long_a = 5000
        self.url = ""
        self.port = 0
        self.requests: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

        self.slow_path = "/slow"
        self.big_path = "/big"
        self.redirect_path = "/old-page"
        self.redirect_target = "/new-page"
        self.missing_path = "/missing"
        self.binary_path = "/files/report.pdf"
        self.external_url = EXTERNAL_URL
        self.disallowed = list(PRIVATE_PATHS)
        self.depths = self._crawl_depths()
        self.html_pages = [
            "/",
            *(f"/page/{k}" for k in range(1, pages + 1)),
            *(f"/deep/{k}" for k in range(1, DEEP_PAGES + 1)),
            self.redirect_target,
        ]
        # Self-check: the explicit list is what a BFS over the rendered links reaches.
        reached = {p for p in self.depths if p not in (self.slow_path, self.big_path) and self._is_html(p) and self._response(p)[0] == 200}
        assert reached == set(self.html_pages), reached ^ set(self.html_pages)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> TestSite:
        if self._server is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        self._server = _Server(self)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"test-site-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._stopping.set()  # wakes a /slow handler mid-sleep
        server.shutdown()
        server.server_close()
        with server.connections_lock:
            connections = list(server.connections)
        for conn in connections:  # end keep-alive connections so nothing is served after stop()
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if thread is not None:
            thread.join(timeout=2)

    def __enter__(self) -> TestSite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request log -------------------------------------------------------------------------

    def _record(self, path: str) -> None:
        with self._lock:
            self.requests.append((time.monotonic(), path))

    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def requests_after(self, t: float) -> list[str]:
        """Paths (as sent, query string included) requested at monotonic time > t."""
        with self._lock:
            return [path for when, path in self.requests if when > t]

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- content -----------------------------------------------------------------------------

    def _links(self, path: str) -> list[str]:
        """The hrefs, as written in the page's HTML."""
        if path == "/":
            return [
                "/page/1",
                "/page/1#top",  # duplicate via fragment
                "page/2",  # relative
                "/page/3?",  # empty query string: same as /page/3
                self.slow_path,
                self.big_path,
                self.redirect_path,
                self.missing_path,
                self.binary_path,
                *self.disallowed,
                self.external_url,
            ]
        if n := self._number(path, "/page/", self.pages):
            links = [f"/page/{k}" for k in (n + 1, n + 2) if k <= self.pages]
            if n == 1:
                links.append("/deep/1")
            return [*links, "/"]
        if n := self._number(path, "/deep/", DEEP_PAGES):
            return [*([f"/deep/{n + 1}"] if n < DEEP_PAGES else []), "/"]
        if path in (self.redirect_target, self.slow_path, *self.disallowed):
            return ["/"]
        return []

    @staticmethod
    def _number(path: str, prefix: str, maximum: int) -> int:
        """k for ``prefix + str(k)`` with 1 <= k <= maximum, else 0."""
        rest = path.removeprefix(prefix)
        if rest == path or not rest.isdigit() or rest != str(int(rest)):
            return 0
        k = int(rest)
        return k if 1 <= k <= maximum else 0

    def _is_html(self, path: str) -> bool:
        return path not in (self.binary_path, "/robots.txt")

    def _title(self, path: str) -> str | None:
        if path == "/":
            return "Home"
        if n := self._number(path, "/page/", self.pages):
            return f"Page {n}"
        if n := self._number(path, "/deep/", DEEP_PAGES):
            return f"Deep {n}"
        return {
            self.redirect_target: "New page",
            self.slow_path: "Slow",
            "/private/secret": "Secret",
            "/private/other": "Other private",
        }.get(path)

    def _response(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if path == "/robots.txt":
            return 200, {"Content-Type": "text/plain; charset=utf-8"}, ROBOTS_TXT.encode()
        if path == self.redirect_path:
            return (
                301,
                {"Location": self.redirect_target, "Content-Type": HTML_TYPE},
                _html("Moved", "Moved permanently.", [self.redirect_target]),
            )
        if path == self.binary_path:
            return 200, {"Content-Type": "application/pdf"}, PDF_BYTES
        if path == self.big_path:
            return 200, {"Content-Type": HTML_TYPE}, _big_page()
        title = self._title(path)
        if title is None:
            return 404, {"Content-Type": HTML_TYPE}, _html("Not found", f"Nothing at {path}.", ["/"])
        if n := self._number(path, "/page/", self.pages):
            body = f"This is page {n} body text, numbered {n} of {self.pages}."
        else:
            body = f"This is the {title.lower()} page."
        return 200, {"Content-Type": HTML_TYPE}, _html(title, body, self._links(path))

    def _crawl_depths(self) -> dict[str, int]:
        """BFS over the link tables as a correct crawler would: same-site, robots honoured,
        fragments dropped, an empty query dropped, redirects followed (target at the link's depth)."""
        base = "http://site.test"
        depths: dict[str, int] = {"/": 0}
        queue = deque(["/"])
        while queue:
            page = queue.popleft()
            if not self._is_html(page) or self._response(page)[0] != 200:
                continue
            for href in self._links(page):
                parts = urlsplit(urljoin(base + page, href))
                if f"{parts.scheme}://{parts.netloc}" != base:
                    continue
                path = parts.path + (f"?{parts.query}" if parts.query else "")
                for _ in range(5):  # follow redirects
                    status, headers, _body = self._response(path)
                    if status not in (301, 302, 303, 307, 308):
                        break
                    path = urlsplit(urljoin(base + path, headers["Location"])).path
                if path.startswith(PRIVATE_PREFIX) or path in depths:
                    continue
                depths[path] = depths[page] + 1
                queue.append(path)
        return depths


if __name__ == "__main__":
    site = TestSite(pages=int(sys.argv[1]) if len(sys.argv) > 1 else 30).start()
    print(site.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        site.stop()
