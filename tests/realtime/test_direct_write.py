"""The uvicorn fast path: frames written straight to websockets arrive whole and in order.

It leans on private engine.io and uvicorn details: each is checked once at startup (a missing one
turns the fast path off, with one error, and broadcasts take engine.io's queue), and a direct write
that still fails moves that one connection to the queue without costing the others their frame.
"""

import asyncio
import inspect
import logging
import re
import sys
import textwrap

import httpx
import pytest
from engineio import async_socket
from engineio.async_drivers import asgi as eio_asgi
from uvicorn.protocols.websockets import websockets_sansio_impl
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from projects.models import Task
from realtime import direct_write
from tests.conftest import CLIENT_KINDS, db
from tests.support import factories as f


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_text_frame_is_a_valid_unmasked_final_frame(size):
    text = "é" * (size // 2) + "x" * (size % 2)  # multi-byte characters: the length counts bytes
    reader = StreamReader()
    reader.feed_data(direct_write.text_frame(text))
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    assert (frame.opcode, frame.fin, frame.data.decode()) == (Opcode.TEXT, True, text)


# --- startup checks -------------------------------------------------------------------------------


def test_every_assumption_holds_for_the_installed_engineio_and_uvicorn(server):
    assert direct_write.verify() == []
    assert direct_write.enabled(), "the serving process checked them at startup and turned the fast path on"


def _init_renaming(cls, name):
    """``cls.__init__`` as a new version could have it: the same code, with the attribute ``name`` renamed ``<name>_v2``."""
    source = re.sub(rf"self\.{name}(\s*[:=])", rf"self.{name}_v2\1", textwrap.dedent(inspect.getsource(cls.__init__)))
    namespace: dict = {}
    exec(source, vars(sys.modules[cls.__module__]), namespace)  # noqa: S102  (the library's own source, edited)
    return namespace["__init__"]


async def _handler_with_one_more_argument(self, ws, environ):
    pass


def _send_not_a_coroutine(self, message):
    pass


# Each: how a new engine.io / uvicorn version could differ, and what the one error must name.
Socket, WebSocket, Protocol = async_socket.AsyncSocket, eio_asgi.WebSocket, websockets_sansio_impl.WebSocketsSansIOProtocol
BROKEN = [
    pytest.param(lambda m: m.delattr(Socket, "_websocket_handler"), "AsyncSocket._websocket_handler is missing", id="handler-gone"),
    pytest.param(
        lambda m: m.setattr(Socket, "_websocket_handler", _handler_with_one_more_argument),
        "_websocket_handler takes (self, ws, environ)",
        id="handler-signature",
    ),
    pytest.param(
        lambda m: m.setattr(WebSocket, "send", _send_not_a_coroutine), "WebSocket.send is no longer a coroutine", id="ws-send-sync"
    ),
    pytest.param(lambda m: m.setitem(eio_asgi._async, "websocket", object), "_async['websocket'] is no longer", id="eio-driver-class"),
    pytest.param(
        lambda m: m.setattr(WebSocket, "__init__", _init_renaming(WebSocket, "asgi_send")), "no longer sets asgi_send", id="asgi_send"
    ),
    pytest.param(
        lambda m: m.delattr(websockets_sansio_impl, "WebSocketsSansIOProtocol"),
        "WebSocketsSansIOProtocol cannot be imported",
        id="uvicorn-class-renamed",
    ),
    pytest.param(
        lambda m: m.setattr(Protocol, "__init__", _init_renaming(Protocol, "close_sent")),
        "WebSocketsSansIOProtocol.__init__ no longer sets close_sent",
        id="close_sent",
    ),
    pytest.param(
        lambda m: m.setattr(Protocol, "__init__", _init_renaming(Protocol, "handshake_complete")),
        "no longer sets handshake_complete",
        id="handshake_complete",
    ),
    pytest.param(
        lambda m: m.setattr(Protocol, "__init__", _init_renaming(Protocol, "transport")), "no longer sets transport", id="transport"
    ),
    pytest.param(
        lambda m: m.delattr(asyncio.WriteTransport, "get_write_buffer_size"), "get_write_buffer_size is missing", id="transport-method"
    ),
]


@pytest.mark.parametrize(("break_it", "named"), BROKEN)
def test_verify_names_each_broken_assumption(monkeypatch, break_it, named):
    # Checked on the classes alone: no connection is made while a class is broken here.
    with monkeypatch.context() as m:
        break_it(m)
        problems = direct_write.verify()
    assert len(problems) == 1 and named in problems[0], problems
    assert direct_write.verify() == []


# Run in the server process before anything else (``sitecustomize``): a new version's renames,
# made so that engine.io and uvicorn themselves still work; only realtime's assumptions break.
RENAMES = {
    "engineio-handler-renamed": (
        """
        from engineio import async_socket

        Socket = async_socket.AsyncSocket
        Socket._serve_websocket = Socket._websocket_handler
        del Socket._websocket_handler

        async def _upgrade_websocket(self, environ):
            if self.upgraded:
                raise OSError("Socket has been upgraded already")
            ws = self.server._async["websocket"](self._serve_websocket, self.server)
            return await ws(environ)

        Socket._upgrade_websocket = _upgrade_websocket
        """,
        "engineio.async_socket.AsyncSocket._websocket_handler is missing",
        True,  # what wraps that handler is gone too: websocket writes are not counted towards the unsent bound
    ),
    "uvicorn-protocol-renamed": (
        """
        import uvicorn.protocols.websockets.auto  # uvicorn's own choice holds the class itself
        from uvicorn.protocols.websockets import websockets_sansio_impl as impl

        impl.WebSocketsProtocolV2 = impl.WebSocketsSansIOProtocol
        del impl.WebSocketsSansIOProtocol
        """,
        "WebSocketsSansIOProtocol cannot be imported",
        False,  # only direct writes need the class: the wrapper, and with it the unsent bound, stay whole
    ),
}


@pytest.mark.parametrize("rename", list(RENAMES))
async def test_a_broken_assumption_turns_the_fast_path_off_at_startup_and_broadcasts_take_the_queue(spawn, tmp_path, rename):
    code, named, uncounted = RENAMES[rename]
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(code))
    server = spawn(PYTHONPATH=str(tmp_path))  # a real uvicorn process, started as in production

    startup = server.output()
    errors = [line for line in startup.splitlines() if " ERROR realtime.direct_write: " in line]
    assert len(errors) == 1, startup
    assert "fast path OFF" in errors[0] and named in errors[0], errors[0]
    assert ("not counted towards REALTIME_MAX_BUFFERED_BYTES" in errors[0]) is uncounted, errors[0]

    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    token = await db(f.token_for)(alice)
    clients = []
    try:
        for kind in CLIENT_KINDS.values():  # born websockets: with the fast path on, they would be written to directly
            client = kind()
            clients.append(client)
            await client.connect(server.url, auth={"token": token}, transports=["websocket"])
            assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"]
            await client.wait_for("initial_tasks")

        titles = [f"{i}:" + "x" * size for i, size in enumerate([10, 19_000, 5, 5, 5])]  # descriptions up to 20,000 characters
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
            for title in titles:
                response = await http.post(f"/api/projects/{project.pk}/tasks/", json={"title": title[:255], "description": title})
                assert response.status_code == 201, response.text
        for client in clients:
            created = [await client.wait_for("task_created", timeout=10) for _ in titles]
            assert [t["description"] for t in created] == titles
    finally:
        for client in clients:
            await client.close()
    output = server.output()
    assert "Traceback" not in output, output
    assert len([line for line in output.splitlines() if " ERROR " in line]) == 1, output


