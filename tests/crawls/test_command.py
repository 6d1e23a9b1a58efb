"""``manage.py crawl`` in its own process while clients watch through the bus (embedded and Redis)."""

import asyncio
import signal
import socket
import sys
import time

import pytest

from crawls.models import CrawlJob
from tests.conftest import db
from tests.support import factories as f
from tests.support.processes import ROOT, django_env
from tests.support.py_client import PyClient


async def crawl_process(database_url, site, *args, **env):
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        "crawl",
        site.url + "/",
        "--user",
        "alice",
        *args,
        cwd=ROOT,
        env=django_env(database_url, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def watch(server, alice, progress_id):
    client = PyClient()
    await client.connect(server.url, auth={"token": await db(f.token_for)(alice)})
    assert (await client.call("crawl_subscribe", {"progress_id": progress_id}))["ok"]
    return client


def final(state):
    return state["status"] in ("completed", "cancelled", "failed")


@pytest.mark.parametrize("path", ["embedded", "redis"])
async def test_a_browser_watches_a_command_crawl_live(spawn, database_url, site, path, request):
    redis_url = request.getfixturevalue("redis_server").url if path == "redis" else None
    server = spawn(REDIS_URL=redis_url)
    alice = await db(f.make_user)("alice")
    proc = await crawl_process(
        database_url, site, "--max-pages", "40", "--max-depth", "20", REDIS_URL=redis_url, REALTIME_SERVER_URL=server.url
    )
    progress_id = (await proc.stdout.readline()).decode().strip()  # printed first
    client = await watch(server, alice, progress_id)
    try:
        last = await client.wait_for("crawl_progress", final, timeout=30)
        stdout, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        assert (last["status"], last["percentage"], last["pagesDone"]) == ("completed", 100, 40)
        states = client.received("crawl_progress")
        live = [s["percentage"] for s in states[1:]]  # after the snapshot, in order
        assert live == sorted(live) and len(states) >= 2
        assert "%" in stderr.decode() and "completed: 40 pages" in stderr.decode()
    finally:
        await client.close()


async def long_crawl_watched(spawn, database_url, site):
    """A command crawl slow enough to stop mid-way, and a client watching it once it has fetched a few pages."""
    server = spawn()
    alice = await db(f.make_user)("alice")
    proc = await crawl_process(
        database_url, site, "--max-pages", "500", "--max-depth", "50", "--no-progress", REALTIME_SERVER_URL=server.url, CRAWL_DELAY="0.05"
    )
    progress_id = (await proc.stdout.readline()).decode().strip()
    client = await watch(server, alice, progress_id)
    await client.wait_for("crawl_progress", lambda s: s["pagesDone"] >= 3, timeout=20)
    return proc, progress_id, client


async def test_sigint_cancels_cleanly_and_says_stopped(spawn, database_url, site):
    proc, progress_id, client = await long_crawl_watched(spawn, database_url, site)
    try:
        proc.send_signal(signal.SIGINT)
        await client.wait_for("crawl:stopping", timeout=5)
        stopped = await client.wait_for("crawl:stopped", timeout=5)
        stopped_at = time.monotonic()
        assert stopped["status"] == "cancelled"
        await proc.communicate()
        assert proc.returncode == 130
        job = await db(CrawlJob.objects.get)(progress_id=progress_id)
        assert job.status == "cancelled"
        await asyncio.sleep(0.3)
        assert site.requests_after(stopped_at) == []
    finally:
        await client.close()


async def test_a_browser_stops_a_command_crawl_within_a_second(spawn, database_url, site):
    proc, progress_id, client = await long_crawl_watched(spawn, database_url, site)
    try:
        asked = time.monotonic()
        assert (await client.call("crawl_stop", {"progress_id": progress_id}))["ok"]
        await client.wait_for("crawl:stopping", timeout=2)
        await client.wait_for("crawl:stopped", timeout=3)
        stopped_at = time.monotonic()
        assert stopped_at - asked < 1.0
        await proc.communicate()
        assert proc.returncode == 130
        await asyncio.sleep(0.3)
        assert site.requests_after(stopped_at) == []
    finally:
        await client.close()


async def test_a_bad_url_fails_the_command_clearly(database_url):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        "crawl",
        "not a url",
        cwd=ROOT,
        env=django_env(database_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await proc.communicate()
    assert proc.returncode != 0 and "Enter a valid URL" in stderr.decode()


async def test_server_start_marks_crawls_of_dead_processes_interrupted(spawn, database_url):
    alice = await db(f.make_user)("alice")
    host = socket.gethostname()
    dead = await db(CrawlJob.objects.create)(
        start_url="http://127.0.0.1:9/", started_by=alice, status="crawling", runner=f"{host}:999999999"
    )
    from django.utils import timezone

    alive = await db(CrawlJob.objects.create)(
        start_url="http://127.0.0.1:9/", started_by=alice, status="crawling", runner="elsewhere:1", heartbeat_at=timezone.now()
    )
    spawn()
    dead_job, alive_job = await db(CrawlJob.objects.get)(pk=dead.pk), await db(CrawlJob.objects.get)(pk=alive.pk)
    assert (dead_job.status, dead_job.error) == ("failed", "interrupted")
    assert alive_job.status == "crawling"
