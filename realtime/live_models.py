"""Live models: a model's saves and deletes broadcast to its room once the transaction commits.

    live_model(Note, room=lambda note: f"board_{note.board_id}", data=note_json,
               created="note_created", updated="note_updated", deleted="note_deleted",
               deleted_data=lambda note: {"note_id": note.pk}, moves_with="board_id")

Payloads are built at save time and sent on commit: a rolled-back transaction
discards its on-commit callbacks, so it never broadcasts. An instance whose
``moves_with`` field changed is announced to its old room as deleted.
``QuerySet.update()``, ``bulk_create`` and raw SQL send no signals, so they broadcast nothing.
"""

import copy
from collections.abc import Callable
from typing import Any

from django.db import models
from django.db.models.signals import post_delete, post_init, post_save

from .broadcast import emit_on_commit

LOADED = "_realtime_loaded"  # the instance's ``moves_with`` value when it was loaded (or built)


class LiveModel:
    """One model's declaration (see ``live_model``); its receivers are connected by ``connect``."""

    def __init__(
        self,
        model: type[models.Model],
        *,
        room: Callable[[Any], str],
        data: Callable[[Any], Any],
        created: str | None,
        updated: str | None,
        deleted: str | None,
        deleted_data: Callable[[Any], Any] | None,
        moves_with: str | None,
    ) -> None:
        if deleted and deleted_data is None:
            raise ValueError(f"{model.__name__}: a deleted event needs deleted_data")
        self.model, self.room, self.data = model, room, data
        self.created, self.updated, self.deleted, self.deleted_data = created, updated, deleted, deleted_data
        self.moves_with = moves_with

    def connect(self) -> None:
        uid = f"realtime.live.{self.model._meta.label}"
        post_save.connect(self.saved, sender=self.model, dispatch_uid=f"{uid}.saved", weak=False)
        post_delete.connect(self.removed, sender=self.model, dispatch_uid=f"{uid}.deleted", weak=False)
        if self.moves_with:
            post_init.connect(self.loaded, sender=self.model, dispatch_uid=f"{uid}.loaded", weak=False)

    def loaded(self, sender: type, instance: models.Model, **kwargs: Any) -> None:
        # From __dict__, never the attribute: a deferred field must not cost a query per loaded row.
        instance.__dict__[LOADED] = instance.__dict__.get(self.moves_with or "")

    def saved(self, sender: type, instance: models.Model, created: bool, **kwargs: Any) -> None:
        event = self.created if created else self.updated
        if event:
            emit_on_commit(event, self.data(instance), room=self.room(instance))
        if self.moves_with:
            before = instance.__dict__.get(LOADED)
            now = instance.__dict__.get(self.moves_with)
            if not created and self.deleted and before is not None and before != now:
                old = copy.copy(instance)
                setattr(old, self.moves_with, before)
                emit_on_commit(self.deleted, self.deleted_data(old), room=self.room(old))  # the old room sees it leave
            instance.__dict__[LOADED] = now

    def removed(self, sender: type, instance: models.Model, **kwargs: Any) -> None:
        if self.deleted and self.deleted_data is not None:
            emit_on_commit(self.deleted, self.deleted_data(instance), room=self.room(instance))


_live: dict[type[models.Model], LiveModel] = {}


def live_model(
    model: type[models.Model],
    *,
    room: Callable[[Any], str],
    data: Callable[[Any], Any],
    created: str | None = None,
    updated: str | None = None,
    deleted: str | None = None,
    deleted_data: Callable[[Any], Any] | None = None,
    moves_with: str | None = None,
) -> LiveModel:
    """Make ``model`` live: each save and delete sends its event to ``room(instance)`` on commit.

    ``data(instance)`` is the created / updated payload, ``deleted_data(instance)`` the deleted one
    (an event left as None is not sent). ``moves_with`` names the field (e.g. ``"project_id"``)
    whose change moves an instance to another room: the old room is then sent ``deleted``.
    """
    if model in _live:
        raise ValueError(f"{model._meta.label} is declared live twice")
    declaration = _live[model] = LiveModel(
        model,
        room=room,
        data=data,
        created=created,
        updated=updated,
        deleted=deleted,
        deleted_data=deleted_data,
        moves_with=moves_with,
    )
    declaration.connect()
    return declaration
