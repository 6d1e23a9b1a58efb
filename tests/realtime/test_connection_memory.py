"""What an idle connection keeps (issue 14): a slim environ, no handshake in uvicorn's protocol, a lean send queue.

Each cut must leave behaviour whole: a cookie still authenticates a client that leaves the namespace and connects it
again on the same connection, long-polling still works, and the queue keeps ``asyncio.Queue``'s semantics.
The server runs in this process (the ``server`` fixture): its objects are read directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import weakref

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from realtime import bus, eio, limits
from realtime import server as realtime_server
from tests.conftest import db
from tests.realtime.test_limits import fresh_address, wait_until
from tests.support import factories as f
from tests.support.cycles import cyclic_garbage

sio = realtime_server.sio


async def _connected(ws) -> str:  # type: ignore[no-untyped-def]
    """Read until the namespace's CONNECT answer; its Socket.IO sid."""
    while not (message := await ws.recv()).startswith("4"):
        if message == "2":
            await ws.send("3")
    assert message.startswith("40"), message
    return json.loads(message[2:])["sid"]


async def test_a_cookie_connection_keeps_a_slim_environ_and_can_connect_the_namespace_again(server):
    alice = await db(f.make_user)("alice")
    cookie = await db(f.session_cookie)(alice)
    url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    headers = {"Cookie": cookie, "User-Agent": "x" * 500, **fresh_address()}
    async with ws_connect(url, additional_headers=headers) as ws:
        eio_sid = json.loads((await ws.recv())[1:])["sid"]
        await ws.send("40")
        sid = await _connected(ws)
        environ = sio.get_environ(sid)
        assert set(environ) <= set(eio.KEPT_ENVIRON_KEYS), set(environ) - set(eio.KEPT_ENVIRON_KEYS)
        assert "HTTP_USER_AGENT" not in environ and "wsgi.input" not in environ
        assert environ["HTTP_COOKIE"] == cookie and limits.client_address(environ) == headers["X-Forwarded-For"]

        # uvicorn's protocol forgot the handshake; the connection still carries traffic both ways.
        protocol = sio.eio.sockets[eio_sid].realtime_ws.asgi_send.__self__
        assert protocol.request is None and protocol.response is None and protocol.scope["headers"] == []

        # Leaving the namespace and connecting it again on the same connection authenticates by the cookie again.
        await ws.send("41")
        await wait_until(lambda: sio.manager.sid_from_eio_sid(eio_sid, "/") is None)
        await ws.send("40")
        again = await _connected(ws)
        assert again != sid and sio.get_environ(again)["HTTP_COOKIE"] == cookie
        await ws.send('421["subscribe_projects"]')
        while not (message := await ws.recv()).startswith("431"):
            pass
        assert json.loads(message[3:])[0]["ok"] is True


async def test_long_polling_upgraded_to_a_websocket_still_works_with_slim_environs(server):
    alice = await db(f.make_user)("alice")
    cookie = await db(f.session_cookie)(alice)
    headers = {"Cookie": cookie, **fresh_address()}
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=headers) as http:
        opened = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        eio_sid = json.loads(opened.text[1:])["sid"]
        params = {"EIO": "4", "transport": "polling", "sid": eio_sid}
        assert (await http.post("/socket.io/", params=params, content="40")).text == "OK"
        connected = (await http.get("/socket.io/", params=params)).text
        assert connected.startswith("40"), connected
        sid = json.loads(connected[2:])["sid"]
        assert set(sio.get_environ(sid)) <= set(eio.KEPT_ENVIRON_KEYS)
        assert (await http.post("/socket.io/", params=params, content='421["subscribe_projects"]')).text == "OK"
        received = ""
        while "431[" not in received:
            received += (await http.get("/socket.io/", params=params)).text
        assert '431[{"ok":true' in received

        url = server.url.replace("http://", "ws://") + f"/socket.io/?EIO=4&transport=websocket&sid={eio_sid}"
        async with ws_connect(url, additional_headers=headers) as ws:
            await ws.send("2probe")
            assert await ws.recv() == "3probe"
            await ws.send("5")
            await ws.send('422["subscribe_projects"]')
            while not (message := await ws.recv()).startswith("432"):
                pass
            assert json.loads(message[3:])[0]["ok"] is True


