"""Crawls against hostile input, through the live server: linear-time patterns, byte and time caps,
SSRF refusals, links that break URL parsing, the per-user limit and the crawl deadline."""

import asyncio
import socket
import sys
import time
from urllib.parse import quote

import pytest

from crawls.live import CRAWLS
from crawls.models import CrawlJob
from tests.conftest import db
from tests.support import factories as f
from tests.support.processes import ROOT, django_env

FINAL = ("completed", "cancelled", "failed")


async def user_token(name="alice", **kwargs):
    user = await db(f.make_user)(name, **kwargs)
    return {"Authorization": f"Bearer {await db(f.token_for)(user)}"}


async def post(http, headers, url, **options):
    return await http.post("/api/crawls/", json={"url": url, **options}, headers=headers)


async def start(http, headers, url, **options):
    response = await post(http, headers, url, **options)
    assert response.status_code == 202, response.text
    return response.json()["progress_id"]


async def until_final(http, headers, progress_id, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = (await http.get(f"/api/crawls/{progress_id}/", headers=headers)).json()
        if state["status"] in FINAL:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"crawl {progress_id} did not end: {state}")


class Latency:
    """GETs an API endpoint back to back while something runs; the worst answer time is the figure."""

    def __init__(self, http, headers, path="/api/crawls/"):
        self.http, self.headers, self.path = http, headers, path
        self.times: list[float] = []

    async def __aenter__(self):
        self._task = asyncio.create_task(self._probe())
        return self

    async def __aexit__(self, *exc):
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _probe(self):
        while True:
            began = time.perf_counter()
            response = await self.http.get(self.path, headers=self.headers)
            assert response.status_code == 200
            self.times.append(time.perf_counter() - began)
            await asyncio.sleep(0.02)

    @property
    def worst_ms(self) -> float:
        return 1000 * max(self.times)


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


# -- patterns ----------------------------------------------------------------------------------


async def test_catastrophic_patterns_run_in_linear_time_while_the_api_answers(http, site):
    headers = await user_token()
    site.long_a = 1_900  # under the 2,000-character URL cap; Python's re would need ~2^1900 steps for (a+)+$
    async with Latency(http, headers) as latency:
        progress_id = await start(
            http, headers, site.url + "/aaa", include_patterns=["(a|aa)+b", "^http"], exclude_patterns=["(a+)+$", "(x+x+)+y"]
        )
        state = await until_final(http, headers, progress_id)
    assert state["status"] == "completed"
    fetched = sorted(path_of(p["url"]) for p in state["pages"] if not p["error"])
    assert fetched == ["/aaa"] + sorted(f"/aaa/{'a' * 1_900}b{k}" for k in range(1, 6))
    print(f"\ncatastrophic patterns, 6 pages with 1,900-character paths: worst API latency {latency.worst_ms:.1f} ms")


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1", "invalid escape sequence"),  # a backreference
        (r"foo(?=bar)", "invalid perl operator"),  # a lookahead
        ("(unclosed", "missing )"),
        ("a" * 501, "longer than 500 characters"),
    ],
)
async def test_patterns_re2_cannot_run_are_refused_naming_them(http, pattern, why):
    headers = await user_token()
    response = await post(http, headers, "http://127.0.0.1:9/", exclude_patterns=["ok", pattern])
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "invalid input"
    [error] = body["errors"]
    assert error["field"] == "exclude_patterns" and why in error["message"] and pattern[:40] in error["message"]
    assert await db(CrawlJob.objects.count)() == 0


# -- bytes and time ----------------------------------------------------------------------------


async def test_a_slow_drip_page_and_a_huge_robots_txt_cannot_hold_a_crawl(http, site, settings):
    settings.CRAWL_FETCH_DEADLINE = 1.0
    site.robots_bytes = 50_000_000  # 50 MB; the crawler reads CRAWL_ROBOTS_MAX_BYTES (500 KB) of it
    headers = await user_token()
    start_url = site.url + "/links?" + "&".join(f"to={quote(p)}" for p in ["/drip", "/private/secret", "/page/1"])
    before = rss_kb()
    began = time.monotonic()
    progress_id = await start(http, headers, start_url, max_depth=1)
    state = await until_final(http, headers, progress_id)
    elapsed = time.monotonic() - began
    grown = rss_kb() - before
    assert state["status"] == "completed"
    pages = {path_of(p["url"]): p for p in state["pages"]}
    assert pages["/drip"]["error"] == "fetch deadline: not fetched within 1 s"
    assert pages["/page/1"]["error"] == "" and pages["/page/1"]["title"] == "Page 1"
    assert "/private/secret" not in pages  # the rules in the part read still apply (RFC 9309)
    assert "robots.txt is over 500000 bytes" in state["log"]
    assert [p for _, p in site.requests].count("/robots.txt") == 1
    print(f"\nslow drip + 50 MB robots.txt: crawl ended in {elapsed:.1f} s; process RSS grew {grown / 1024:.1f} MB")
    assert grown < 40 * 1024  # nowhere near the 50 MB offered (loose: the test process allocates too)


