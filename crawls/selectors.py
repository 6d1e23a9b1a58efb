"""Reads: crawl jobs a user may see and control."""

from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from .models import CrawlJob


def visible_crawls(*, user: AbstractBaseUser) -> QuerySet[CrawlJob]:
    """The user's own crawls; every crawl for staff."""
    jobs = CrawlJob.objects.all()
    return jobs if user.is_staff else jobs.filter(started_by_id=user.pk)


def crawl_for_user(*, user: AbstractBaseUser, progress_id: UUID | str) -> CrawlJob:
    """The crawl if the user started it (or is staff); ``CrawlJob.DoesNotExist`` otherwise."""
    return visible_crawls(user=user).get(progress_id=progress_id)


def crawl_by_progress_id(progress_id: UUID | str) -> CrawlJob | None:
    try:
        return CrawlJob.objects.filter(progress_id=progress_id).first()
    except Exception:  # a malformed id
        return None


def crawl_stop_requested(*, job_id: int) -> bool:
    """Whether a stop was asked for the job, from any process (its ``cancel_requested`` flag)."""
    return CrawlJob.objects.filter(pk=job_id, cancel_requested=True).exists()
