"""Runs a crawl job in this process: progress out, cancellation in, the job's row kept current.

The same code runs a crawl as a background task of the server (started from the
API) and in a ``manage.py crawl`` process; events go out through realtime's bus
either way. Stopping works from anywhere: ``crawl_stop`` sets ``cancel_requested``
(and, in the server process that runs the crawl, cancels it at once); every
runner also polls that flag, so a crawl in another process stops within 0.2 s.
``crawl:stopped`` goes out only after the crawl's requests are cancelled and its
row says ``cancelled``.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from realtime import broadcasts
from realtime.coalesce import ProgressStream

from . import services
from .crawler import Crawler, Options, Page, Stats
from .models import CrawlJob, CrawlStatus
from .schemas import progress_json

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2


@dataclass
class Active:
    """A crawl running in this process."""

    stop_requested: bool = False
    crawl: asyncio.Task[Stats] | None = None
    state: dict[str, Any] | None = None  # the last progress sent: what a new subscriber gets at once
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)

    def stop(self) -> None:
        """Thread-safe: stop fetching and cancel in-flight requests."""
        self.loop.call_soon_threadsafe(self._stop)

    def _stop(self) -> None:
        self.stop_requested = True
        if self.crawl is not None:
            self.crawl.cancel()


# The crawls this process runs, by progress id (process state, not client state).
active: dict[str, Active] = {}
_slots: asyncio.Semaphore | None = None


def stop_local(progress_id: str) -> bool:
    """Stop the crawl if this process runs it; False if it runs elsewhere (its runner polls the flag)."""
    crawl = active.get(progress_id)
    if crawl is not None:
        crawl.stop()
    return crawl is not None


def _slots_here() -> asyncio.Semaphore:
    global _slots
    if _slots is None:
        _slots = asyncio.Semaphore(settings.CRAWL_MAX_CONCURRENT)
    return _slots


def launch(job_id: int) -> asyncio.Task[str]:
    """Start a queued job as a background task of the running server, within its crawl slots."""
    return asyncio.get_running_loop().create_task(_queued(job_id), name=f"crawl-{job_id}")


async def _queued(job_id: int) -> str:
    slots = _slots_here()
    if slots.locked():
        job = await CrawlJob.objects.aget(pk=job_id)
        message = f"queued: waiting for a free crawl slot ({settings.CRAWL_MAX_CONCURRENT} running)"
        await sync_to_async(services.crawl_save_progress)(job_id=job_id, log=message)
        await broadcasts.broadcast_crawl_progress(job.progress_id, progress_json(job, log=message))
    # Wait for a slot, noticing a stop (and keeping the heartbeat) meanwhile. Polled rather than
    # wait_for(acquire()): a timeout racing a grant could leak a slot on Python 3.11.
    while slots.locked():
        await asyncio.sleep(POLL_SECONDS)
        job = await CrawlJob.objects.aget(pk=job_id)
        if job.cancel_requested:
            return await _finish(job, Stats(discovered=0), ProgressStream(partial(_send, job)), CrawlStatus.CANCELLED, "")
        await sync_to_async(services.crawl_save_progress)(job_id=job_id)
    await slots.acquire()  # free now, and no await since the check: this does not wait
    try:
        return await run(job_id)
    finally:
        slots.release()


async def run(job_id: int) -> str:
    """Run the job to its end; returns its final status."""
    job = await CrawlJob.objects.select_related(None).aget(pk=job_id)
    progress_id = str(job.progress_id)
    me = active[progress_id] = Active()
    stream = ProgressStream(lambda state: _send(job, state, me))
    try:
        return await _run(job, me, stream)
    finally:
        active.pop(progress_id, None)


def current_state(progress_id: str) -> dict[str, Any] | None:
    """The last progress this process sent for a crawl it runs (read on the event loop, no waiting)."""
    crawl = active.get(progress_id)
    return crawl.state if crawl is not None else None


async def _send(job: CrawlJob, state: dict[str, Any], me: Active | None = None) -> None:
    await sync_to_async(services.crawl_save_progress)(
        job_id=job.pk,
        status=state["status"],
        percentage=state["percentage"],
        pages_done=state["pagesDone"],
        pages_discovered=state["pagesDiscovered"],
        current_url=state["currentUrl"][:2000],
        log=state["log"][:500],
        error=state["error"],
    )
    if me is not None:
        me.state = state  # no await between this and the emit: a subscriber gets this or a newer one
    await broadcasts.broadcast_crawl_progress(job.progress_id, state)


def _percentage(stats: Stats) -> float:
    return min(100.0, 100.0 * stats.done / max(stats.discovered, 1))


async def _run(job: CrawlJob, me: Active, stream: ProgressStream) -> str:
    if job.cancel_requested:
        me.stop_requested = True
    job.status, job.started_at, job.runner = CrawlStatus.CRAWLING, timezone.now(), services.runner_id()
    await sync_to_async(services.crawl_save_progress)(job_id=job.pk, status=job.status, runner=job.runner, started_at=job.started_at)
    await stream.update(progress_json(job, pages_discovered=1, log=f"crawling {job.start_url}"))

    def state(stats: Stats, message: str) -> dict[str, Any]:
        return progress_json(
            job,
            status=CrawlStatus.CRAWLING,
            percentage=_percentage(stats),
            pages_done=stats.done,
            pages_discovered=stats.discovered,
            current_url=stats.current_url,
            log=message,
        )

    async def on_fetch(url: str, stats: Stats) -> None:
        await stream.update(state(stats, f"fetching {url}"))

    async def on_page(page: Page, stats: Stats) -> None:
        await sync_to_async(services.crawl_record_page)(job_id=job.pk, page=page)
        outcome = page.error or f"{page.status_code} {page.title!r}"
        await stream.update(state(stats, f"{page.url}: {outcome}"))

    notes: list[str] = []

    async def on_note(note: str) -> None:
        notes.append(note)  # also in the final log: a note may be overtaken by the next progress at once
        await stream.update(state(crawler.stats, note), force=True)

    options = Options(
        max_pages=job.max_pages,
        max_depth=job.max_depth,
        same_site_only=job.same_site_only,
        include_patterns=job.include_patterns,
        exclude_patterns=job.exclude_patterns,
        concurrency=settings.CRAWL_CONCURRENCY,
        timeout=settings.CRAWL_TIMEOUT,
        delay=settings.CRAWL_DELAY,
        max_bytes=settings.CRAWL_MAX_BYTES,
        fetch_deadline=settings.CRAWL_FETCH_DEADLINE,
        robots_max_bytes=settings.CRAWL_ROBOTS_MAX_BYTES,
        allow_private=settings.CRAWL_ALLOW_PRIVATE_NETWORKS,
    )
    try:
        crawler = Crawler(
            job.start_url, options, on_page=on_page, on_fetch=on_fetch, on_note=on_note, should_stop=lambda: me.stop_requested
        )
    except ValueError as exc:  # e.g. a pattern stored before RE2 was required: the job ends, it never hangs
        return await _finish(job, Stats(discovered=0), stream, CrawlStatus.FAILED, str(exc))
    me.crawl = asyncio.create_task(crawler.run())
    if me.stop_requested:
        me.crawl.cancel()
    watcher = asyncio.create_task(_watch_flag(job.pk, me))
    error = ""
    try:
        async with asyncio.timeout(settings.CRAWL_DEADLINE):  # on expiry the crawl task is cancelled with us
            await me.crawl
        status = CrawlStatus.CANCELLED if me.stop_requested else CrawlStatus.COMPLETED
    except TimeoutError:
        status, error = CrawlStatus.FAILED, "deadline exceeded"
    except asyncio.CancelledError:
        if not me.stop_requested:
            raise  # the process itself is shutting down
        status = CrawlStatus.CANCELLED
    except Exception as exc:
        log.exception("crawl %s failed", job.progress_id)
        status, error = CrawlStatus.FAILED, f"{type(exc).__name__}: {exc}"
    finally:
        watcher.cancel()
    return await _finish(job, crawler.stats, stream, status, error, notes=notes)


async def _finish(job: CrawlJob, stats: Stats, stream: ProgressStream, status: str, error: str, *, notes: Sequence[str] = ()) -> str:
    messages = {
        CrawlStatus.COMPLETED: f"completed: {stats.done} pages",
        CrawlStatus.CANCELLED: f"cancelled after {stats.done} pages",
        CrawlStatus.FAILED: f"failed: {error}",
    }
    message = "; ".join([messages[status], *notes])[:500]
    percentage = 100.0 if status == CrawlStatus.COMPLETED else _percentage(stats)
    final = progress_json(
        job,
        status=status,
        percentage=percentage,
        pages_done=stats.done,
        pages_discovered=stats.discovered,
        current_url="",
        log=message,
        error=error,
    )
    # The row says how it ended before anyone is told: a late subscriber sees the same.
    await sync_to_async(services.crawl_save_progress)(
        job_id=job.pk,
        finished_at=timezone.now(),
        status=status,
        percentage=final["percentage"],
        pages_done=stats.done,
        pages_discovered=stats.discovered,
        current_url="",
        log=final["log"],
        error=error,
    )
    await stream.close(final)
    if status == CrawlStatus.CANCELLED:
        await broadcasts.broadcast_crawl_progress(job.progress_id, services.stopped_payload(job), event="crawl:stopped")
    return status


async def _watch_flag(job_id: int, me: Active) -> None:
    """Poll the stop flag (a stop requested from any process) and keep the heartbeat fresh."""
    beats = 0
    while True:
        await asyncio.sleep(POLL_SECONDS)
        if await CrawlJob.objects.filter(pk=job_id, cancel_requested=True).aexists():
            me._stop()
            return
        beats += 1
        if beats % 10 == 0:
            await sync_to_async(services.crawl_save_progress)(job_id=job_id)
