"""Crawls over REST: start one (it runs in the server process), follow it, stop it."""

from typing import Any
from uuid import UUID

from django.http import HttpRequest
from ninja import Router, Status
from ninja.errors import HttpError

from realtime import submit

from . import runner, selectors, services
from .schemas import CrawlIn, page_json, progress_json

router = Router(tags=["crawls"])


async def _launch(job_id: int) -> None:
    runner.launch(job_id)


@router.post("/", response={202: dict})
def start_crawl(request: HttpRequest, payload: CrawlIn) -> Any:
    """Queue a crawl and run it in the background of this server; follow it with ``crawl_subscribe``.

    400 for a start URL on a non-public address or a pattern RE2 refuses; 429 past ``CRAWL_MAX_PER_USER``.
    """
    try:
        job = services.crawl_create(started_by=request.user, **{**payload.dict(), "url": str(payload.url)})
    except services.CrawlLimitReached as error:
        raise HttpError(429, str(error)) from None
    submit(_launch(job.pk))  # onto the server's event loop
    return Status(202, {"progress_id": str(job.progress_id)})


@router.get("/", response=list[dict])
def list_crawls(request: HttpRequest, limit: int = 50) -> Any:
    return [progress_json(job) for job in selectors.visible_crawls(user=request.user)[: max(1, min(limit, 200))]]


@router.get("/{uuid:progress_id}/", response=dict)
def get_crawl(request: HttpRequest, progress_id: UUID) -> Any:
    job = selectors.crawl_for_user(user=request.user, progress_id=progress_id)  # 404 "crawl not found" (the site's API)
    return {**progress_json(job), "pages": [page_json(p) for p in job.pages.all()]}


@router.post("/{uuid:progress_id}/stop/", response={202: dict})
def stop_crawl(request: HttpRequest, progress_id: UUID) -> Any:
    try:
        job = services.crawl_stop(job=selectors.crawl_for_user(user=request.user, progress_id=progress_id))
    except services.CrawlError as error:
        raise HttpError(409, str(error)) from None
    return Status(202, {"progress_id": str(job.progress_id), "status": "stopping"})
