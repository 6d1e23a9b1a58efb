"""The crawl's JSON shapes: progress (camelCase, as the events send it), jobs and pages for the API."""

from datetime import datetime
from typing import Any

from ninja import Field, Schema
from pydantic import ConfigDict, HttpUrl, field_validator

from realtime import ProgressState

from . import links
from .models import CrawledPage, CrawlJob


class CrawlProgress(ProgressState):
    """``crawl_progress``: also the state a late subscriber gets and what ``GET /api/crawls/<id>/`` returns.

    ``error`` is always sent ("" when none), unlike tracked imports' (left out when None).
    """

    pages_done: int
    pages_discovered: int
    current_url: str
    error: str
    start_url: str


class CrawlPageOut(Schema):
    url: str
    final_url: str
    depth: int
    status_code: int | None
    title: str
    content_hash: str
    error: str
    fetched_at: datetime


class CrawlIn(Schema):
    model_config = ConfigDict(extra="forbid")
    url: HttpUrl
    max_pages: int = Field(50, ge=1, le=10_000)
    max_depth: int = Field(3, ge=0, le=50)
    same_site_only: bool = True
    include_patterns: list[str] = Field(default_factory=list, max_length=20)
    exclude_patterns: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("include_patterns", "exclude_patterns")
    @classmethod
    def _regexes(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            links.compile_pattern(pattern)  # RE2 (linear time), length-capped: a ValueError naming the pattern
        return patterns


def progress_json(job: CrawlJob, **overrides: Any) -> dict[str, Any]:
    """The job's current progress as sent to clients (camelCase, ISO 8601 timestamp)."""
    fields = {
        "progress_id": job.progress_id,
        "status": job.status,
        "percentage": job.percentage,
        "pages_done": job.pages_done,
        "pages_discovered": job.pages_discovered,
        "current_url": job.current_url,
        "log": job.log,
        "error": job.error,
        "start_url": job.start_url,
    }
    return CrawlProgress.payload(**{**fields, **overrides})


def page_json(page: CrawledPage) -> dict[str, Any]:
    return CrawlPageOut.from_orm(page).model_dump(mode="json")
