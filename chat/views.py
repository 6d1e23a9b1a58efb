"""Chat pages: the session list and one room (participants only); messages flow over Socket.IO."""

from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from . import selectors
from .models import ChatSession


@login_required
@ensure_csrf_cookie
def session_list(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/list.html")


@login_required
@ensure_csrf_cookie
def room(request: HttpRequest, session_id: UUID) -> HttpResponse:
    try:
        session = selectors.session_for(user=request.user, session_id=session_id)
    except ChatSession.DoesNotExist:
        raise Http404("chat session not found") from None  # the same answer for unknown and not a participant
    participants = sorted(u.get_username() for u in session.participants.all())
    return render(request, "chat/room.html", {"session": session, "participants": participants})
