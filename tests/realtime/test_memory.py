"""A connection cannot make the server hold memory: binary attachments are refused, unread output is bounded.

Attackers are hand-driven clients (``RawSocketIO``: websockets' sans-I/O protocol on a plain
socket), because the real clients never misbehave: they announce binary attachments, stream
binary frames, or do the handshake, join a project and then never read again (a tiny receive
buffer and no ``recv``). The server is a spawned process, so its own RSS can be read.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import socket
import statistics
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.conftest import db
from tests.support import factories as f
from tests.support.py_client import PyClient

MB = 1024 * 1024


def rss_mb(pid: int) -> float:
    """The process's resident set size, in MB."""
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert match, "no VmRSS"
    return int(match.group(1)) / 1024


class RawSocketIO:
    """One Socket.IO connection over a websocket, driven by hand; nothing is read unless asked."""

    def __init__(self, url: str, *, rcvbuf: int | None = None) -> None:
        parsed = urlparse(url)
        self.address = (parsed.hostname, parsed.port)
        self.url = url
        self.rcvbuf = rcvbuf
        self.sock: socket.socket | None = None
        self.protocol: ClientProtocol | None = None
        self.loop = asyncio.get_running_loop()
        self.sid: str | None = None
        self._ack_id = 0
        self._events: collections.deque[Any] = collections.deque()  # received, not yet returned

    async def open(self, token: str, *, upgrade: bool = False) -> RawSocketIO:
        """Handshake and authenticate: born a websocket, or (``upgrade``) long-polling first, then upgraded."""
        eio_sid = None
        if upgrade:
            async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
                opened = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
                eio_sid = json.loads(opened.text[1:])["sid"]
                params = {"EIO": "4", "transport": "polling", "sid": eio_sid}
                assert (await http.post("/socket.io/", params=params, content="40" + json.dumps({"token": token}))).text == "OK"
                assert (await http.get("/socket.io/", params=params)).text.startswith("40")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf:  # before connecting, so the window the server sees stays small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.setblocking(False)
        await self.loop.sock_connect(sock, self.address)
        self.sock = sock
        query = "EIO=4&transport=websocket" + (f"&sid={eio_sid}" if eio_sid else "")
        self.protocol = ClientProtocol(parse_uri(f"ws://{self.address[0]}:{self.address[1]}/socket.io/?{query}"), max_size=None)
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        async with asyncio.timeout(10):
            while self.protocol.state is not State.OPEN:  # the 101 response; messages wait in the protocol
                self.protocol.receive_data(await self.loop.sock_recv(sock, 65536))
        if upgrade:
            await self.send_text("2probe")
            assert await self.recv_text() == "3probe"
            await self.send_text("5")
        else:
            assert (await self.recv_text()).startswith("0")  # engine.io OPEN
            await self.send_text("40" + json.dumps({"token": token}))
            connected = await self.recv_text()
            assert connected.startswith("40"), connected
            self.sid = json.loads(connected[2:])["sid"]
        return self

    async def _flush(self) -> None:
        assert self.protocol is not None and self.sock is not None
        for data in self.protocol.data_to_send():
            if data:
                await self.loop.sock_sendall(self.sock, data)

    async def send_text(self, text: str) -> None:
        assert self.protocol is not None
        self.protocol.send_text(text.encode())
        await self._flush()

    async def send_binary(self, data: bytes) -> None:
        assert self.protocol is not None
        self.protocol.send_binary(data)
        await self._flush()

    async def recv_text(self, timeout: float = 10) -> str:
        """The next text message (engine.io pings are answered on the way)."""
        assert self.protocol is not None and self.sock is not None
        async with asyncio.timeout(timeout):
            while True:
                self._events.extend(self.protocol.events_received())
                while self._events:
                    event = self._events.popleft()
                    if isinstance(event, Response):
                        assert event.status_code == 101, event.status_code
                    elif isinstance(event, Frame) and event.opcode == Opcode.TEXT:
                        text = event.data.decode()
                        if text == "2":
                            await self.send_text("3")
                            continue
                        return text
                    elif isinstance(event, Frame) and event.opcode == Opcode.CLOSE:
                        raise ConnectionError("closed by the server")
                data = await self.loop.sock_recv(self.sock, 65536)
                if not data:
                    raise ConnectionError("connection closed")
                self.protocol.receive_data(data)

    async def call(self, event: str, payload: Any) -> Any:
        """Emit with an acknowledgement and read until it comes (other messages are skipped)."""
        self._ack_id += 1
        await self.send_text(f"42{self._ack_id}" + json.dumps([event, payload]))
        prefix = f"43{self._ack_id}"
        while not (text := await self.recv_text()).startswith(prefix):
            pass
        return json.loads(text[len(prefix) :])[0]

    async def closed_by_server(self, timeout: float = 10) -> bool:
        """Reads until the server closes the connection (True), or the timeout passes (False)."""
        try:
            while True:
                await self.recv_text(timeout=timeout)
        except (ConnectionError, OSError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


async def _world() -> tuple[Any, Any, Any, str]:
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="watched")
    return alice, project, task, await db(f.token_for)(alice)


