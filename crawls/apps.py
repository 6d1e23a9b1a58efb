from django.apps import AppConfig


class CrawlsConfig(AppConfig):
    name = "crawls"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from asgiref.sync import sync_to_async

        from realtime import lifecycle, progress

        from . import runner, schemas, selectors, services

        def lookup(progress_id: str) -> progress.Operation | None:
            job = selectors.crawl_by_progress_id(progress_id)
            return None if job is None else progress.Operation(job.started_by_id, schemas.progress_json(job))

        async def recover() -> None:
            await sync_to_async(services.crawls_mark_interrupted)()

        progress.register("crawl", lookup, live=runner.current_state)
        lifecycle.at_startup(recover)
