from django.contrib import admin, messages

from . import services
from .models import CrawledPage, CrawlJob


class PageInline(admin.TabularInline):
    model = CrawledPage
    fields = ("url", "status_code", "title", "error", "fetched_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(CrawlJob)
class CrawlJobAdmin(admin.ModelAdmin):
    list_display = ("start_url", "status", "percentage", "pages_done", "pages_discovered", "started_by", "created_at", "finished_at")
    list_filter = ("status", "started_by")
    search_fields = ("start_url", "progress_id")
    readonly_fields = [f.name for f in CrawlJob._meta.fields]
    inlines = [PageInline]
    actions = ["stop_crawls"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    @admin.action(description="Stop crawl")
    def stop_crawls(self, request, queryset) -> None:  # type: ignore[no-untyped-def]
        for job in queryset:
            try:
                services.crawl_stop(job=job)
            except services.CrawlError as error:
                self.message_user(request, f"{job.start_url}: {error}", messages.WARNING)
                continue
            self.message_user(request, f"Stopping {job.start_url}")


@admin.register(CrawledPage)
class CrawledPageAdmin(admin.ModelAdmin):
    list_display = ("url", "job", "status_code", "title", "error", "fetched_at")
    list_filter = ("status_code",)
    search_fields = ("url", "title")
    readonly_fields = [f.name for f in CrawledPage._meta.fields]
