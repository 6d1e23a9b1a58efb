"""Projects and their tasks, and the limits on what they may hold."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator
from django.db import models, transaction

# --- Limits (README: "Limits and security") ---------------------------------------
# One place for every bound on what a project or task holds: the API's schemas, the
# model validators (so the admin is bounded too) and the services all read these.
MAX_DESCRIPTION_CHARS = 20_000  # a task's or project's description
MAX_JSON_ITEMS = 1_000  # items in one JSON list field (sources, code_examples, docs, features, data)
MAX_JSON_BYTES = 64 * 1024  # one JSON list field, encoded as compact UTF-8 JSON
MAX_JSON_DEPTH = 10  # nesting of a JSON list field; the list itself is level 1
MAX_MEMBERS = 200  # member_usernames of one project
MAX_REORDER_IDS = 5_000  # task ids in one reorder (the same bound as an import's task count)
TASK_ORDER_RANGE = (-(2**31), 2**31 - 1)  # what every database's integer column holds


def json_list_problem(value: Any) -> str | None:
    """Why ``value`` may not be stored in a JSON list field, or None when it may.

    Checked without recursion (a deeply nested value must not exhaust the stack) and
    cheapest first: the encoded size is measured only once the shape is known to be bounded.
    """
    if not isinstance(value, list):
        return "must be a list"
    if len(value) > MAX_JSON_ITEMS:
        return f"at most {MAX_JSON_ITEMS} items (got {len(value)})"
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"nested at most {MAX_JSON_DEPTH} levels deep"
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_JSON_BYTES:
        return f"at most {MAX_JSON_BYTES} bytes as JSON (got {size})"
    return None


def validate_json_list(value: Any) -> None:
    """Model-field validator for the JSON list fields (the admin's forms run it)."""
    problem = json_list_problem(value)
    if problem is not None:
        raise ValidationError(problem, code="json_list")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Project(models.Model):
    """A project a team works on; visible to its owner, its members and staff."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=255)
    description = models.TextField(blank=True, default="", validators=[MaxLengthValidator(MAX_DESCRIPTION_CHARS)])
    github_repo = models.CharField(max_length=500, blank=True, default="")
    pinned = models.BooleanField(default=False)
    docs = models.JSONField(default=list, blank=True, validators=[validate_json_list])
    features = models.JSONField(default=list, blank=True, validators=[validate_json_list])
    data = models.JSONField(default=list, blank=True, validators=[validate_json_list])
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_projects")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="projects")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-pinned", "title", "created_at"]

    def __str__(self) -> str:
        return self.title

    @property
    def etag(self) -> str:
        """The opaque ``ETag`` value (unquoted) of this state: ``updated_at`` in microseconds since the epoch.

        A project has no version number; every save stamps ``updated_at``, so this changes with every write.
        """
        return str((self.updated_at - _EPOCH) // timedelta(microseconds=1))

    @classmethod
    def from_db(cls, db, field_names, values):  # type: ignore[no-untyped-def]
        instance = super().from_db(db, field_names, values)
        # Remembered so that an owner change can revoke the previous owner's access.
        instance._loaded_owner_id = instance.__dict__.get("owner_id")
        return instance

    def save(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # A partial save still stamps updated_at: it is the project's ETag and must move with every write.
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, "updated_at"}
        super().save(*args, **kwargs)


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
    description = models.TextField(blank=True, default="", validators=[MaxLengthValidator(MAX_DESCRIPTION_CHARS)])
    status = models.CharField(max_length=10, choices=TaskStatus.choices, default=TaskStatus.TODO)
    assignee = models.CharField(max_length=255, default="User")
    task_order = models.IntegerField(default=0)
    feature = models.CharField(max_length=255, blank=True, default="")
    sources = models.JSONField(default=list, blank=True, validators=[validate_json_list])
    code_examples = models.JSONField(default=list, blank=True, validators=[validate_json_list])
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

    @property
    def etag(self) -> str:
        """The opaque ``ETag`` value (unquoted) of this state: the version."""
        return str(self.version)

    def save(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        update_fields = kwargs.get("update_fields")
        if update_fields is not None:
            kwargs["update_fields"] = {*update_fields, "version", "updated_at"}
        # No savepoint inside a caller's transaction (every service): two statements less per save, and a
        # failed save fails that whole transaction, which the services let propagate anyway.
        with transaction.atomic(using=kwargs.get("using"), savepoint=False):
            if self._state.adding:
                self.version = 1
            elif self.__dict__.pop("_version_read_under_lock", False):
                # The caller read this row under the row lock in the transaction it is saving in
                # (services.tasks_reorder): its version is current, the re-read would only cost a query.
                self.version += 1
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
