from django.contrib import admin

from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are issued with ``manage.py issue_token``; here they are listed and revoked (deleted)."""

    list_display = ("prefix", "user", "name", "created_at", "last_used_at")
    list_filter = ("user",)
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = ("user", "prefix", "created_at", "last_used_at")
    fields = ("user", "name", "prefix", "created_at", "last_used_at")
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset) -> None:  # type: ignore[no-untyped-def]
        count = len(queryset)
        for token in queryset:
            token.delete()  # one by one, so each revocation disconnects its sockets
        self.message_user(request, f"Revoked {count} token(s).")
