"""Live models: a model's saves and deletes broadcast to its room once the transaction commits.

    live_model(Note, room=lambda note: BOARD.room(note.board_id), data=note_json,
               created="note_created", updated="note_updated", deleted="note_deleted",
               deleted_data=lambda note: {"id": note.pk, "board_id": note.board_id}, moves_with="board_id")

Payloads are built at save time and sent on commit: a rolled-back transaction
discards its on-commit callbacks, so it never broadcasts. An instance whose
``moves_with`` field changed is announced to its old room as deleted: the old room
is the one the database held (read with one query, only when the instance may have
moved: its value differs from the one loaded, or was not loaded).
``QuerySet.update()``, ``bulk_create`` and raw SQL send no signals, so they broadcast nothing.
"""

import copy
from collections.abc import Callable
from typing import Any

from django.db import models, transaction
from django.db.models.signals import post_delete, post_init, post_save, pre_delete, pre_save

from .broadcast import emit_on_commit

LOADED = "_realtime_loaded"  # the ``moves_with`` value the database held when last seen: at load, or a committed save
BEFORE = "_realtime_before"  # the value the database holds as this save or delete starts
UNKNOWN = object()  # not loaded (a deferred field)


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
        if not (created or updated or deleted):
            raise ValueError(f"{model.__name__}: name at least one of created, updated, deleted (an event left out is not sent)")
        self.model, self.room, self.data = model, room, data
        self.created, self.updated, self.deleted, self.deleted_data = created, updated, deleted, deleted_data
        field = model._meta.get_field(moves_with) if moves_with else None
        self.attname: str | None = getattr(field, "attname", None)
        self.names = {field.name, field.attname} if field is not None else set()

    def connect(self) -> None:
        uid = f"realtime.live.{self.model._meta.label}"
        post_save.connect(self.saved, sender=self.model, dispatch_uid=f"{uid}.saved", weak=False)
        post_delete.connect(self.removed, sender=self.model, dispatch_uid=f"{uid}.deleted", weak=False)
        if self.attname:
            post_init.connect(self.loaded, sender=self.model, dispatch_uid=f"{uid}.loaded", weak=False)
            pre_save.connect(self.saving, sender=self.model, dispatch_uid=f"{uid}.saving", weak=False)
            pre_delete.connect(self.deleting, sender=self.model, dispatch_uid=f"{uid}.deleting", weak=False)

    def _current(self, instance: models.Model) -> Any:
        # From __dict__, never the attribute: a deferred field must not cost a query per row.
        return instance.__dict__.get(self.attname or "", UNKNOWN)

    def loaded(self, sender: type, instance: models.Model, **kwargs: Any) -> None:
        instance.__dict__[LOADED] = self._current(instance)

    def _stored(self, instance: models.Model) -> Any:
        """What the database holds now: read (one query) only when the instance may have moved."""
        known, now = instance.__dict__.get(LOADED, UNKNOWN), self._current(instance)
        if known is not UNKNOWN and known == now:
            return known
        found = type(instance)._base_manager.filter(pk=instance.pk).values_list(self.attname, flat=True)
        return found[0] if found else UNKNOWN

    def saving(self, sender: type, instance: models.Model, update_fields: Any = None, **kwargs: Any) -> None:
        adding = instance._state.adding or instance.pk is None
        instance.__dict__[BEFORE] = UNKNOWN if adding else self._stored(instance)

    def deleting(self, sender: type, instance: models.Model, **kwargs: Any) -> None:
        instance.__dict__[BEFORE] = self._stored(instance)

    def _as(self, instance: models.Model, value: Any) -> models.Model:
        """A copy of ``instance`` in the room of ``value`` (for the room it was in, or stays in)."""
        copied = copy.copy(instance)
        setattr(copied, self.attname or "", value)
        return copied

    def saved(self, sender: type, instance: models.Model, created: bool, update_fields: Any = None, **kwargs: Any) -> None:
        event = self.created if created else self.updated
        before = instance.__dict__.pop(BEFORE, UNKNOWN)
        now = self._current(instance)
        moved = self.attname is not None and before is not UNKNOWN and now is not UNKNOWN and before != now
        if moved and update_fields is not None and not self.names & set(update_fields):
            # The save left the field as stored: the instance is still where the database says.
            instance, now, moved = self._as(instance, before), before, False
        if event:
            emit_on_commit(event, self.data(instance), room=self.room(instance))
        if moved and self.deleted and self.deleted_data is not None:
            old = self._as(instance, before)
            emit_on_commit(self.deleted, self.deleted_data(old), room=self.room(old))  # the old room sees it leave
        if self.attname and now is not UNKNOWN:
            target = instance.__dict__  # remembered once committed: a rolled-back move leaves it where it was
            transaction.on_commit(lambda: target.__setitem__(LOADED, now))

    def removed(self, sender: type, instance: models.Model, **kwargs: Any) -> None:
        if not (self.deleted and self.deleted_data is not None):
            return
        before = instance.__dict__.pop(BEFORE, UNKNOWN)
        subject = self._as(instance, before) if self.attname and before is not UNKNOWN and before != self._current(instance) else instance
        emit_on_commit(self.deleted, self.deleted_data(subject), room=self.room(subject))


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
