"""The crawler alone, against the local test site."""

import asyncio

from crawls.crawler import Crawler, Options, Page
from crawls.links import normalize


def test_normalize_strips_fragments_default_ports_and_empty_queries():
    assert normalize("HTTP://Example.COM:80/a#top") == "http://example.com/a"
    assert normalize("/page/3?", "http://h:8000/x") == "http://h:8000/page/3"
    assert normalize("page/2", "http://h/dir/") == "http://h/dir/page/2"
    assert normalize("https://h") == "https://h/"
    assert normalize("mailto:a@b") is None and normalize("javascript:void(0)") is None


async def crawl(site, **options):
    pages: list[Page] = []

    async def on_page(page, stats):
        pages.append(page)

    crawler = Crawler(
        site.url + "/", Options(**{"max_pages": 100, "max_depth": 50, "timeout": 5, "allow_private": True, **options}), on_page=on_page
    )
    stats = await crawler.run()
    return pages, stats


def path(url: str) -> str:
    return "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"


async def test_crawls_every_page_of_the_site_once_honouring_robots(site):
    pages, stats = await crawl(site)
    by_path = {path(p.url): p for p in pages}
    ok = sorted(path(p.final_url) for p in pages if p.status_code == 200 and not p.error)
    assert ok == sorted(site.html_pages + [site.slow_path])  # /big is over the size cap
    assert len(pages) == len(by_path) == stats.done  # each URL once
    assert by_path[site.redirect_path].final_url.endswith("/new-page")
    assert by_path[site.missing_path].error == "HTTP 404"
    assert by_path[site.binary_path].error == "not HTML (application/pdf)"
    assert "larger than" in by_path[site.big_path].error
    assert by_path["/page/2"].title == "Page 2" and "page 2 body" in by_path["/page/2"].text
    requested = [p for _, p in site.requests]
    assert not any(p.startswith("/private/") for p in requested)
    assert requested.count("/page/1") == 1 and requested.count("/robots.txt") == 1


async def test_max_pages_and_max_depth(site):
    pages, _ = await crawl(site, max_pages=5)
    assert len(pages) == 5
    pages, _ = await crawl(site, max_depth=1)
    assert max(p.depth for p in pages) == 1
    assert {path(p.url) for p in pages} >= {"/", "/page/1", "/page/2", "/page/3"}
    assert "/page/4" not in {path(p.url) for p in pages}


async def test_a_slow_page_times_out_and_is_recorded(site):
    pages, _ = await crawl(site, timeout=0.5)
    slow = next(p for p in pages if path(p.url) == site.slow_path)
    assert slow.error.startswith("timed out")
    assert len([p for p in pages if p.status_code == 200 and not p.error]) == len(site.html_pages)


async def test_include_and_exclude_patterns(site):
    pages, _ = await crawl(site, include_patterns=[r"/page/\d+$"], exclude_patterns=[r"/page/1\d"])
    paths = {path(p.url) for p in pages}
    assert "/" in paths and "/page/9" in paths and "/page/12" not in paths and "/deep/1" not in paths


async def test_cancelling_stops_at_once_with_no_further_requests(site):
    started = asyncio.Event()

    async def on_page(page, stats):
        if stats.done >= 3:
            started.set()

    crawler = Crawler(site.url + "/", Options(max_pages=100, max_depth=50, delay=0.05, allow_private=True), on_page=on_page)
    task = asyncio.create_task(crawler.run())
    await started.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    stopped_at = len(site.requests)
    await asyncio.sleep(0.3)
    assert len(site.requests) == stopped_at
