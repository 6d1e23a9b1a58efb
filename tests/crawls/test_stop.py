"""One stop sequence for every door (``crawl_stop``, REST, admin, ``manage.py crawl``): its answers, and a rolled-back stop."""

import asyncio
import contextlib
import uuid

from django.db import transaction

from crawls import services
from crawls.models import CrawlJob
from tests.conftest import db
from tests.support import factories as f


class Rollback(Exception):
    pass


async def started(connect, http, site, user):
    """A crawl of ``user``'s, watched by a client of theirs once it has fetched two pages."""
    headers = {"Authorization": f"Bearer {await db(f.token_for)(user)}"}
    response = await http.post("/api/crawls/", json={"url": site.url + "/", "max_pages": 500, "max_depth": 50}, headers=headers)
    progress_id = response.json()["progress_id"]
    client = await connect(user)
    assert (await client.call("crawl_subscribe", {"progress_id": progress_id}))["ok"]
    await client.wait_for("crawl_progress", lambda s: s["pagesDone"] >= 2, timeout=10)
    return progress_id, client, headers


async def test_the_rest_stop_says_stopping_then_stopped_and_refuses_with_the_reason(connect, http, site, settings):
    settings.CRAWL_DELAY = 0.05  # slow enough to be stopped mid-way
    alice, mallory = await db(f.make_user)("alice"), await db(f.make_user)("mallory")
    progress_id, client, headers = await started(connect, http, site, alice)
    intruder = {"Authorization": f"Bearer {await db(f.token_for)(mallory)}"}
    for who, crawl in ((intruder, progress_id), (headers, str(uuid.uuid4()))):  # someone else's, and unknown: the same answer
        for method, path in (("post", f"/api/crawls/{crawl}/stop/"), ("get", f"/api/crawls/{crawl}/")):
            response = await getattr(http, method)(path, headers=who)
            assert (response.status_code, response.json()) == (404, {"detail": "crawl not found"})

    response = await http.post(f"/api/crawls/{progress_id}/stop/", headers=headers)
    assert (response.status_code, response.json()) == (202, {"progress_id": progress_id, "status": "stopping"})
    assert (await client.wait_for("crawl:stopping"))["status"] == "stopping"
    assert (await client.wait_for("crawl:stopped"))["status"] == "cancelled"
    assert (await db(CrawlJob.objects.get)(progress_id=progress_id)).status == "cancelled"
    again = await http.post(f"/api/crawls/{progress_id}/stop/", headers=headers)
    assert (again.status_code, again.json()) == (409, {"detail": "crawl already cancelled"})


async def test_a_stop_in_a_rolled_back_transaction_stops_nothing_and_says_nothing(connect, http, site, settings):
    settings.CRAWL_DELAY = 0.05
    alice = await db(f.make_user)("alice")
    progress_id, client, _ = await started(connect, http, site, alice)
    job = await db(CrawlJob.objects.get)(progress_id=progress_id)

    def stop_then_roll_back() -> None:
        with contextlib.suppress(Rollback), transaction.atomic():
            services.crawl_stop(job=job)
            raise Rollback

    await db(stop_then_roll_back)()
    done = (await db(CrawlJob.objects.get)(pk=job.pk)).pages_done
    # Still running: more pages come, and the flag was never stored.
    await client.wait_for("crawl_progress", lambda s: s["status"] == "crawling" and s["pagesDone"] > done + 1, timeout=10)
    assert (await db(CrawlJob.objects.get)(pk=job.pk)).cancel_requested is False
    # A real stop now: the one and only crawl:stopping is its own.
    assert (await client.call("crawl_stop", {"progress_id": progress_id}))["ok"]
    await client.wait_for("crawl:stopped")
    assert len(client.received("crawl:stopping")) == 1


async def test_a_stop_asked_elsewhere_is_seen_after_the_database_was_away(connect, http, site, settings, monkeypatch):
    """The runner polls the stop flag that other processes set. Errors while the database is away (a PostgreSQL
    restart) do not end the polling: the stop asked once it is back is still seen."""
    from django.db import OperationalError

    from crawls import selectors

    settings.CRAWL_DELAY = 0.05
    alice = await db(f.make_user)("alice")
    real, failures = selectors.crawl_stop_requested, []

    def away_for_three_polls(*, job_id: int) -> bool:
        if len(failures) < 3:
            failures.append(job_id)
            raise OperationalError("the database is restarting (test)")
        return real(job_id=job_id)

    monkeypatch.setattr(selectors, "crawl_stop_requested", away_for_three_polls)
    progress_id, client, _ = await started(connect, http, site, alice)
    async with asyncio.timeout(10):
        while len(failures) < 3:  # noqa: ASYNC110  (the runner's polls: nothing to await)
            await asyncio.sleep(0.05)
    await db(CrawlJob.objects.filter(progress_id=progress_id).update)(cancel_requested=True)  # as another process's stop
    assert (await client.wait_for("crawl:stopped", timeout=10))["status"] == "cancelled"


async def test_a_queued_crawl_sees_a_stop_asked_elsewhere_after_the_database_was_away(connect, http, site, settings, monkeypatch):
    """The same for a crawl still waiting for a slot: its polling of the flag survives the database's absence."""
    from django.db import OperationalError

    from crawls import selectors

    from .test_live import start, until_final

    settings.CRAWL_DELAY = 0.05
    alice = await db(f.make_user)("alice")
    token = await db(f.token_for)(alice)
    client = await connect(alice)
    real, away, failed = selectors.crawl_stop_requested, [False], set()

    def flaky(*, job_id: int) -> bool:
        if away[0]:
            failed.add(job_id)
            raise OperationalError("the database is restarting (test)")
        return real(job_id=job_id)

    monkeypatch.setattr(selectors, "crawl_stop_requested", flaky)
    ids = [await start(http, token, site.url + "/", max_pages=400, max_depth=50) for _ in range(3)]  # 2 slots
    for progress_id in ids:
        await client.call("crawl_subscribe", {"progress_id": progress_id})
    await client.wait_for("crawl_progress", lambda s: s["progressId"] == ids[2] and s["status"] == "queued")
    queued = await db(CrawlJob.objects.get)(progress_id=ids[2])
    away[0] = True
    async with asyncio.timeout(10):
        while queued.pk not in failed:  # noqa: ASYNC110  (the queued job's polls: nothing to await)
            await asyncio.sleep(0.05)
    away[0] = False
    await db(CrawlJob.objects.filter(pk=queued.pk).update)(cancel_requested=True)  # as another process's stop
    assert (await until_final(client, ids[2]))["status"] == "cancelled"
    for progress_id in ids[:2]:
        await client.call("crawl_stop", {"progress_id": progress_id})
        await until_final(client, progress_id)
