from django.apps import AppConfig


class CrawlsConfig(AppConfig):
    """Crawl jobs; their live side (progress, ``crawl_stop``, recovery at startup) is declared in ``live.py``."""

    name = "crawls"
    default_auto_field = "django.db.models.BigAutoField"
