"""Chat pages: the session list and one room (participants only); messages flow over Socket.IO."""

from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import ensure_csrf_cookie

from . import selectors
from .schemas import MAX_BODY


@login_required
@ensure_csrf_cookie
def session_list(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/list.html")


@login_required
@ensure_csrf_cookie
def room(request: HttpRequest, session_id: UUID) -> HttpResponse:
    # The same 404 for unknown and not a participant.
    session = get_object_or_404(selectors.sessions_of(user=request.user), pk=session_id)
    participants = sorted(u.get_username() for u in session.participants.all())
    return render(request, "chat/room.html", {"session": session, "participants": participants, "max_body": MAX_BODY})