# --- per broadcast --------------------------------------------------------------------------------


async def test_broadcasts_use_the_fast_path_and_arrive_whole_and_in_order(connect, monkeypatch):
    assert direct_write.enabled()
    used = []
    original = direct_write.protocol_for

    def counting(socket):
        protocol = original(socket)
        used.append(protocol is not None)
        return protocol

    monkeypatch.setattr(direct_write, "protocol_for", counting)
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="t")
    # Born a websocket (the direct path) and upgraded from long-polling (the queue).
    clients = [await connect(alice, transports=["websocket"]), await connect(alice)]
    for client in clients:
        assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"]
        await client.wait_for("initial_tasks")

    descriptions = [f"{i}:" + "x" * size for i, size in enumerate([10, 1_000, 70_000] + [5] * 40)]

    def burst() -> None:
        t = Task.objects.get(pk=task.pk)
        for description in descriptions:
            t.description = description
            t.save()

    await db(burst)()
    for client in clients:
        updates = [await client.wait_for("task_updated", timeout=10) for _ in descriptions]
        assert [u["version"] for u in updates] == list(range(2, 2 + len(descriptions)))
        assert [u["description"] for u in updates] == descriptions
    assert any(used) and not all(used), "both paths should have been taken"


async def test_a_direct_write_that_fails_moves_that_connection_to_the_queue_and_spares_the_others(connect, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="realtime")
    monkeypatch.setattr(direct_write, "abandoned_connections", 0)  # "logged once" counts from here
    real_send = direct_write.send
    broken: list[object] = []  # the protocol of the one connection whose direct write fails
    attempts = []

    def send(protocol, frame):
        if not broken:
            broken.append(protocol)
        if protocol is broken[0]:
            attempts.append(frame)
            raise AttributeError("'WebSocketsSansIOProtocol' object has no attribute 'transport'")  # as after a rename
        real_send(protocol, frame)

    monkeypatch.setattr(direct_write, "send", send)
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="t")
    clients = [await connect(alice, transports=["websocket"]) for _ in range(3)]
    for client in clients:
        assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"]
        await client.wait_for("initial_tasks")

    descriptions = [f"{i}:" + "x" * size for i, size in enumerate([10, 70_000] + [5] * 20)]

    def burst() -> None:
        t = Task.objects.get(pk=task.pk)
        for description in descriptions:
            t.description = description
            t.save()

    await db(burst)()
    for client in clients:  # every broadcast reached every client, whole and in order, the broken one included
        updates = [await client.wait_for("task_updated", timeout=10) for _ in descriptions]
        assert [u["description"] for u in updates] == descriptions
    assert len(attempts) == 1, "after its first failure that connection never took the direct path again"
    failures = [r for r in caplog.records if r.name == "realtime.direct_write"]
    assert [r.levelno for r in failures] == [logging.ERROR], [r.getMessage() for r in failures]
    assert "AttributeError" in failures[0].getMessage() and "engine.io's queue" in failures[0].getMessage()
    assert all(client.connected for client in clients)
