"""Shared fixtures: a live server, real Socket.IO clients (python-socketio and Node's socket.io-client)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from tests.support import factories
from tests.support.live_server import LiveServer
from tests.support.node_client import NodeClient
from tests.support.processes import RedisServer, ServerProcess, database_url_for
from tests.support.py_client import PyClient
from tests.support.test_site import TestSite

db = sync_to_async  # ORM calls from async tests run in a worker thread

CLIENT_KINDS = {"python": PyClient, "node": NodeClient}


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """pytest-django's, and before the test database is dropped: the connection of the thread that runs
    ``sync_to_async`` calls (asgiref's one thread outside a request) closed, or PostgreSQL refuses the drop."""
    yield
    with django_db_blocker.unblock():
        asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture(scope="session")
def asgi_server(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveServer]:
    with django_db_blocker.unblock():  # startup hooks read the database
        server = LiveServer().start()
    yield server
    server.stop()


@pytest.fixture
def server(asgi_server: LiveServer, transactional_db: None) -> LiveServer:
    """The live server, with a database the server's threads can see (committed, flushed after)."""
    return asgi_server


Connect = Callable[..., Awaitable[Any]]


@pytest.fixture(params=list(CLIENT_KINDS))
def client_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def connect(server: LiveServer, client_kind: str) -> AsyncIterator[Connect]:
    """``await connect(user)``: a client of this test's kind, authenticated by token (or ``cookie=True``)."""
    made: list[Any] = []

    async def factory(
        user: Any = None,
        *,
        kind: str | None = None,
        cookie: bool = False,
        auth: Any = None,
        headers: dict | None = None,
        transports: list[str] | None = None,
    ) -> Any:
        client = CLIENT_KINDS[kind or client_kind]()
        made.append(client)
        headers = dict(headers or {})
        if user is not None and cookie:
            headers["Cookie"] = await db(factories.session_cookie)(user)
        elif user is not None and auth is None:
            auth = {"token": await db(factories.token_for)(user)}
        await client.connect(server.url, auth=auth, headers=headers or None, transports=transports)
        return client

    yield factory
    for client in made:
        await client.close()


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


@pytest.fixture
def database_url(transactional_db: None) -> str:
    """The test database's ``DATABASE_URL`` (SQLite's file or PostgreSQL's test database), for processes that share it."""
    from django.db import connection

    return database_url_for(connection.settings_dict)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def spawn(database_url: str) -> Iterator[Callable[..., ServerProcess]]:
    """``spawn(REDIS_URL=...)``: a uvicorn server process on the test database, stopped after the test."""
    started: list[ServerProcess] = []

    def factory(**env: str | None) -> ServerProcess:
        process = ServerProcess(database_url, **env).start()
        started.append(process)
        return process

    yield factory
    for process in started:
        process.stop()


@pytest.fixture
def site() -> Iterator[TestSite]:
    """A small local website (never the internet) that counts the requests it gets."""
    test_site = TestSite(pages=30, slow_seconds=1.5).start()
    yield test_site
    test_site.stop()
