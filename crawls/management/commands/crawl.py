"""``manage.py crawl URL``: crawl in this process while browsers watch through the bus."""

import asyncio
import signal
import sys

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from crawls import runner, services
from crawls.models import CrawlJob, CrawlStatus
from realtime import flush

EXIT = {CrawlStatus.COMPLETED: 0, CrawlStatus.FAILED: 1, CrawlStatus.CANCELLED: 130}


class Command(BaseCommand):
    help = "Crawl URL in this process. Prints the progress id first; Ctrl-C stops the crawl cleanly."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("url")
        parser.add_argument("--max-pages", type=int, default=50)
        parser.add_argument("--max-depth", type=int, default=3)
        parser.add_argument("--user", help="Username the crawl belongs to (who may watch and stop it besides staff).")
        parser.add_argument("--no-progress", action="store_true", help="No terminal progress bar.")

    def handle(
        self, *args: object, url: str, max_pages: int, max_depth: int, user: str | None, no_progress: bool, **options: object
    ) -> None:
        owner = None
        if user:
            try:
                owner = get_user_model().objects.get(username=user)
            except get_user_model().DoesNotExist:
                raise CommandError(f"no such user: {user}") from None
        try:
            job = services.crawl_create(started_by=owner, url=url, max_pages=max_pages, max_depth=max_depth)
        except ValidationError as error:  # a bad URL, a refused address, limits
            raise CommandError(
                "; ".join(f"{field}: {message}" for field, messages in error.message_dict.items() for message in messages)
            ) from None
        except services.CrawlError as error:  # e.g. too many crawls for this user
            raise CommandError(str(error)) from None
        self.stdout.write(str(job.progress_id))
        self.stdout.flush()
        status = asyncio.run(self._crawl(job, show=not no_progress))
        delivered = flush(5.0)
        job.refresh_from_db()
        self.stderr.write(f"\n{job.status}: {job.pages_done} pages{' — ' + job.error if job.error else ''}")
        if not delivered:
            self.stderr.write("some live events could not be delivered in time")
        sys.exit(EXIT[status])

    async def _crawl(self, job: CrawlJob, *, show: bool) -> str:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(runner.run(job.pk))
        # Ctrl-C asks for a clean stop: in-flight requests cancelled, job cancelled, crawl:stopped sent.
        loop.add_signal_handler(signal.SIGINT, lambda: self._interrupt(job))
        painter = asyncio.create_task(self._paint(job)) if show else None
        try:
            return await task
        finally:
            if painter:
                painter.cancel()

    def _interrupt(self, job: CrawlJob) -> None:
        asyncio.get_running_loop().create_task(self._stop(job))

    async def _stop(self, job: CrawlJob) -> None:
        try:
            await database_sync_to_async(services.crawl_stop)(job=job)  # crawl:stopping, cancelled; the runner says crawl:stopped
        except services.CrawlError:
            return  # already over

    async def _paint(self, job: CrawlJob) -> None:
        width = 30
        while True:
            await asyncio.sleep(0.2)
            current = await database_sync_to_async(CrawlJob.objects.get)(pk=job.pk)
            filled = int(width * current.percentage / 100)
            bar = "#" * filled + "." * (width - filled)
            line = f"\r[{bar}] {current.percentage:5.1f}% {current.pages_done}/{current.pages_discovered} {current.current_url[:60]:<60}"
            self.stderr.write(line, ending="")
            self.stderr.flush()
