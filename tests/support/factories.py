"""Sync helpers that make test data (call them through ``sync_to_async`` from async tests)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client

from projects.models import Project, Task
from realtime.models import ApiToken

User = get_user_model()
PASSWORD = "correct horse battery staple"


def make_user(username: str, *, staff: bool = False, superuser: bool = False) -> Any:
    if superuser:
        return User.objects.create_superuser(username, f"{username}@example.com", PASSWORD)
    return User.objects.create_user(username, f"{username}@example.com", PASSWORD, is_staff=staff)


def make_project(owner: Any, *, title: str = "Project", members: tuple[Any, ...] = ()) -> Project:
    project = Project.objects.create(owner=owner, title=title)
    if members:
        project.members.set(members)
    return project


def make_task(project: Project, *, title: str = "Task", **fields: Any) -> Task:
    return Task.objects.create(project=project, title=title, **fields)


def token_for(user: Any) -> str:
    return ApiToken.issue(user=user, name="test")[1]


def session_cookie(user: Any) -> str:
    """A logged-in Django session for ``user``, as a Cookie header value."""
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
