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
