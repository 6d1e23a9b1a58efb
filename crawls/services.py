"""Writes for crawl jobs. Running them is ``runner``'s business; these change state (``crawl_stop`` also tells a run here)."""

from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from realtime import emit_on_commit, runner_gone, runner_id

from . import links, live, netguard
from .crawler import Page
from .models import FINISHED, CrawledPage, CrawlJob, CrawlStatus

STALE_AFTER = timedelta(seconds=60)  # a crawl whose runner has not been heard of for this long is dead


class CrawlError(Exception):
    """A crawl cannot do what was asked; the message says why."""


class CrawlLimitReached(CrawlError):
    """The user already has ``CRAWL_MAX_PER_USER`` crawls queued or running."""


def crawl_create(
    *,
    started_by: AbstractBaseUser | None,
    url: str,
    max_pages: int = 50,
    max_depth: int = 3,
    same_site_only: bool = True,
    include_patterns: list[str] | None = None,
    exclude_patterns: list[str] | None = None,
) -> CrawlJob:
    """A queued crawl job; nothing runs until ``runner`` takes it.

    ``ValidationError`` for a pattern RE2 refuses (or too complex) or a start URL on a non-public address (unless
    ``CRAWL_ALLOW_PRIVATE_NETWORKS``); ``CrawlLimitReached`` past ``CRAWL_MAX_PER_USER``.
    Blocking (the address is resolved): call it from a thread, not the event loop.
    """
    errors = links.pattern_errors(include_patterns or [], exclude_patterns or [])  # syntax, length, RE2 program size
    if not settings.CRAWL_ALLOW_PRIVATE_NETWORKS:
        try:
            netguard.check_url(url)  # resolved here, outside the transaction; every connection is checked again
        except netguard.Refused as refused:
            errors["url"] = [str(refused)]
    if errors:
        raise ValidationError(errors)
    return _crawl_insert(
        started_by=started_by,
        url=url,
        max_pages=max_pages,
        max_depth=max_depth,
        same_site_only=same_site_only,
        include_patterns=include_patterns or [],
        exclude_patterns=exclude_patterns or [],
    )


@transaction.atomic
def _crawl_insert(*, started_by: AbstractBaseUser | None, url: str, **fields: Any) -> CrawlJob:
    if started_by is not None:
        # Counted in the database under the user's row lock, so the limit holds across processes
        # (on SQLite the IMMEDIATE transaction serialises writers the same way).
        get_user_model().objects.select_for_update().filter(pk=started_by.pk).first()
        running = CrawlJob.objects.filter(started_by=started_by, status__in=[CrawlStatus.QUEUED, CrawlStatus.CRAWLING]).count()
        if running >= settings.CRAWL_MAX_PER_USER:
            raise CrawlLimitReached(
                f"too many crawls: {running} queued or running (at most {settings.CRAWL_MAX_PER_USER} per user); "
                "wait for one to end or stop one"
            )
    job = CrawlJob(
        started_by=started_by,
        start_url=url,
        runner=runner_id(),
        heartbeat_at=timezone.now(),
        log="queued",
        **fields,
    )
    job.full_clean()
    job.save()
    return job


def stopping_payload(job: CrawlJob) -> dict[str, Any]:
    return {"progressId": str(job.progress_id), "status": "stopping", "message": "Stopping crawl…"}


def stopped_payload(job: CrawlJob) -> dict[str, Any]:
    return {"progressId": str(job.progress_id), "status": "cancelled", "message": "Crawl stopped", "timestamp": timezone.now().isoformat()}


@transaction.atomic
def crawl_stop(*, job: CrawlJob) -> CrawlJob:
    """Stop a queued or running crawl, wherever it runs: the one stop sequence (event, API, admin, ``manage.py crawl``).

    Once committed: ``crawl:stopping`` to its watchers, and, if this process runs it, its requests
    cancelled at once; a runner in another process sees the flag within ``runner.POLL_SECONDS``.
    The runner says ``crawl:stopped`` when its row says ``cancelled``. ``CrawlError`` if already over.
    """
    job = CrawlJob.objects.select_for_update().get(pk=job.pk)
    if job.status in FINISHED:
        raise CrawlError(f"crawl already {job.status}")
    job.cancel_requested = True
    job.save(update_fields=["cancel_requested", "updated_at"])
    emit_on_commit("crawl:stopping", stopping_payload(job), room=live.CRAWLS.room(job.progress_id))
    # On commit too, after the event above: a stop rolled back stops nothing, and "stopping" is said before "stopped".
    transaction.on_commit(partial(live.CRAWLS.stop_local, job.progress_id))
    return job


def crawl_save_progress(*, job_id: int, **fields: Any) -> None:
    fields["heartbeat_at"] = timezone.now()
    CrawlJob.objects.filter(pk=job_id).update(updated_at=timezone.now(), **fields)


def crawl_record_page(*, job_id: int, page: Page) -> None:
    CrawledPage.objects.update_or_create(
        job_id=job_id,
        url=page.url,
        defaults={
            "final_url": page.final_url,
            "depth": page.depth,
            "status_code": page.status_code,
            "title": page.title,
            "content": page.text,
            "content_hash": page.content_hash,
            "error": page.error[:500],
        },
    )


def crawls_mark_interrupted() -> int:
    """Fail jobs left running by a dead process: ours by pid, anyone's by a stale heartbeat."""
    now = timezone.now()
    dead = []
    for job in CrawlJob.objects.filter(status__in=[CrawlStatus.QUEUED, CrawlStatus.CRAWLING]):
        if runner_gone(job.runner) or job.heartbeat_at is None or now - job.heartbeat_at > STALE_AFTER:
            dead.append(job.pk)
    return CrawlJob.objects.filter(pk__in=dead).update(
        status=CrawlStatus.FAILED, error="interrupted", log="interrupted: its process ended", finished_at=now, updated_at=now
    )
