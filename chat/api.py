"""Chat over REST: scripts and agents post into a session with a token; messages arrive live."""

from typing import Any
from uuid import UUID

from django.http import Http404, HttpRequest
from ninja import Router, Status

from . import selectors, services
from .models import ChatSession
from .schemas import MessageIn, MessageOut, SessionIn, SessionOut

router = Router(tags=["chat"])


def _session(request: HttpRequest, session_id: UUID) -> ChatSession:
    try:
        return selectors.session_for(user=request.user, session_id=session_id)
    except ChatSession.DoesNotExist:
        raise Http404("chat session not found") from None


@router.get("/", response=list[SessionOut])
def list_sessions(request: HttpRequest) -> Any:
    return selectors.sessions_of(user=request.user)


@router.post("/", response={201: SessionOut})
def create_session(request: HttpRequest, payload: SessionIn) -> Any:
    return Status(201, services.chat_session_create(created_by=request.user, **payload.dict()))


@router.get("/{uuid:session_id}/messages/", response=list[MessageOut])
def list_messages(request: HttpRequest, session_id: UUID) -> Any:
    return selectors.history(session_id=_session(request, session_id).pk)


@router.post("/{uuid:session_id}/messages/", response={201: MessageOut})
def post_message(request: HttpRequest, session_id: UUID, payload: MessageIn) -> Any:
    return Status(201, services.chat_message_post(session=_session(request, session_id), author=request.user, body=payload.body))