def test_slim_environ_keeps_the_listed_keys_in_the_same_object():
    environ = {"REQUEST_METHOD": "GET", "HTTP_COOKIE": "a=b", "HTTP_USER_AGENT": "agent", "wsgi.input": object(),
               "asgi.scope": {"client": ("127.0.0.1", 1)}, **{f"HTTP_X_{i}": "v" for i in range(30)}}  # fmt: skip
    same = environ
    eio.slim_environ(environ)
    assert same is environ
    assert environ == {"REQUEST_METHOD": "GET", "HTTP_COOKIE": "a=b", "asgi.scope": {"client": ("127.0.0.1", 1)}}


# --- the send queue ----------------------------------------------------------------------------------------------------


async def test_the_lean_queue_behaves_as_an_unbounded_asyncio_queue():
    queue = limits.LeanQueue()
    assert queue.empty() and queue.qsize() == 0 and not queue.full()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
    getter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()
    await queue.put("a")
    queue.put_nowait("b")
    assert await getter == "a" and queue.qsize() == 1 and queue.get_nowait() == "b"

    # join waits for a task_done per item; task_done beyond them is an error, as in asyncio.Queue.
    joined = asyncio.ensure_future(queue.join())
    await asyncio.sleep(0)
    assert not joined.done()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError):
        queue.task_done()


async def test_a_cancelled_getter_of_the_lean_queue_loses_nothing():
    queue = limits.LeanQueue()
    first, second = asyncio.ensure_future(queue.get()), asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("x")  # wakes the first getter...
    first.cancel()  # ...which is cancelled before it runs: the item goes to the second
    assert await asyncio.wait_for(second, 1) == "x"
    assert first.cancelled() and queue.empty()
    # A getter timed out by wait_for (as engine.io's poll is) leaves nothing behind.
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 0.01)
    queue.put_nowait("y")
    assert queue.get_nowait() == "y"


async def test_an_idle_lean_queue_holds_no_deque():
    queue = limits.OutgoingQueue()
    assert queue._items is None and queue._finished is None
    queue.put_nowait("p")
    assert queue.get_nowait() == "p"
    assert queue._items is None  # released once empty: an idle connection holds none


async def test_the_lean_queue_times_out_and_still_serves_after():
    queue = limits.LeanQueue()
    with pytest.raises(TimeoutError):
        await queue.get(timeout=0.05)
    queue.put_nowait("after")  # the expired getter is gone: nothing is handed to it
    assert await queue.get(timeout=5) == "after"
    queue.put_nowait("queued")
    assert await queue.get(timeout=0) == "queued"  # an item already there is returned, whatever the timeout


@contextlib.asynccontextmanager
async def _token_websocket(server):  # type: ignore[no-untyped-def]
    """A raw websocket whose namespace CONNECT (with a token) is sent: (the websocket, its engine.io sid)."""
    alice = await db(f.make_user)("alice")
    url = server.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with ws_connect(url, additional_headers=fresh_address()) as ws:
        eio_sid = json.loads((await ws.recv())[1:])["sid"]
        await ws.send("40" + json.dumps({"token": await db(f.token_for)(alice)}))
        yield ws, eio_sid


@pytest.fixture
def quick_pings():  # type: ignore[no-untyped-def]
    """engine.io's ping interval and timeout made short on the in-process server, for one test."""
    saved = sio.eio.ping_interval, sio.eio.ping_timeout
    sio.eio.ping_interval, sio.eio.ping_timeout = 0.3, 0.5
    yield
    sio.eio.ping_interval, sio.eio.ping_timeout = saved


