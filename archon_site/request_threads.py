"""Django's ASGI handler, with a request's sync work done in one hop onto a reused thread that keeps its connection.

Two costs of Django's own ASGI handler, which with the save's extra statements were more than half of a
REST save's server CPU (README, "Performance": 9.5 → 4.3 ms per save, old and new measured in one run),
and one pause it caused:

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
* **Cycles.** Every request was left in reference cycles (below), ~150 objects with its session, user
  and body, freed only by the garbage collector: with ``realtime.lifecycle.tune_gc``'s young threshold
  of 10,000 objects, a young collection every ~70 requests, 5–15 ms each on the event loop (README,
  "Performance"). Here the disconnect is not raised (``listen_for_disconnect``) and a request is
  emptied once answered (``__call__``), so it is freed by reference counting. The rule that follows:
  nothing may keep a request, or a lazy attribute of it, past its response.

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
            self._run_one(*call)
            del call  # an idle thread must not keep its last call (a response, a request) alive
        connections.close_all()  # this thread's own connections: the thread is ending

    @staticmethod
    def _run_one(future: Future[Any], fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:  # noqa: BLE001  (handed to the awaiting coroutine, as an executor does)
            future.set_exception(error)
        else:
            future.set_result(result)

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

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._worker is None:
            self._worker = self._threads.take()
        return self._worker.submit(fn, args, kwargs)

    def release(self, after_calls: Callable[[], None] | None = None) -> None:
        """Hand the thread back; ``after_calls()`` runs once every call the request made is over.

        On the thread, queued after them: a call can still be running (the view of a request whose task was
        cancelled: a thread cannot be stopped), and one cancelled while queued reports itself done without
        having run, so no future says when the others are over. With no thread taken, now.
        """
        if self._worker is None:
            if after_calls is not None:
                after_calls()
            return
        if after_calls is not None:
            self._worker.submit(after_calls, (), {})
        self._threads.give_back(self._worker)  # what it was given still runs first, in order
        self._worker = None


# The request a call of the handler created, emptied when the call is done. A context variable: one handler serves
# every request at once, and ``handle`` runs ``create_request`` in ``__call__``'s context.
_requests_to_empty: contextvars.ContextVar[list[HttpRequest]] = contextvars.ContextVar("archon_requests_to_empty")


def _empty_requests(requests: list[HttpRequest]) -> None:
    for request in requests:
        request.__dict__.clear()


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

        Django 5.2's ``handle`` treats both alike: whichever of this and the response finishes first, it
        cancels the other (re-check on upgrade). uvicorn reports the disconnect once the response is sent, so
        this ends for nearly every request. Raised, the exception stayed on the finished task, and its
        traceback held ``handle``'s frame, which holds the task: a cycle keeping the request (module docstring).
        """
        message = await receive()
        if message["type"] != "http.disconnect":
            raise AssertionError(f"Invalid ASGI message after request body: {message['type']}")  # as Django's

    def create_request(self, scope: dict[str, Any], body_file: Any) -> tuple[HttpRequest | None, HttpResponseBase | None]:
        request, error_response = super().create_request(scope, body_file)
        if request is not None and (to_empty := _requests_to_empty.get(None)) is not None:
            to_empty.append(request)
        return request, error_response

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        executor = _RequestExecutor(self.threads)
        to_empty: list[HttpRequest] = []
        token = _requests_to_empty.set(to_empty)
        answered = False
        try:
            # Outermost: Django's own ThreadSensitiveContext() inside it keeps this one's executor.
            async with ThreadSensitiveContext(executor=executor):
                await super().__call__(scope, receive, send)
            answered = True
        finally:
            _requests_to_empty.reset(token)
            # Answered, the request is emptied once its calls are over: what middleware and apps hang on it refers
            # back to it (the messages' storage; the lazy ``user``, ``auser`` and django-ninja's ``auth``, closures
            # over it), each a reference cycle (module docstring). Not if ``handle`` was cancelled or failed: it may
            # have left its response task running, which reads the request; the garbage collector frees that one.
            executor.release(after_calls=partial(_empty_requests, to_empty) if answered else None)


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
