from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class RealtimeConfig(AppConfig):
    name = "realtime"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import conf, receivers  # noqa: F401  (receivers connects realtime's own signal receivers)

        conf.apply_defaults()

        # Each installed app's live.py declares its live models, room kinds and client events.
        autodiscover_modules("live")
