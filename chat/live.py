"""chat, live: a session's room (history on join), its messages as they are stored, posting over Socket.IO.

Declared here, run by realtime (see the README's "Event reference" for the wire protocol).
"""

from typing import Any

from channels.db import database_sync_to_async
from django.core.exceptions import ValidationError

from realtime import Client, Reject, Snapshot, client_event, leave_when_removed, live_model, room_kind

from . import schemas, selectors, services
from .models import ChatMessage, ChatSession
from .schemas import ChatPost

CHAT = room_kind(
    join="join_chat",
    leave="leave_chat",
    key="session_id",
    prefix="chat_",
    may_join=lambda user, session_id: selectors.is_participant(user=user, session_id=session_id),
    snapshot=lambda user, session_id: Snapshot(
        "chat_history",
        {"session_id": str(session_id), "messages": [schemas.message_json(m) for m in selectors.history(session_id=session_id)]},
    ),
    refusal="chat session not found",  # the same answer for unknown and not a participant
)

live_model(ChatMessage, room=lambda message: CHAT.room(message.session_id), data=schemas.message_json, created="chat_message")


@client_event("chat_message", ChatPost)
async def _post(client: Client, payload: ChatPost) -> dict[str, Any]:
    """Post into a session (participants only); everyone in its room, the sender included, gets ``chat_message``."""
    message = await database_sync_to_async(_post_as)(client.user, payload)
    return {"session_id": str(payload.session_id), "message_id": str(message.pk)}


def _post_as(user: Any, payload: ChatPost) -> ChatMessage:
    try:
        session = selectors.session_for(user=user, session_id=payload.session_id)
    except ChatSession.DoesNotExist:
        raise Reject(CHAT.refusal) from None
    try:
        return services.chat_message_post(session=session, author=user, body=payload.body)
    except ValidationError as error:  # e.g. a body of blanks only
        raise Reject("invalid payload: " + "; ".join(f"{k}: {m}" for k, ms in error.message_dict.items() for m in ms)) from None


# A removed participant's connections leave the room at once (they would otherwise keep receiving it).
leave_when_removed(ChatSession.participants, CHAT)