async def _served(url: str, token: str, project: Any, task: Any) -> None:
    """A normal client of the same server still joins and receives an update."""
    client = PyClient()
    try:
        await client.connect(url, auth={"token": token})
        assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"]
        await client.wait_for("initial_tasks")
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as rest:
            assert (await rest.patch(f"{url}/api/tasks/{task.pk}/", json={"title": "still served"})).status_code == 200
        assert (await client.wait_for("task_updated", lambda t: t["title"] == "still served"))["title"] == "still served"
    finally:
        await client.close()


async def _stream_binary(raw: RawSocketIO, *, frames: int, size: int) -> int:
    """Send binary frames until the server cuts the connection; the bytes that got out."""
    chunk = b"\0" * size
    sent = 0
    try:
        for _ in range(frames):
            await raw.send_binary(chunk)
            sent += size
    except OSError:
        pass
    return sent


async def test_binary_attachments_and_frames_are_refused_and_not_kept(spawn):
    server = spawn()
    alice, project, task, token = await _world()
    before = rss_mb(server.proc.pid)
    sent = {}
    # Announcing attachments, then streaming them; a binary frame out of the blue; a binary ack.
    for name, first in [
        ("binary event, 1 attachment", '451-["join_project",{"_placeholder":true,"num":0}]'),
        (
            "binary event, 10^9 attachments",
            "451000000000-" + json.dumps(["join_project", *({"_placeholder": True, "num": i} for i in range(50))]),
        ),
        ("binary ack", '461-1[{"_placeholder":true,"num":0}]'),
        ("bare binary frame", None),
    ]:
        raw = await RawSocketIO(server.url).open(token)
        try:
            if first is not None:
                await raw.send_text(first)
            sent[name] = await _stream_binary(raw, frames=300, size=500_000)  # 150 MB if the server kept reading
            assert await raw.closed_by_server(), name
        finally:
            raw.close()
    after = rss_mb(server.proc.pid)
    print(
        f"\nbinary: sent before the cut { ({k: f'{v / MB:.1f} MB' for k, v in sent.items()}) }; server RSS {before:.1f} -> {after:.1f} MB"
    )
    assert all(v < 150 * 500_000 for v in sent.values()), sent  # cut before the end of the stream
    assert after - before < 60, (before, after)

    # Long-polling: a base64 binary message ("b...") closes the session too.
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        eio_sid = json.loads((await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})).text[1:])["sid"]
        params = {"EIO": "4", "transport": "polling", "sid": eio_sid}
        await http.post("/socket.io/", params=params, content="40" + json.dumps({"token": token}))
        assert (await http.get("/socket.io/", params=params)).text.startswith("40")
        await http.post("/socket.io/", params=params, content="bAAECAw==")
        assert (await http.get("/socket.io/", params=params)).status_code == 400  # the session is gone

    await _served(server.url, token, project, task)
    log = server.output()
    assert log.count("binary Socket.IO packet refused") == 3, log[-3000:]
    assert log.count("binary engine.io message refused") == 2, log[-3000:]


