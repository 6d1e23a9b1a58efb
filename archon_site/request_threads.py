"""Django's ASGI handler, with a request's sync work done in one hop onto a reused thread that keeps its connection.

Two costs of Django's own ASGI handler, which with the save's extra statements were more than half of a
REST save's server CPU (README, "Performance": 9.5 → 4.3 ms per save, old and new measured in one run).

* **Hops.** It builds the middleware chain for async and adapts each sync-only part. With this
  site's middleware that meant loop → thread (WhiteNoise) → loop (the async-capable ones, each of
  which runs its ``process_request``/``process_response`` through yet another ``sync_to_async``)
  → thread (the view). Here the chain is built for sync, as under WSGI, and run whole in one
  ``sync_to_async``: one hop there and back. An async view (``realtime.views.publish``) is run by
  Django on the event loop from that thread (``async_to_sync``), as in any sync chain.
* **Threads.** Each request got a new one-thread executor, plus a second new thread to join it
  afterwards, and a new thread has no database connection, so every request opened one (~1.5 ms
  with SQLite). Here a request borrows an idle thread, with the connection it kept
  (``CONN_MAX_AGE``, or PostgreSQL's pool, decides how long that lives). Nothing is capped: with
  no idle thread, a request starts a new one, as before. (With PostgreSQL's pool a request borrows a
  pooled connection instead, and gives it back at its end.)

The thread is taken at the request's first sync call, after its body has been read, so a client
that trickles its body holds none; it is given back when the request is done. At most ``idle``
threads wait for work; one more is ended (its connections closed) when handed back.
It uses asgiref's public ``ThreadSensitiveContext(executor=...)``: one executor per request,
running that request's calls one at a time, in order, on one thread (what Django requires).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from functools import partial
from typing import Any

import django
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.http import HttpRequest, HttpResponseBase


class _Worker:
    """One long-lived thread running the calls it is given, one at a time, in order."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple, dict] | None] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="django-request", daemon=True).start()

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args, kwargs = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:  # noqa: BLE001  (handed to the awaiting coroutine, as an executor does)
                future.set_exception(error)
            else:
                future.set_result(result)
        connections.close_all()  # this thread's own connections: the thread is ending

    def submit(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Future[Any]:
        future: Future[Any] = Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def stop(self) -> None:
        self._calls.put(None)  # after whatever it still has to run


class Threads:
    """The idle request threads (at most ``idle`` of them)."""

    def __init__(self, idle: int) -> None:
        self.idle = idle
        self._waiting: list[_Worker] = []
        self._lock = threading.Lock()

    def take(self) -> _Worker:
        with self._lock:
            if self._waiting:
                return self._waiting.pop()
        return _Worker()

    def give_back(self, worker: _Worker) -> None:
        with self._lock:
            if len(self._waiting) < self.idle:
                self._waiting.append(worker)
                return
        worker.stop()


class _RequestExecutor(Executor):
    """One request's executor: its first call takes a thread, which then runs all of the request's calls."""

    def __init__(self, threads: Threads) -> None:
        self._threads = threads
        self._worker: _Worker | None = None
        self._last: Future[Any] | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._worker is None:
            self._worker = self._threads.take()
        self._last = self._worker.submit(fn, args, kwargs)
        return self._last

    def release(self, afterwards: Callable[[], None] = lambda: None) -> None:
        """Hand the thread back, and ``afterwards()`` once the request's calls are done: now, or if one is still
        running (a cancelled request's view), on the thread after it."""
        if self._worker is not None and self._last is not None and not self._last.done():
            self._worker.submit(afterwards, (), {})
        else:
            afterwards()
        if self._worker is not None:
            self._threads.give_back(self._worker)  # a call still running finishes first
            self._worker = None


# The requests a call of the handler created (``create_request`` runs in the call's own context).
_created: contextvars.ContextVar[list[HttpRequest]] = contextvars.ContextVar("archon_requests_created")


class ReusedThreadsASGIHandler(ASGIHandler):
    """``ASGIHandler`` whose requests run their sync work on reused threads (see the module docstring)."""

    def __init__(self, *, idle_threads: int) -> None:
        BaseHandler.__init__(self)  # not ASGIHandler's: it would build the middleware chain for async
        self.load_middleware(is_async=False)
        self.threads = Threads(idle_threads)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        """The whole sync chain (``BaseHandler.get_response``: middleware, view, error logging) in one hop."""
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)

    async def listen_for_disconnect(self, receive: Any) -> None:
        """Django's, but the client's disconnect ends it instead of raising ``RequestAborted``.

        ``handle`` cancels a view still running either way. Raised, the exception stayed on the finished task,
        its traceback holding ``handle``'s frame, which holds the task: a reference cycle for every request
        (uvicorn reports the disconnect once the response is sent), with the request, its session, user and
        response in it, ~150 objects left for the garbage collector, whose young collections then took
        5–15 ms each on the event loop (``make profile``-style trace, 1,000 watchers, 20 saves/s).
        """
        message = await receive()
        if message["type"] != "http.disconnect":
            raise AssertionError(f"Invalid ASGI message after request body: {message['type']}")  # as Django's

    def create_request(self, scope: dict[str, Any], body_file: Any) -> tuple[HttpRequest | None, HttpResponseBase | None]:
        request, error_response = super().create_request(scope, body_file)
        if request is not None and (created := _created.get(None)) is not None:
            created.append(request)
        return request, error_response

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        executor = _RequestExecutor(self.threads)
        token = _created.set([])
        try:
            # Outermost: Django's own ThreadSensitiveContext() inside it keeps this one's executor.
            async with ThreadSensitiveContext(executor=executor):
                await super().__call__(scope, receive, send)
        finally:
            # Answered and closed (and its view done), the request is emptied. What middleware and apps hang on it
            # refers back to it (the messages' storage; the lazy ``user``, ``auser`` and django-ninja's ``auth``,
            # closures over it): each made it a reference cycle, ~150 objects with its session, user and body,
            # freed only by a young-generation collection that paused the event loop 5–15 ms every ~70 requests.
            # Emptied, it is freed at once, by reference counting.
            executor.release(afterwards=partial(_empty, _created.get()))
            _created.reset(token)


def _empty(requests: list[HttpRequest]) -> None:
    for request in requests:
        request.__dict__.clear()


def get_asgi_application() -> ReusedThreadsASGIHandler:
    """Django's ``get_asgi_application``, with reused request threads (``REQUEST_IDLE_THREADS`` kept) and the URLconf loaded."""
    django.setup(set_prefix=False)
    from django.conf import settings  # noqa: PLC0415 — after setup

    handler = ReusedThreadsASGIHandler(idle_threads=settings.REQUEST_IDLE_THREADS)
    warm_urls()
    return handler


def warm_urls() -> None:
    """Import the URLconf (and every view module and API it pulls in) and compile its patterns, now.

    Django does this lazily, in a process's first request: a REST save then took 92 ms against 15–20 ms for the
    next ones (142 against 35–50 ms with 1,000 watchers; 58 and 61 ms with this), and requests arriving meanwhile
    queued behind it. Under ``runserver`` the system checks do it at start; under uvicorn or granian nothing did.
    A URLconf that cannot be imported now stops the server at start instead of failing its requests.
    """
    from django.urls import get_resolver  # noqa: PLC0415 — after setup

    get_resolver().reverse_dict  # noqa: B018  (reading it imports the URLconf and compiles every pattern)
