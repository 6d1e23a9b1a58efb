"""Projects and their tasks."""

import uuid

from django.conf import settings
from django.db import models, transaction


class Project(models.Model):
    """A project a team works on; visible to its owner, its members and staff."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    github_repo = models.CharField(max_length=500, blank=True, default="")
    pinned = models.BooleanField(default=False)
    docs = models.JSONField(default=list, blank=True)
    features = models.JSONField(default=list, blank=True)
    data = models.JSONField(default=list, blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_projects")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="projects")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-pinned", "title", "created_at"]

    def __str__(self) -> str:
        return self.title

    @classmethod
    def from_db(cls, db, field_names, values):  # type: ignore[no-untyped-def]
        instance = super().from_db(db, field_names, values)
        # Remembered so that an owner change can revoke the previous owner's access.
        instance._loaded_owner_id = instance.__dict__.get("owner_id")
        return instance


class TaskStatus(models.TextChoices):
    TODO = "todo", "To do"
    DOING = "doing", "Doing"
    REVIEW = "review", "Review"
    DONE = "done", "Done"


class Task(models.Model):
    """A task in a project. ``version`` grows by exactly one on every save."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="tasks")
    parent_task = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="subtasks")
    title = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=10, choices=TaskStatus.choices, default=TaskStatus.TODO)
    assignee = models.CharField(max_length=255, default="User")
    task_order = models.IntegerField(default=0)
    feature = models.CharField(max_length=255, blank=True, default="")
    sources = models.JSONField(default=list, blank=True)
    code_examples = models.JSONField(default=list, blank=True)
    archived = models.BooleanField(default=False)
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    version = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["task_order", "created_at"]
        indexes = [models.Index(fields=["project", "archived", "task_order"])]

    def __str__(self) -> str:
        return self.title

    @classmethod
    def from_db(cls, db, field_names, values):  # type: ignore[no-untyped-def]
        instance = super().from_db(db, field_names, values)
        # Remembered so that moving a task to another project tells the old room.
        instance._loaded_project_id = instance.__dict__.get("project_id")
        return instance

    def save(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, "version", "updated_at"}
        with transaction.atomic(using=kwargs.get("using")):
            if self._state.adding:
                self.version = 1
            else:
                # Read under a row lock (SQLite: the IMMEDIATE write lock), not
                # from this possibly stale instance, so two concurrent saves never
                # share a version, and post_save receivers see the final number.
                current = type(self).objects.select_for_update().filter(pk=self.pk).values_list("version", flat=True).first()
                self.version = (current or 0) + 1
            super().save(*args, **kwargs)


class ProjectImport(models.Model):
    """A tracked project creation (from a template or an imported task list), watched through its progress room."""

    class Status(models.TextChoices):
        VALIDATING = "validating"
        CREATING = "creating"
        IMPORTING = "importing"
        COMPLETED = "completed"
        ERROR = "error"

    progress_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="project_imports")
    request = models.JSONField(help_text="What was asked: title, template or import spec.")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.VALIDATING)
    percentage = models.FloatField(default=0)
    step = models.CharField(max_length=200, blank=True, default="")
    log = models.CharField(max_length=500, blank=True, default="")
    error = models.TextField(blank=True, default="")
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
