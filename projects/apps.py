from django.apps import AppConfig


class ProjectsConfig(AppConfig):
    """Projects and tasks; their live declarations are in ``live.py`` (found by realtime at startup)."""

    name = "projects"
    default_auto_field = "django.db.models.BigAutoField"
