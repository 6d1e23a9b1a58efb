"""Boards and their notes."""

from django.conf import settings
from django.db import models


class Board(models.Model):
    """A board: its members may watch its notes live."""

    name = models.CharField(max_length=100)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="boards", blank=True)

    def __str__(self) -> str:
        return self.name


class Note(models.Model):
    """A note on a board. ``version`` grows by one on every save: clients keep the higher one."""

    board = models.ForeignKey(Board, on_delete=models.CASCADE, related_name="notes")
    text = models.TextField()
    version = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.text[:50]

    def save(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        # Services read the row under a lock before saving (SQLite: IMMEDIATE), so two writers never share a version.
        self.version = 1 if self._state.adding else self.version + 1
        if kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = {*kwargs["update_fields"], "version"}
        super().save(*args, **kwargs)
