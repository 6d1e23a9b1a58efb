"""crawls, live: a crawl's progress to its watchers, ``crawl_stop``, and the recovery of crawls a dead process left.

Declared here, run by realtime (see the README's "Event reference" for the wire protocol).
"""

from typing import Any
from uuid import UUID

from channels.db import database_sync_to_async

from realtime import Client, Operation, Payload, Reject, at_startup, client_event, may_watch, progress_kind

from . import schemas, selectors, services


def _crawl(progress_id: str) -> Operation | None:
    job = selectors.crawl_by_progress_id(progress_id)
    return None if job is None else Operation(job.started_by_id, schemas.progress_json(job))


CRAWLS = progress_kind(subscribe="crawl_subscribe", unsubscribe="crawl_unsubscribe", event="crawl_progress", lookup=_crawl)


class CrawlRef(Payload):
    progress_id: UUID


@client_event("crawl_stop", CrawlRef)
async def _stop(client: Client, payload: CrawlRef) -> dict[str, Any]:
    """The starter or staff stop a crawl, wherever it runs: ``crawl:stopping`` now, ``crawl:stopped`` once it has."""
    progress_id = str(payload.progress_id)
    job = await database_sync_to_async(selectors.crawl_by_progress_id)(progress_id)
    if job is None or not may_watch(job.started_by_id, client.user):
        raise Reject("unknown progress id")  # the same answer for unknown and someone else's
    try:
        await database_sync_to_async(services.crawl_stop)(job=job)
    except services.CrawlError as error:
        raise Reject(str(error)) from None
    return {"progress_id": progress_id, "status": "stopping"}


@at_startup
async def _recover() -> None:
    await database_sync_to_async(services.crawls_mark_interrupted)()
