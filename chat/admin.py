from django.contrib import admin

from .models import ChatMessage, ChatSession


class MessageInline(admin.TabularInline):
    model = ChatMessage
    fields = ("author_name", "body", "created_at")
    readonly_fields = ("created_at",)
    extra = 0


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    list_display = ("title", "created_by", "created_at")
    filter_horizontal = ("participants",)
    inlines = [MessageInline]
