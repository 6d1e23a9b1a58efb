"""The site's REST API (django-ninja): its authentication, its JSON renderer, its error shapes, and the apps' routers.

Session cookie with CSRF, or ``Authorization: Bearer <token>`` (tokens issued by
``manage.py issue_token``). Every error answers ``{"detail": ...}``; invalid input
adds ``errors: [{field, message}]``. A selector that finds nothing the user may see
raises its model's ``DoesNotExist``: one handler here answers 404 "<model> not found",
the same for unknown and forbidden.
"""

from typing import Any

import pydantic_core
from django.apps import apps
from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.renderers import JSONRenderer
from ninja.security import HttpBearer, SessionAuth

from chat.api import router as chat_router
from crawls.api import router as crawls_router
from projects import api as projects_api
from realtime import token_user


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        found = token_user(token)
        if found is None:
            return None
        request.user = found[0]
        return found[0]


class SessionCookie(SessionAuth):
    """Django's session, with CSRF enforced on writes — checked only for a logged-in session,
    so a request without valid credentials is a 401, not a CSRF 403."""

    def _get_key(self, request: HttpRequest) -> str | None:
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)


class SchemaJSON(JSONRenderer):
    """Serialise with pydantic, exactly as the Socket.IO events do: one JSON shape everywhere."""

    def render(self, request: HttpRequest, data: Any, *, response_status: int) -> bytes:
        return pydantic_core.to_json(data, fallback=str)


# Bearer first: a script's token is honoured even if a stray session cookie came along.
api = NinjaAPI(title="Archon live API", version="1", auth=[BearerToken(), SessionCookie()], renderer=SchemaJSON(), urls_namespace="api")
api.add_router("/projects/", projects_api.projects)
api.add_router("/tasks/", projects_api.tasks)
api.add_router("/crawls/", crawls_router)
api.add_router("/chat/", chat_router)
for error, handler in projects_api.EXCEPTION_HANDLERS.items():
    api.add_exception_handler(error, handler)


def _invalid_input(request: HttpRequest, errors: list[dict[str, str]]) -> HttpResponse:
    return api.create_response(request, {"detail": "invalid input", "errors": errors}, status=400)


@api.exception_handler(NinjaValidationError)
def _bad_input(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    return _invalid_input(
        request, [{"field": ".".join(str(p) for p in e["loc"] if p not in ("body", "payload")), "message": e["msg"]} for e in exc.errors]
    )


@api.exception_handler(DjangoValidationError)
def _invalid(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
    fields = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
    return _invalid_input(request, [{"field": f, "message": m} for f, messages in fields.items() for m in messages])


@api.exception_handler(RecursionError)
def _too_deep(request: HttpRequest, exc: RecursionError) -> HttpResponse:
    # A body nested deeper than the JSON parser can follow: refused like any unparsable body.
    return _invalid_input(request, [{"field": "body", "message": "nested too deeply"}])


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400:  # e.g. a body that is not JSON: the same shape as every other 400
        return _invalid_input(request, [{"field": "body", "message": str(exc)}])
    return api.create_response(request, {"detail": str(exc)}, status=exc.status_code)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc) or "not found"}, status=404)


@api.exception_handler(ObjectDoesNotExist)
def _does_not_exist(request: HttpRequest, exc: ObjectDoesNotExist) -> HttpResponse:
    # Also what a row deleted between the permission check and a locked re-read raises: the same answer.
    return api.create_response(request, {"detail": f"{_model_name(type(exc))} not found"}, status=404)


def _model_name(error: type[ObjectDoesNotExist]) -> str:
    for model in apps.get_models():
        if model.DoesNotExist is error:
            return str(model._meta.verbose_name)
    return "object"