async def test_pings_come_from_a_timer_and_a_client_that_stops_answering_is_closed(server, quick_pings):
    """No task sleeps per idle connection for its next ping (``eio.Socket.schedule_ping``); pings and the ping timeout still work."""
    async with _token_websocket(server) as (ws, eio_sid):
        await _connected(ws)  # answers the pings that come meanwhile
        socket = sio.eio.sockets[eio_sid]
        assert type(socket) is eio.Socket
        for _ in range(3):  # each answered ping schedules the next
            async with asyncio.timeout(10):
                while await ws.recv() != "2":
                    pass
            await ws.send("3")
        server_loop = bus._loop  # the in-process server's event loop
        assert server_loop is not None
        assert [t for t in asyncio.all_tasks(server_loop) if "_send_ping" in repr(t.get_coro())] == []
        # Stop answering: the server closes the connection once the ping timeout has passed.
        async with asyncio.timeout(20):
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.recv()
        assert eio_sid not in sio.eio.sockets


async def test_a_client_that_ignores_the_servers_close_and_keeps_sending_is_cut(server, quick_pings):
    """The writer waits without a timer; a websocket the server closed still ends within ping interval + timeout."""
    async with _token_websocket(server) as (ws, eio_sid):
        await _connected(ws)
        # engine.io closes the connection (what a revoked or abusive client gets): a CLOSE packet, then it waits.
        asyncio.run_coroutine_threadsafe(sio.eio.disconnect(eio_sid), bus._loop).result(10)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(60):  # a hang fails here (TimeoutError is not ConnectionClosed)
                while True:  # ignore the CLOSE, keep talking
                    await ws.send("3")
                    await asyncio.sleep(0.1)


async def test_a_connection_the_client_closed_is_not_kept_by_a_timer(server):
    """Only a server close arms the cut (``eio.Socket.close``): a client's own disconnect frees its socket at once."""
    async with _token_websocket(server) as (ws, eio_sid):
        await _connected(ws)
        gone = weakref.ref(sio.eio.sockets[eio_sid])
    await wait_until(lambda: eio_sid not in sio.eio.sockets)
    deadline = asyncio.get_running_loop().time() + 10
    while gone() is not None and asyncio.get_running_loop().time() < deadline:
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), bus._loop).result(5)
        gc.collect()
        await asyncio.sleep(0.05)
    assert gone() is None


async def test_a_connection_the_client_closed_leaves_no_cycle_of_this_projects_making(server):
    """Closed by its client, a websocket leaves no cycle through what this project wraps per connection (its
    ``ws.wait`` and ``ws.send``, each referring to ws), nor the exception engine.io's read raised on the disconnect
    (kept on the read's task, its traceback holding the handler's frame, which holds the task). Both kept ~65
    objects per connection for the garbage collector. (uvicorn's and engine.io's own objects still form cycles.)"""
    with cyclic_garbage() as found:
        async with _token_websocket(server) as (ws, eio_sid):
            await _connected(ws)
            socket = weakref.ref(sio.eio.sockets[eio_sid])
        await wait_until(lambda: eio_sid not in sio.eio.sockets)
        for _ in range(3):  # the handler's last steps, on the server's loop
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), bus._loop).result(5)
    this = socket()  # kept alive by `found` if it is in a cycle (uvicorn's and engine.io's own keep it so)
    # Only this connection's: the in-process server may be closing other tests' connections meanwhile.
    wrapped = sorted(
        getattr(o, "__qualname__", None) or o.f_code.co_qualname  # type: ignore[attr-defined]
        for o in found
        if this is not None and (_frame_of(o, this) or _closure_over(o, this))
    )
    assert wrapped == []


def _frame_of(o: object, socket: object) -> bool:
    return type(o).__name__ == "frame" and o.f_locals.get("self") is socket  # type: ignore[attr-defined]


def _closure_over(o: object, socket: object) -> bool:
    cells = getattr(o, "__closure__", None) or ()
    for cell in cells:
        try:
            if cell.cell_contents is socket:
                return True
        except ValueError:  # an empty cell
            continue
    return False
