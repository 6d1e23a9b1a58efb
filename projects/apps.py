from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    name = "projects"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from asgiref.sync import sync_to_async

        from realtime import lifecycle, progress

        from . import schemas, services, tracked
        from .models import ProjectImport

        def lookup(progress_id: str) -> progress.Operation | None:
            record = ProjectImport.objects.select_related("project__owner").filter(progress_id=progress_id).first()
            return None if record is None else progress.Operation(record.started_by_id, schemas.progress_json(record))

        async def recover() -> None:
            await sync_to_async(services.project_imports_mark_interrupted)()

        progress.register("project", lookup, live=tracked.live.get)
        lifecycle.at_startup(recover)
