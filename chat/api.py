"""Chat over REST: scripts and agents post into a session with a token; messages arrive live.

A session the user does not take part in is a 404 "chat session not found" (the site's API answers
a selector's ``DoesNotExist``), the same for unknown and not a participant.
"""

from typing import Any
from uuid import UUID

from django.http import HttpRequest
from ninja import Router, Status

from . import selectors, services
from .schemas import MessageIn, MessageOut, SessionIn, SessionOut

router = Router(tags=["chat"])


@router.get("/", response=list[SessionOut])
def list_sessions(request: HttpRequest) -> Any:
    return selectors.sessions_of(user=request.user)


@router.post("/", response={201: SessionOut})
def create_session(request: HttpRequest, payload: SessionIn) -> Any:
    return Status(201, services.chat_session_create(created_by=request.user, **payload.dict()))


@router.get("/{uuid:session_id}/messages/", response=list[MessageOut])
def list_messages(request: HttpRequest, session_id: UUID) -> Any:
    return selectors.history(session_id=selectors.session_for(user=request.user, session_id=session_id).pk)


@router.post("/{uuid:session_id}/messages/", response={201: MessageOut})
def post_message(request: HttpRequest, session_id: UUID, payload: MessageIn) -> Any:
    session = selectors.session_for(user=request.user, session_id=session_id)
    return Status(201, services.chat_message_post(session=session, author=request.user, body=payload.body))