async def _stalled_polling(url: str, token: str, project: Any) -> httpx.AsyncClient:
    """A long-polling client that joins the project, then never polls again."""
    http = httpx.AsyncClient(base_url=url, timeout=10)
    eio_sid = json.loads((await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})).text[1:])["sid"]
    params = {"EIO": "4", "transport": "polling", "sid": eio_sid}
    await http.post("/socket.io/", params=params, content="40" + json.dumps({"token": token}))
    assert (await http.get("/socket.io/", params=params)).text.startswith("40")
    await http.post("/socket.io/", params=params, content="421" + json.dumps(["join_project", {"project_id": str(project.pk)}]))
    received = ""
    while '431[{"ok":true' not in received:
        received += (await http.get("/socket.io/", params=params)).text
    return http


async def test_stalled_watchers_are_disconnected_and_memory_stays_bounded(spawn):
    bound = 1_000_000  # bytes unsent per connection (the default is 4 MB; smaller keeps this test light)
    # A short grace: a stalled watcher may stay over the bound this long (a burst to a fast reader may too).
    server = spawn(REALTIME_MAX_BUFFERED_BYTES=str(bound), REALTIME_BUFFER_GRACE_SECONDS="0.5", REALTIME_MAX_CONNECTIONS_PER_USER="200")
    alice, project, task, token = await _world()
    join = {"project_id": str(project.pk)}

    # 40 websocket-born watchers (direct writes) and 10 upgraded from long-polling (engine.io's
    # queue and writer), each with a tiny receive buffer; and 5 long-polling ones that stop polling.
    stalled = [await RawSocketIO(server.url, rcvbuf=4096).open(token, upgrade=i >= 40) for i in range(50)]
    for raw in stalled:
        assert (await raw.call("join_project", join))["ok"]
    pollers = [await _stalled_polling(server.url, token, project) for _ in range(5)]
    # Normal watchers in the same room: websocket-born and upgraded.
    watchers = [PyClient(), PyClient()]
    await watchers[0].connect(server.url, auth={"token": token}, transports=["websocket"])
    await watchers[1].connect(server.url, auth={"token": token})
    for watcher in watchers:
        assert (await watcher.call("join_project", join))["ok"]
        await watcher.wait_for("initial_tasks")

    before = rss_mb(server.proc.pid)
    saves = 500
    latencies = []
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as rest:
            for i in range(saves):
                description = (
                    f"{i}:" + "x" * 19_000
                )  # about 19 KB per event: 9.5 MB per watcher over the run, most of it beyond what the kernel buffers
                started = time.perf_counter()
                response = await rest.patch(f"{server.url}/api/tasks/{task.pk}/", json={"description": description})
                assert response.status_code == 200, response.text
                for watcher in watchers:
                    update = await watcher.wait_for("task_updated", timeout=30)
                    assert update["version"] == i + 2 and update["description"] == description
                latencies.append((time.perf_counter() - started) * 1000)
        peak = after = rss_mb(server.proc.pid)
        log = server.output()
        for _ in range(50):  # the last drops may still be on their way
            if log.count("bytes unsent, client not reading") >= 55:
                break
            await asyncio.sleep(0.2)
            log = server.output()
        after = rss_mb(server.proc.pid)
    finally:
        for raw in stalled:
            raw.close()
        for http in pollers:
            await http.aclose()
        for watcher in watchers:
            await watcher.close()

    print(
        f"\nstalled watchers: server RSS {before:.1f} -> {peak:.1f} MB after {saves} saves ({after:.1f} MB a moment later); "
        f"unbounded, 55 stalled watchers would have been sent {55 * saves * 19_000 / MB:.0f} MB; "
        f"normal watchers' save-to-screen p50 {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms"
    )
    drops = re.findall(r"disconnected \S+: (\d+) bytes unsent, client not reading", log)
    assert len(drops) == 55, log[-3000:]
    # Measured on this machine: +17 MB with the bound; +45 MB without it, growing with every save
    # (uvloop's buffers share one frame object among recipients; the kernel holds up to 4 MB each).
    assert after - before < 35, (before, after)
