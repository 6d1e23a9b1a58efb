"""Crawl jobs and the pages they found."""

import uuid

from django.conf import settings
from django.db import models


class CrawlStatus(models.TextChoices):
    QUEUED = "queued"
    CRAWLING = "crawling"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


FINISHED = {CrawlStatus.COMPLETED, CrawlStatus.CANCELLED, CrawlStatus.FAILED}


class CrawlJob(models.Model):
    progress_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    start_url = models.URLField(max_length=2000)
    max_pages = models.PositiveIntegerField(default=50)
    max_depth = models.PositiveIntegerField(default=3)
    same_site_only = models.BooleanField(default=True)
    include_patterns = models.JSONField(default=list, blank=True)
    exclude_patterns = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=CrawlStatus.choices, default=CrawlStatus.QUEUED, db_index=True)
    pages_done = models.PositiveIntegerField(default=0)
    pages_discovered = models.PositiveIntegerField(default=0)
    percentage = models.FloatField(default=0)
    current_url = models.CharField(max_length=2000, blank=True, default="")
    log = models.CharField(max_length=500, blank=True, default="")
    error = models.TextField(blank=True, default="")
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="crawl_jobs")
    cancel_requested = models.BooleanField(default=False)
    # Who runs it ("host:pid"), so a restarted server can tell its own dead crawls from live ones elsewhere.
    runner = models.CharField(max_length=200, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "crawl"  # the API's 404 says "crawl not found"

    def __str__(self) -> str:
        return f"{self.start_url} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class CrawledPage(models.Model):
    job = models.ForeignKey(CrawlJob, on_delete=models.CASCADE, related_name="pages")
    url = models.CharField(max_length=2000)
    final_url = models.CharField(max_length=2000, blank=True, default="")
    depth = models.PositiveIntegerField(default=0)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    title = models.CharField(max_length=500, blank=True, default="")
    content = models.TextField(blank=True, default="")
    content_hash = models.CharField(max_length=64, blank=True, default="")
    error = models.CharField(max_length=500, blank=True, default="")
    fetched_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["fetched_at", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "url"], name="one_page_per_url_per_job")]

    def __str__(self) -> str:
        return self.url
