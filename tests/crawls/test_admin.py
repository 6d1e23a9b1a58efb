"""The admin's "Stop crawl" action really stops a running crawl, and says so."""

import asyncio
import time

from crawls.models import CrawlJob
from tests.conftest import db
from tests.projects.test_admin import admin  # noqa: F401  (the logged-in admin session fixture)
from tests.support import factories as f


async def test_stop_crawl_action_stops_a_running_crawl(admin, connect, http, site, crawler_requests):  # noqa: F811
    alice = await db(f.make_user)("alice")
    token = await db(f.token_for)(alice)
    response = await http.post(
        "/api/crawls/", json={"url": site.url + "/", "max_pages": 500, "max_depth": 50}, headers={"Authorization": f"Bearer {token}"}
    )
    progress_id = response.json()["progress_id"]
    client = await connect(alice)
    assert (await client.call("crawl_subscribe", {"progress_id": progress_id}))["ok"]
    await client.wait_for("crawl_progress", lambda s: s["pagesDone"] >= 2, timeout=10)
    job = await db(CrawlJob.objects.get)(progress_id=progress_id)

    fields = await admin.form("/admin/crawls/crawljob/", "form#changelist-form")
    csrf = dict(fields)["csrfmiddlewaretoken"]
    await admin.post(
        "/admin/crawls/crawljob/", [("csrfmiddlewaretoken", csrf), ("action", "stop_crawls"), ("_selected_action", str(job.pk))]
    )

    await client.wait_for("crawl:stopping", timeout=2)
    await client.wait_for("crawl:stopped", timeout=3)
    stopped_at = time.monotonic()
    assert (await db(CrawlJob.objects.get)(pk=job.pk)).status == "cancelled"
    assert crawler_requests and [url for sent, url in crawler_requests if sent > stopped_at] == []
    await asyncio.sleep(0.5)  # requests sent before the stop may still be arriving: then nothing more comes
    received = site.request_count()
    await asyncio.sleep(0.3)
    assert site.request_count() == received
