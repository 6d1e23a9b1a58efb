"""Room names: the only place they are spelled."""

import hashlib
from uuid import UUID

PROJECT_LIST = "project_list"


def project(project_id: UUID | str) -> str:
    return str(project_id)


def progress(progress_id: UUID | str) -> str:
    return str(progress_id)


def chat(session_id: UUID | str) -> str:
    return f"chat_{session_id}"


def user(user_id: int) -> str:
    """Every connection of one user: lets access changes reach exactly them."""
    return f"user_{user_id}"


def project_list_of(user_id: int) -> str:
    """The user's connections that subscribed to ``project_list`` (each user sees their own list)."""
    return f"{PROJECT_LIST}_user_{user_id}"


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
    return room.startswith(("user_", "token_", f"{PROJECT_LIST}_user_", "session_", "cookies_"))