async def test_a_crawl_past_its_deadline_fails_and_frees_its_slot(http, site, settings):
    settings.CRAWL_DEADLINE = 1.5
    headers = await user_token()
    progress_id = await start(http, headers, site.url + "/drip")
    state = await until_final(http, headers, progress_id)
    assert (state["status"], state["error"]) == ("failed", "deadline exceeded")
    assert "failed: deadline exceeded" in state["log"]
    assert CRAWLS.running(progress_id) is None  # its run has ended: nothing of it is left in this process
    settings.CRAWL_DEADLINE = 60
    # Both slots are free again: two crawls run at once and complete.
    second = [await start(http, headers, site.url + "/", max_pages=3) for _ in range(2)]
    for progress_id in second:
        assert (await until_final(http, headers, progress_id))["status"] == "completed"


# -- crawls always end -------------------------------------------------------------------------


async def test_links_that_break_url_parsing_become_page_errors_and_the_crawl_ends(http, site, fake_dns):
    headers = await user_token()
    progress_id = await start(http, headers, site.url + "/bad-links", same_site_only=False, max_depth=1, max_pages=20)
    state = await until_final(http, headers, progress_id)
    assert state["status"] == "completed" and state["error"] == ""
    pages = {p["url"]: p for p in state["pages"]}
    assert pages[site.url + "/page/1"]["error"] == ""
    broken = {url: page["error"] for url, page in pages.items() if not url.startswith(site.url)}
    assert len(broken) == 5, broken  # "http://[::1" is not a URL at all: never a page
    assert all(broken.values()), broken  # IDNA errors, an invalid host, a name that does not resolve
    print("\n" + "\n".join(f"{url[:50]:<50} {error[:90]}" for url, error in sorted(broken.items())))
    assert CRAWLS.running(progress_id) is None  # its run has ended: nothing of it is left in this process
    # Its slot is free: a next crawl runs.
    assert (await until_final(http, headers, await start(http, headers, site.url + "/", max_pages=2)))["status"] == "completed"


# -- SSRF --------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.2", "localhost", "[::1]", "2130706433", "0x7f.1"])
async def test_a_start_url_on_a_loopback_address_is_refused(http, site, settings, host):
    settings.CRAWL_ALLOW_PRIVATE_NETWORKS = False
    headers = await user_token()
    response = await post(http, headers, f"http://{host}:{site.port}/")
    assert response.status_code == 400, response.text
    [error] = response.json()["errors"]
    # An IP literal the user typed is echoed with the reason (the API reads 2130706433 and 0x7f.1 as 127.0.0.1);
    # a name is not given away by what it resolves to.
    expected = {
        "127.0.0.2": "127.0.0.2 is a loopback address",
        "[::1]": "::1 is a loopback address",
        "2130706433": "127.0.0.1 is a loopback address",
        "0x7f.1": "127.0.0.1 is a loopback address",
        "localhost": "localhost resolves to a non-public address",
    }[host]
    assert error["field"] == "url" and error["message"] == f"refused: {expected}"
    assert await db(CrawlJob.objects.count)() == 0 and site.requests == []


async def test_a_name_rebound_to_loopback_after_the_check_is_refused_at_connect(http, site, settings, fake_dns):
    settings.CRAWL_ALLOW_PRIVATE_NETWORKS = False
    answers = iter([["93.184.216.34"]])  # public for the API's check, loopback for every connection after
    fake_dns["rebind.test"] = lambda: next(answers, ["127.0.0.1"])
    headers = await user_token()
    progress_id = await start(http, headers, f"http://rebind.test:{site.port}/")
    state = await until_final(http, headers, progress_id)
    assert state["status"] == "completed"
    [page] = state["pages"]
    assert page["error"] == "refused: rebind.test resolves to a non-public address"  # its address is not given away
    assert site.requests == []  # not even robots.txt


async def test_the_command_refuses_a_loopback_start_url_clearly(database_url):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        "crawl",
        "http://127.0.0.2:9/",
        cwd=ROOT,
        env=django_env(database_url, CRAWL_ALLOW_PRIVATE_NETWORKS="false"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    assert proc.returncode == 1 and stdout == b""
    assert "CommandError: url: refused: 127.0.0.2 is a loopback address" in stderr.decode()


# -- per-user limit ----------------------------------------------------------------------------


async def test_crawls_per_user_are_limited_in_the_database(http, site, settings):
    settings.CRAWL_MAX_PER_USER = 2
    settings.CRAWL_FETCH_DEADLINE = 60
    alice, staff = await user_token("alice"), await user_token("root", staff=True)
    running = [await start(http, alice, site.url + "/drip") for _ in range(2)]
    refused = await post(http, alice, site.url + "/")
    assert refused.status_code == 429
    assert refused.json() == {"detail": "too many crawls: 2 queued or running (at most 2 per user); wait for one to end or stop one"}
    # Staff are limited too (their own crawls count, not alice's).
    staff_ids = [await start(http, staff, site.url + "/drip") for _ in range(2)]
    assert (await post(http, staff, site.url + "/")).status_code == 429
    for progress_id in running:
        assert (await http.post(f"/api/crawls/{progress_id}/stop/", headers=alice)).status_code == 202
    for progress_id in running:
        assert (await until_final(http, alice, progress_id))["status"] == "cancelled"
    assert (await post(http, alice, site.url + "/", max_pages=1)).status_code == 202
    for progress_id in staff_ids:
        await http.post(f"/api/crawls/{progress_id}/stop/", headers=staff)
        await until_final(http, staff, progress_id)


def test_hosts_here_resolve_without_dns(fake_dns):
    """The stub itself: numeric spellings parse locally, unknown names fail like NXDOMAIN."""
    assert socket.getaddrinfo("2130706433", 80)[0][4][0] == "127.0.0.1"
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("xn--ls8h.example", 80)
