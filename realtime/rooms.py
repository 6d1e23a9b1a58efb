"""The rooms realtime itself uses to address connections (never joined by clients).

Every connection is in its user's room; token connections in their token's, browser
connections in their session's and their user's cookie room. Revocations close or
move the members of these rooms, on every node. Application rooms are named by their
room kinds (``room_kinds``) and live models.
"""

import hashlib

INTERNAL_PREFIXES = ("user_", "token_", "session_", "cookies_")


def user(user_id: int) -> str:
    """Every connection of one user: lets access changes reach exactly them."""
    return f"user_{user_id}"


def token(token_id: int) -> str:
    """Connections authenticated with one API token: revoking it disconnects them."""
    return f"token_{token_id}"


def session(session_key: str) -> str:
    """Connections authenticated with one browser session: logout closes them.

    Named by a hash of the key, so the secret key never appears in room listings or logs.
    """
    return "session_" + hashlib.sha256(session_key.encode()).hexdigest()[:32]


def user_cookies(user_id: int) -> str:
    """A user's connections authenticated by session cookie: a password change closes them."""
    return f"cookies_{user_id}"


def is_internal(room: str) -> bool:
    """Rooms the server uses to address connections, not rooms clients watch."""
    return room.startswith(INTERNAL_PREFIXES)


def user_id_of(room: str) -> int | None:
    """The user whose connections ``room`` addresses (``user`` and ``user_cookies`` rooms), else None."""
    for prefix in ("user_", "cookies_"):
        if room.startswith(prefix) and room[len(prefix) :].isdigit():
            return int(room[len(prefix) :])
    return None
