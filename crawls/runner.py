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
from functools import partial
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from realtime import ProgressRun, runner_id

from . import selectors, services
from .crawler import Crawler, Options, Page, Stats
from .live import CRAWLS
from .models import CrawlJob, CrawlStatus
from .schemas import progress_json

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2

_slots: asyncio.Semaphore | None = None


def _slots_here() -> asyncio.Semaphore:
    global _slots
    if _slots is None:
        _slots = asyncio.Semaphore(settings.CRAWL_MAX_CONCURRENT)
    return _slots


def launch(job_id: int) -> asyncio.Task[str]:
    """Start a queued job as a background task of the running server, within its crawl slots."""
    return asyncio.get_running_loop().create_task(_queued(job_id), name=f"crawl-{job_id}")


async def _queued(job_id: int) -> str:
    job = await database_sync_to_async(CrawlJob.objects.get)(pk=job_id)
    # The run is open while the job waits: a watcher gets the queued state, and a stop reaches it at once.
    async with CRAWLS.run(job.progress_id, persist=partial(_persist, job.pk)) as progress:
        slots = _slots_here()
        if slots.locked():
            message = f"queued: waiting for a free crawl slot ({settings.CRAWL_MAX_CONCURRENT} running)"
            await progress.update(progress_json(job, log=message))
        # Wait for a slot, noticing a stop (and keeping the heartbeat) meanwhile. Polled rather than
        # wait_for(acquire()): a timeout racing a grant could leak a slot on Python 3.11.
        flag = _StopFlag(job_id)
        while slots.locked():
            await asyncio.sleep(POLL_SECONDS)
            if progress.stop_requested or await flag.asked(beat=True):
                return await _finish(job, Stats(discovered=0), progress, CrawlStatus.CANCELLED, "")
        await slots.acquire()  # free now, and no await since the check: this does not wait
        try:
            return await _run(job, progress)
        finally:
            slots.release()


async def run(job_id: int) -> str:
    """Run the job to its end in this process (``manage.py crawl``); returns its final status."""
    job = await database_sync_to_async(CrawlJob.objects.get)(pk=job_id)
    async with CRAWLS.run(job.progress_id, persist=partial(_persist, job.pk)) as progress:
        return await _run(job, progress)


async def _persist(job_id: int, state: dict[str, Any]) -> None:
    """Each state is stored before it is sent: a late subscriber reads what the others were sent."""
    await database_sync_to_async(services.crawl_save_progress)(
        job_id=job_id,
        status=state["status"],
        percentage=state["percentage"],
        pages_done=state["pagesDone"],
        pages_discovered=state["pagesDiscovered"],
        current_url=state["currentUrl"][:2000],
        log=state["log"][:500],
        error=state["error"],
    )


def _percentage(stats: Stats) -> float:
    return min(100.0, 100.0 * stats.done / max(stats.discovered, 1))


async def _run(job: CrawlJob, progress: ProgressRun) -> str:
    if job.cancel_requested:
        progress.stop()
    job.status, job.started_at, job.runner = CrawlStatus.CRAWLING, timezone.now(), runner_id()
    await database_sync_to_async(services.crawl_save_progress)(
        job_id=job.pk, status=job.status, runner=job.runner, started_at=job.started_at
    )
    await progress.update(progress_json(job, pages_discovered=1, log=f"crawling {job.start_url}"))

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
        await progress.update(state(stats, f"fetching {url}"))

    async def on_page(page: Page, stats: Stats) -> None:
        # Shielded: a stop arriving now still records the page its count already includes.
        await asyncio.shield(database_sync_to_async(services.crawl_record_page)(job_id=job.pk, page=page))
        outcome = page.error or f"{page.status_code} {page.title!r}"
        await progress.update(state(stats, f"{page.url}: {outcome}"))

    notes: list[str] = []

    async def on_note(note: str) -> None:
        notes.append(note)  # also in the final log: a note may be overtaken by the next progress at once
        await progress.update(state(crawler.stats, note), force=True)

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
            job.start_url, options, on_page=on_page, on_fetch=on_fetch, on_note=on_note, should_stop=lambda: progress.stop_requested
        )
    except ValueError as exc:  # e.g. a pattern stored before RE2 was required: the job ends, it never hangs
        return await _finish(job, Stats(discovered=0), progress, CrawlStatus.FAILED, str(exc))
    crawl = asyncio.create_task(crawler.run())
    progress.on_stop(crawl.cancel)  # in-flight requests cancelled at once (at once, too, if a stop came already)
    watcher = asyncio.create_task(_watch_flag(job.pk, progress))
    error = ""
    try:
        async with asyncio.timeout(settings.CRAWL_DEADLINE):  # on expiry the crawl task is cancelled with us
            await crawl
        status = CrawlStatus.CANCELLED if progress.stop_requested else CrawlStatus.COMPLETED
    except TimeoutError:
        status, error = CrawlStatus.FAILED, "deadline exceeded"
    except asyncio.CancelledError:
        if not progress.stop_requested:
            raise  # the process itself is shutting down
        status = CrawlStatus.CANCELLED
    except Exception as exc:
        log.exception("crawl %s failed", job.progress_id)
        status, error = CrawlStatus.FAILED, f"{type(exc).__name__}: {exc}"
    finally:
        watcher.cancel()
    return await _finish(job, crawler.stats, progress, status, error, notes=notes)


async def _finish(job: CrawlJob, stats: Stats, progress: ProgressRun, status: str, error: str, *, notes: Sequence[str] = ()) -> str:
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
    await database_sync_to_async(services.crawl_save_progress)(
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
    await progress.close(final)
    if status == CrawlStatus.CANCELLED:
        await progress.emit("crawl:stopped", services.stopped_payload(job))
    return status


async def _watch_flag(job_id: int, progress: ProgressRun) -> None:
    """Poll the stop flag (a stop requested from any process) and keep the heartbeat fresh."""
    flag, beats = _StopFlag(job_id), 0
    while True:
        await asyncio.sleep(POLL_SECONDS)
        beats += 1
        if await flag.asked(beat=beats % 10 == 0):
            progress.stop()
            return


class _StopFlag:
    """A job's stop flag (set by a stop from any process), polled with its heartbeat. A database away for a while
    (a PostgreSQL restart) is logged once and polled through: were the polling to end, a stop asked elsewhere
    would go unseen."""

    def __init__(self, job_id: int) -> None:
        self.job_id, self.failing = job_id, False

    async def asked(self, *, beat: bool) -> bool:
        """Whether a stop was asked; with ``beat``, the heartbeat is saved too (unless a stop was asked)."""
        try:
            if await database_sync_to_async(selectors.crawl_stop_requested)(job_id=self.job_id):
                return True
            if beat:
                await database_sync_to_async(services.crawl_save_progress)(job_id=self.job_id)
        except Exception:
            if not self.failing:
                log.exception("crawl %s: cannot read its stop flag (or save its heartbeat); polling on", self.job_id)
            self.failing = True
            return False
        if self.failing:
            log.warning("crawl %s: its stop flag is read again", self.job_id)
            self.failing = False
        return False
