"""Who may be sent a room's past: ``since`` tokens, and the access generations that void them.

A join is told, per room, a token naming the room, its epoch, the user, the user's access
generation and the seq the join started at. A later join honours a ``since`` only with a
token of this user, for this room and epoch, issued at the current generation, and no older
than the token's seq: a client cannot ask for broadcasts from before it was let in, and a
user whose access shrank in between (a revocation, a recheck, a deactivation: every room
operation addressed to their connections bumps their generation, ``bump_for``) gets a
snapshot, built for what they may see now.
"""

from typing import Any

from django.utils.crypto import constant_time_compare, salted_hmac

from . import history, rooms

SALT = "realtime.since_tokens.since"


def _mac(room: str, epoch: str, user_id: int, generation: str, start: int) -> str:
    return salted_hmac(SALT, f"{room}\n{epoch}\n{user_id}\n{generation}\n{start}", algorithm="sha256").hexdigest()[:32]


def token(*, room: str, epoch: str, user_id: int, generation: str, start: int) -> str:
    """What a joiner keeps for its next ``since`` in ``room``."""
    return f"{generation}/{start}/{_mac(room, epoch, user_id, generation, start)}"


def honoured(given: str, *, room: str, epoch: str, seq: int, user_id: int, generation: str) -> bool:
    """Whether a ``since {epoch, seq, token}`` may be answered with the room's past (else: a snapshot)."""
    parts = given.split("/")
    if len(parts) != 3 or parts[0] != generation or not (parts[1].isascii() and parts[1].isdigit()) or len(parts[1]) > 19:
        return False
    start = int(parts[1])
    return start <= seq and constant_time_compare(parts[2], _mac(room, epoch, user_id, generation, start))


def changes(op: dict[str, Any]) -> list[tuple[str, Any]]:
    """What a room operation voids: ``("user", id)`` / ``("everyone", None)`` generations, ``("room", name)`` histories
    (``("history", None)``: every room's)."""
    if op.get("op") == "resync":  # broadcasts were lost: no since from before may be honoured
        return [("room", op["room"])] if op.get("room") else [("history", None)]
    members_of = op.get("members_of")
    if not isinstance(members_of, str):
        return []
    user_id = rooms.user_id_of(members_of)
    if user_id is not None:
        return [("user", user_id)]
    if op.get("op") == "leave":
        return [("room", op.get("room"))]  # closing a room (its subject is gone), or a group leaving: its past goes
    if op.get("op") == "recheck" or not rooms.is_internal(members_of):
        return [("everyone", None)]
    return []  # a token's or a session's connections closed: nobody's access changed


async def bump_for(op: dict[str, Any]) -> None:
    """Before a room operation goes out: void the ``since`` tokens it may concern (in this server's history)."""
    found = history.backend()
    for what, subject in changes(op):
        if what == "room":
            await found.forget_room(subject)
        elif what == "history":
            await found.replace_epoch()
        else:
            await found.bump(subject)
