"""Crawls started from the API, watched and stopped over Socket.IO, against the local test site."""

import asyncio
import time

from crawls.models import CrawledPage, CrawlJob
from realtime.testing import unstamped
from tests.conftest import db
from tests.support import factories as f


async def start(http, token, url, **options):
    response = await http.post("/api/crawls/", json={"url": url, **options}, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.text
    return response.json()["progress_id"]


async def until_final(client, progress_id, timeout=30):
    return await client.wait_for(
        "crawl_progress", lambda s: s["progressId"] == progress_id and s["status"] in ("completed", "cancelled", "failed"), timeout=timeout
    )


def percentages(client, progress_id):
    return [s["percentage"] for s in client.received("crawl_progress") if s["progressId"] == progress_id]


async def test_a_crawl_reports_exact_monotonic_progress_to_its_starter(connect, http, site):
    alice = await db(f.make_user)("alice")
    token = await db(f.token_for)(alice)
    client = await connect(alice)
    progress_id = await start(http, token, site.url + "/", max_pages=60, max_depth=20)
    assert (await client.call("crawl_subscribe", {"progress_id": progress_id}))["ok"]
    final = await until_final(client, progress_id)

    assert final["status"] == "completed" and final["percentage"] == 100
    received = percentages(client, progress_id)
    assert received == sorted(received) and all(0 <= p <= 100 for p in received)
    states = [s for s in client.received("crawl_progress") if s["progressId"] == progress_id]
    # The first may be a live broadcast (stamped) rather than the join's snapshot: the subscriber is in the room
    # before its snapshot is read, and the crawl goes on meanwhile (on PostgreSQL, usually).
    assert set(unstamped(states[0])) == {
        "progressId",
        "status",
        "percentage",
        "pagesDone",
        "pagesDiscovered",
        "currentUrl",
        "log",
        "error",
        "startUrl",
        "timestamp",
    }
    assert states[-1]["timestamp"].endswith("Z")
    job = await db(CrawlJob.objects.get)(progress_id=progress_id)
    stored = await db(
        lambda: sorted("/" + p.final_url.split("/", 3)[3] for p in CrawledPage.objects.filter(job=job, status_code=200, error=""))
    )()
    assert stored == sorted(site.html_pages + [site.slow_path])
    assert final["pagesDone"] == job.pages_done == await db(CrawledPage.objects.filter(job=job).count)()


async def test_a_late_subscriber_gets_the_state_at_once(connect, http, site):
    alice = await db(f.make_user)("alice")
    token = await db(f.token_for)(alice)
    first = await connect(alice)
    progress_id = await start(http, token, site.url + "/", max_pages=5)
    await first.call("crawl_subscribe", {"progress_id": progress_id})
    await until_final(first, progress_id)
    late = await connect(alice)  # e.g. after a reload, once it is over
    assert (await late.call("crawl_subscribe", {"progress_id": progress_id}))["ok"]
    state = await late.wait_for("crawl_progress")
    assert (state["status"], state["percentage"], state["pagesDone"]) == ("completed", 100, 5)
    response = await http.get(f"/api/crawls/{progress_id}/", headers={"Authorization": f"Bearer {token}"})
    assert response.json()["status"] == "completed" and len(response.json()["pages"]) == 5


async def test_stop_takes_effect_within_a_second_and_nothing_is_fetched_after_stopped(connect, http, site, crawler_requests):
    alice = await db(f.make_user)("alice")
    token = await db(f.token_for)(alice)
    client = await connect(alice)
    progress_id = await start(http, token, site.url + "/", max_pages=500, max_depth=50)
    assert (await client.call("crawl_subscribe", {"progress_id": progress_id}))["ok"]
    await client.wait_for("crawl_progress", lambda s: s["pagesDone"] >= 2, timeout=10)

    asked = time.monotonic()
    ack = await client.call("crawl_stop", {"progress_id": progress_id})
    assert ack == {"ok": True, "progress_id": progress_id, "status": "stopping"}
    stopping = await client.wait_for("crawl:stopping")
    stopped = await client.wait_for("crawl:stopped", timeout=5)
    stopped_at = time.monotonic()
    assert unstamped(stopping) == {"progressId": progress_id, "status": "stopping", "message": stopping["message"]}
    assert stopped["status"] == "cancelled" and stopped["progressId"] == progress_id and "timestamp" in stopped
    assert stopped_at - asked < 1.0
    final = await until_final(client, progress_id)
    assert final["status"] == "cancelled"
    job = await db(CrawlJob.objects.get)(progress_id=progress_id)
    assert job.status == "cancelled" and job.finished_at is not None
    assert crawler_requests and [url for sent, url in crawler_requests if sent > stopped_at] == []
    await asyncio.sleep(0.5)  # requests sent before the stop may still be arriving: then nothing more comes
    received, pages = site.request_count(), await db(CrawledPage.objects.filter(job=job).count)()
    await asyncio.sleep(0.3)
    assert site.request_count() == received and await db(CrawledPage.objects.filter(job=job).count)() == pages
    # Stopping it again, or an unknown crawl, is refused with the reason.
    assert await client.call("crawl_stop", {"progress_id": progress_id}) == {"ok": False, "error": "crawl already cancelled"}


async def test_only_the_starter_or_staff_may_watch_or_stop(connect, http, site):
    alice, mallory, staff = await db(f.make_user)("alice"), await db(f.make_user)("mallory"), await db(f.make_user)("staff", staff=True)
    progress_id = await start(http, await db(f.token_for)(alice), site.url + "/", max_pages=300, max_depth=50)
    intruder = await connect(mallory)
    assert await intruder.call("crawl_subscribe", {"progress_id": progress_id}) == {"ok": False, "error": "unknown progress id"}
    assert await intruder.call("crawl_stop", {"progress_id": progress_id}) == {"ok": False, "error": "unknown progress id"}
    response = await http.get(f"/api/crawls/{progress_id}/", headers={"Authorization": f"Bearer {await db(f.token_for)(mallory)}"})
    assert response.status_code == 404
    assert (await db(CrawlJob.objects.get)(progress_id=progress_id)).cancel_requested is False
    admin = await connect(staff)
    assert (await admin.call("crawl_stop", {"progress_id": progress_id}))["ok"]
    await admin.call("crawl_subscribe", {"progress_id": progress_id})
    await until_final(admin, progress_id)


async def test_extra_crawls_wait_as_queued_and_say_so(connect, http, site, settings):
    alice = await db(f.make_user)("alice")
    token = await db(f.token_for)(alice)
    client = await connect(alice)
    ids = [await start(http, token, site.url + "/", max_pages=400, max_depth=50) for _ in range(3)]  # 2 slots
    for progress_id in ids:
        await client.call("crawl_subscribe", {"progress_id": progress_id})
    waiting = await client.wait_for("crawl_progress", lambda s: s["progressId"] == ids[2] and s["status"] == "queued")
    assert "waiting for a free crawl slot" in waiting["log"]
    for progress_id in ids:
        await client.call("crawl_stop", {"progress_id": progress_id})
    for progress_id in ids:
        assert (await until_final(client, progress_id))["status"] == "cancelled"
