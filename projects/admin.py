"""The admin. An edit writes only the fields the user changed, so it never overwrites what someone else changed meanwhile."""

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from . import services
from .models import Project, Task


def _with_hidden_initials(form_class: type[forms.BaseForm]) -> type[forms.BaseForm]:
    """Make ``changed_data`` mean "changed by this user".

    Without this, the admin compares the submitted values with the row as it is *at submit
    time*, so every value someone else changed since the page was drawn looks like a change
    and is written back. With ``show_hidden_initial`` each field also submits the value the
    page showed, and only differences from that count. (The classes are built per request.)
    """
    for field in form_class.base_fields.values():
        field.show_hidden_initial = True
    return form_class


class ChangedFieldsOnlyAdmin(admin.ModelAdmin):
    """Saves an edited object with ``update_fields`` = the fields this user changed (re-reading the rest under the row lock)."""

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        return _with_hidden_initials(super().get_form(request, obj, change=change, **kwargs))

    def get_changelist_formset(self, request: HttpRequest, **kwargs: Any) -> Any:
        # The list_editable forms (the formset builds its own form class, so it is marked here).
        formset = super().get_changelist_formset(request, **kwargs)
        _with_hidden_initials(formset.form)
        return formset

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            return
        services.save_changed_fields(instance=obj, fields=form.changed_data)


class TaskInline(admin.TabularInline):
    model = Task
    fk_name = "project"
    fields = ("title", "status", "assignee", "task_order", "archived", "version")
    readonly_fields = ("version",)
    ordering = ("task_order",)
    extra = 0
    show_change_link = True

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        _with_hidden_initials(formset.form)
        return formset


@admin.register(Project)
class ProjectAdmin(ChangedFieldsOnlyAdmin):
    list_display = ("title", "owner", "pinned", "task_count", "updated_at")
    list_filter = ("pinned", "owner")
    search_fields = ("title", "description", "github_repo")
    filter_horizontal = ("members",)
    inlines = [TaskInline]
    readonly_fields = ("created_at", "updated_at")

    @admin.display(description="tasks")
    def task_count(self, project: Project) -> int:
        return project.tasks.count()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if change and "members" not in form.changed_data:
            # The member list is written only when this user changed it: the page's list may be stale.
            form.cleaned_data.pop("members", None)
        super().save_related(request, form, formsets, change)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """Inline tasks: new ones are saved whole, edited ones only in the fields changed on this page."""
        formset.save(commit=False)
        for obj in formset.deleted_objects:
            obj.delete()
        for obj in formset.new_objects:
            obj.save()
        for obj, changed in formset.changed_objects:
            services.save_changed_fields(instance=obj, fields=changed)
        formset.save_m2m()


@admin.register(Task)
class TaskAdmin(ChangedFieldsOnlyAdmin):
    list_display = ("title", "project", "status", "assignee", "task_order", "archived", "version", "updated_at")
    list_filter = ("status", "project", "assignee", "archived")
    list_editable = ("status", "task_order")
    search_fields = ("title", "description", "feature")
    ordering = ("project", "task_order")
    list_select_related = ("project",)
    raw_id_fields = ("parent_task",)
    readonly_fields = ("version", "created_at", "updated_at", "archived_at")
