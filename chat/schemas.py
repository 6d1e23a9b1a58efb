"""Chat's JSON shapes: sessions and messages for the API and the events, and the ``chat_message`` payload."""

from datetime import datetime
from typing import Any
from uuid import UUID

from ninja import Field, Schema
from pydantic import ConfigDict

from realtime import Payload

from .models import ChatMessage, ChatSession

MAX_BODY = 4_000  # characters of one message, over REST and Socket.IO alike


class MessageOut(Schema):
    id: UUID
    session_id: UUID
    author: str = Field(..., alias="author_name")
    body: str
    created_at: datetime


class SessionOut(Schema):
    id: UUID
    title: str
    participants: list[str]
    created_at: datetime

    @staticmethod
    def resolve_participants(session: ChatSession) -> list[str]:
        return sorted(u.get_username() for u in session.participants.all())


class SessionIn(Schema):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(..., min_length=1, max_length=200)
    participants: list[str] = Field(default_factory=list, max_length=100)


class MessageIn(Schema):
    model_config = ConfigDict(extra="forbid")
    body: str = Field(..., min_length=1, max_length=MAX_BODY)


class ChatPost(Payload):
    """``chat_message``: a post into a session over Socket.IO."""

    session_id: UUID
    body: str = Field(..., min_length=1, max_length=MAX_BODY)


def message_json(message: ChatMessage) -> dict[str, Any]:
    return MessageOut.from_orm(message).model_dump(mode="json")


def session_json(session: ChatSession) -> dict[str, Any]:
    return SessionOut.from_orm(session).model_dump(mode="json")
