from django.contrib import admin

from .models import Project, Task


class TaskInline(admin.TabularInline):
    model = Task
    fk_name = "project"
    fields = ("title", "status", "assignee", "task_order", "archived", "version")
    readonly_fields = ("version",)
    ordering = ("task_order",)
    extra = 0
    show_change_link = True


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "pinned", "task_count", "updated_at")
    list_filter = ("pinned", "owner")
    search_fields = ("title", "description", "github_repo")
    filter_horizontal = ("members",)
    inlines = [TaskInline]
    readonly_fields = ("created_at", "updated_at")

    @admin.display(description="tasks")
    def task_count(self, project: Project) -> int:
        return project.tasks.count()


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("title", "project", "status", "assignee", "task_order", "archived", "version", "updated_at")
    list_filter = ("status", "project", "assignee", "archived")
    list_editable = ("status", "task_order")
    search_fields = ("title", "description", "feature")
    ordering = ("project", "task_order")
    list_select_related = ("project",)
    raw_id_fields = ("parent_task",)
    readonly_fields = ("version", "created_at", "updated_at", "archived_at")
