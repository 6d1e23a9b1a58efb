"""Browser pages: thin — check who may see what, render; the data then flows over Socket.IO and the REST API."""

from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import ensure_csrf_cookie

from . import selectors

COLUMNS = [("todo", "To do"), ("doing", "Doing"), ("review", "Review"), ("done", "Done")]


@login_required
@ensure_csrf_cookie
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "projects/dashboard.html")


@login_required
@ensure_csrf_cookie
def board(request: HttpRequest, project_id: UUID) -> HttpResponse:
    project = get_object_or_404(selectors.visible_projects(user=request.user), pk=project_id)  # unknown and invisible alike
    return render(request, "projects/board.html", {"project": project, "columns": COLUMNS})
