"""Browser pages: thin — check who may see what, render; the data then flows over Socket.IO and the REST API."""

from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from . import selectors
from .models import Project

COLUMNS = [("todo", "To do"), ("doing", "Doing"), ("review", "Review"), ("done", "Done")]


@login_required
@ensure_csrf_cookie
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "projects/dashboard.html")


@login_required
@ensure_csrf_cookie
def board(request: HttpRequest, project_id: UUID) -> HttpResponse:
    try:
        project = selectors.project_for_user(user=request.user, project_id=project_id)
    except Project.DoesNotExist:
        raise Http404("project not found") from None  # the same answer for unknown and invisible
    return render(request, "projects/board.html", {"project": project, "columns": COLUMNS})
