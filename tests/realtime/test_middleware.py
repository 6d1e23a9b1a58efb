"""``realtime.middleware.BroadcastsSentMiddleware``: a write's response leaves once its broadcasts have left the process.

End to end: a server killed the moment it answers a reorder has published all twenty ``task_updated`` (the
other node's watcher gets each). Then the middleware around a stand-in view: it waits for every ordered
submission and for no job launch, its wait is bounded (and logged), and it works in an async chain too.
Last, the same guarantee for client events (acked once sent) and during a Redis outage (answered once the
loss is recorded).
"""

import asyncio
import signal
import time

import httpx
from asgiref.sync import sync_to_async
from django.http import HttpResponse
from django.test import RequestFactory

from chat import services as chat_services
from realtime import bus
from realtime.middleware import BroadcastsSentMiddleware
from realtime.models import LostBroadcast
from tests.conftest import CLIENT_KINDS, db
from tests.support import factories as f

from .test_remote import watcher

TASKS = 20


def _tasks(project):  # type: ignore[no-untyped-def]
    return [f.make_task(project, title=f"t{n}", task_order=n) for n in range(TASKS)]


async def test_a_server_killed_as_it_answers_a_write_has_sent_its_broadcasts(spawn, redis_server, client_kind) -> None:  # type: ignore[no-untyped-def]
    a, b = spawn(REDIS_URL=redis_server.url), spawn(REDIS_URL=redis_server.url)
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    tasks = await db(_tasks)(project)
    on_b = await watcher(b, alice, project, client_kind)
    try:
        token = await db(f.token_for)(alice)
        async with httpx.AsyncClient(base_url=a.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as rest_a:
            ids = [str(t.pk) for t in reversed(tasks)]
            response = await rest_a.post(f"/api/projects/{project.pk}/tasks/reorder/", json={"task_ids": ids})
            a.proc.send_signal(signal.SIGKILL)  # the moment the answer is in: nothing after it runs
        assert response.status_code == 200, response.text
        for task in response.json():  # each at the version the answer gave it, on the other node
            await on_b.wait_for("task_updated", lambda t, task=task: t["id"] == task["id"] and t["version"] == task["version"], timeout=10)
        assert not on_b.received("realtime:resync")
    finally:
        await on_b.close()


# The middleware itself, around a stand-in for the view, with the in-process server's event loop running.


def _view(*submissions):  # type: ignore[no-untyped-def]
    """A get_response that submits each (coroutine, ordered) as a view's on-commit code would, and answers."""

    def get_response(request):  # type: ignore[no-untyped-def]
        for coro, ordered in submissions:
            bus.submit(coro, ordered=ordered)
        return HttpResponse("answered")

    return get_response


def _sleeper(seconds: float, done: list[str], name: str):  # type: ignore[no-untyped-def]
    async def sleep() -> None:
        await asyncio.sleep(seconds)
        done.append(name)

    return sleep()


def test_the_answer_waits_for_every_broadcast_sent_in_order_and_for_no_job(asgi_server) -> None:  # type: ignore[no-untyped-def]
    done: list[str] = []
    job = _sleeper(3.0, done, "job")  # unordered: a job launched, which the answer must not wait for
    view = _view((_sleeper(0.2, done, "first"), True), (_sleeper(0.1, done, "second"), True), (job, False))
    middleware = BroadcastsSentMiddleware(view)
    response = middleware(RequestFactory().get("/"))
    assert response.content == b"answered" and done == ["first", "second"]


def test_the_wait_is_bounded_and_the_late_broadcast_still_goes(asgi_server, settings, caplog) -> None:  # type: ignore[no-untyped-def]
    settings.REALTIME_RESPONSE_WAIT_SECONDS = 0.2
    done: list[str] = []
    middleware = BroadcastsSentMiddleware(_view((_sleeper(1.0, done, "slow"), True)))
    assert middleware(RequestFactory().get("/")).content == b"answered" and done == []
    assert "an answer waited 0.2 s for 1 broadcast(s) and went first" in caplog.text
    deadline = time.monotonic() + 10
    while not done and time.monotonic() < deadline:
        time.sleep(0.05)
    assert done == ["slow"]


async def test_in_an_async_chain_the_answer_waits_too(asgi_server) -> None:  # type: ignore[no-untyped-def]
    done: list[str] = []
    view = _view((_sleeper(0.2, done, "first"), True))

    async def get_response(request):  # type: ignore[no-untyped-def]
        return await sync_to_async(view)(request)  # the on-commit code of a sync view, run from an async chain

    response = await BroadcastsSentMiddleware(get_response)(RequestFactory().get("/"))
    assert response.content == b"answered" and done == ["first"]


async def _slow_proxy(port: int, delay: float) -> asyncio.Server:
    """A loopback TCP proxy to ``port`` that holds every chunk ``delay`` seconds, each way, in order."""

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await asyncio.sleep(delay)
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer), return_exceptions=True)

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_a_client_event_is_acked_once_its_broadcast_has_left(spawn, redis_server, client_kind) -> None:  # type: ignore[no-untyped-def]
    """The same for Socket.IO client events (realtime's dispatcher): a server killed at the ack has published the
    message. Node A reaches Redis through a slow link (50 ms each way), so an ack that did not wait would win."""
    proxy = await _slow_proxy(redis_server.port, 0.05)
    slow_url = f"redis://127.0.0.1:{proxy.sockets[0].getsockname()[1]}/0"
    a, b = spawn(REDIS_URL=slow_url), spawn(REDIS_URL=redis_server.url)
    alice = await db(f.make_user)("alice")
    await db(f.make_user)("bob")
    session = await db(chat_services.chat_session_create)(created_by=alice, title="kill", participants=["bob"])
    clients = []
    try:
        for server in (a, b):
            client = CLIENT_KINDS[client_kind]()
            clients.append(client)
            await client.connect(server.url, auth={"token": await db(f.token_for)(alice)})
            assert (await client.call("join_chat", {"session_id": str(session.pk)}))["ok"]
        on_a, on_b = clients
        for n in range(5):
            assert (await on_a.call("chat_message", {"session_id": str(session.pk), "body": f"m{n}"}))["ok"]
        a.proc.send_signal(signal.SIGKILL)  # the moment the last ack is in
        await on_b.wait_for("chat_message", lambda m: m["body"] == "m4", timeout=10)
        assert [m["body"] for m in on_b.received("chat_message")] == [f"m{n}" for n in range(5)]
    finally:
        for client in clients:
            await client.close()
        proxy.close()


async def test_during_a_redis_outage_the_answer_comes_once_the_loss_is_recorded(spawn, redis_server) -> None:  # type: ignore[no-untyped-def]
    """Redis gone: the broadcast cannot be numbered, so the room is recorded as lost, and that row is in the database
    by the time the write is answered (a server killed then is repaired by another)."""
    server = spawn(REDIS_URL=redis_server.url)
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="before")
    redis_server.stop()
    token = await db(f.token_for)(alice)
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
        response = await http.patch(f"/api/tasks/{task.pk}/", json={"title": "during the outage"})
    assert response.status_code == 200, response.text
    rooms = await db(lambda: list(LostBroadcast.objects.values_list("room", flat=True)))()
    assert str(project.pk) in rooms
