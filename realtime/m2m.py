"""A many-to-many change, as the ids it touched: what room revocations need from ``m2m_changed``."""

from typing import Any


def m2m_changed_ids(instance: Any, *, action: str, pk_set: set[Any] | None, related: str) -> set[Any] | None:
    """The ids on the other side that an ``m2m_changed`` add, remove or clear touched; None for other actions.

    ``related`` names the instance's accessor for the other side: a clear reports no ids
    afterwards, so they are remembered at ``pre_clear``.
    """
    if action == "pre_clear":
        instance.__dict__["_realtime_cleared"] = set(getattr(instance, related).values_list("pk", flat=True))
        return None
    if action == "post_clear":
        return instance.__dict__.pop("_realtime_cleared", set())
    if action in ("post_add", "post_remove"):
        return set(pk_set or ())
    return None


def leave_when_removed(relation: Any, kind: Any) -> None:
    """Whoever is removed from ``relation`` (e.g. ``Board.members``) leaves the ``kind`` room of that object, on commit.

    ``relation`` is the many-to-many descriptor on the model whose primary key is the room kind's
    key; removals from either side (``board.members.remove(u)``, ``user.boards.clear()``) count.
    Without it, a removed member's open connections would keep receiving the room until they reconnect.
    """
    from django.db.models.signals import m2m_changed

    from .broadcast import leave_rooms_on_commit

    forward, backward = relation.rel.field.name, relation.rel.get_accessor_name()

    def removed(sender: type, instance: Any, action: str, reverse: bool, pk_set: set[Any] | None, **kwargs: Any) -> None:
        changed = m2m_changed_ids(instance, action=action, pk_set=pk_set, related=backward if reverse else forward)
        if not changed or action == "post_add":
            return
        if reverse:  # instance is the user, changed holds the objects' keys
            leave_rooms_on_commit([(instance.pk, kind.room(key)) for key in changed])
        else:
            leave_rooms_on_commit([(user_id, kind.room(instance.pk)) for user_id in changed])

    m2m_changed.connect(
        removed, sender=relation.through, weak=False, dispatch_uid=f"realtime.leave_when_removed.{relation.through._meta.label}"
    )
