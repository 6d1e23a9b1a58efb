from collections.abc import Sequence

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction

from .models import ChatMessage, ChatSession


@transaction.atomic
def chat_session_create(*, created_by: AbstractBaseUser, title: str, participants: Sequence[str] = ()) -> ChatSession:
    """A session between its creator and the named users."""
    users = list(get_user_model().objects.filter(username__in=set(participants)))
    missing = sorted(set(participants) - {u.get_username() for u in users})
    if missing:
        raise ValidationError({"participants": [f"unknown user: {name}" for name in missing]})
    session = ChatSession.objects.create(title=title, created_by=created_by)
    session.participants.set([created_by, *users])
    return session


@transaction.atomic
def chat_message_post(*, session: ChatSession, author: AbstractBaseUser, body: str) -> ChatMessage:
    """Store a message; it reaches the session's room once committed."""
    body = body.strip()
    if not body:
        raise ValidationError({"body": ["empty message"]})
    return ChatMessage.objects.create(session=session, author=author, author_name=author.get_username(), body=body)
