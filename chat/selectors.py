"""Reads: the sessions a user takes part in, and a session's latest messages."""

from uuid import UUID

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from .models import ChatMessage, ChatSession

HISTORY = 200


def sessions_of(*, user: AbstractBaseUser) -> QuerySet[ChatSession]:
    """Sessions the user takes part in (staff see no more: a chat is private to its participants)."""
    return ChatSession.objects.filter(participants=user).prefetch_related("participants")


def session_for(*, user: AbstractBaseUser, session_id: UUID | str) -> ChatSession:
    """The session if the user is a participant; ``ChatSession.DoesNotExist`` otherwise."""
    return sessions_of(user=user).get(pk=session_id)


def is_participant(*, user: AbstractBaseUser, session_id: UUID | str) -> bool:
    return ChatSession.objects.filter(pk=session_id, participants=user).exists()


def history(*, session_id: UUID | str) -> list[ChatMessage]:
    """The latest messages, oldest first."""
    latest = ChatMessage.objects.filter(session_id=session_id).order_by("-created_at", "-id")[:HISTORY]
    return list(reversed(latest))
