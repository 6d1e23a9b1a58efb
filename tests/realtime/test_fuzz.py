"""A fuzz test of the live server's Socket.IO surface (issue 11): random and mutated packets over both transports.

A spawned uvicorn gets at least 100,000 generated frames (tests/support/fuzz.py) over many raw websocket and
long-polling connections; then it must be alive, its log free of tracebacks and unhandled exceptions (refusals
are fine), and a normal client must still connect, join a project and see a REST change. A second, shorter run
does the same against the default abuse limits.

What the fuzz finds that is not fixed yet is listed in ``KNOWN_BUGS`` with a minimal reproduction. The fuzz tests
are expected to fail with ``KnownServerBugs`` alone while any of those occur (anything else fails them), and each
bug has its own strict-xfail reproduction test: once it is fixed, that test passes and pytest asks for the entry
to be removed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import websockets
from django.conf import settings

from chat import services as chat_services
from realtime.dispatcher import Reject
from realtime.server import sio
from tests.conftest import db
from tests.support import factories as f
from tests.support.fuzz import (
    EVENTS,
    Budget,
    Frame,
    Incident,
    KnownBug,
    KnownServerBugs,
    Mutator,
    Stats,
    TextBytes,
    World,
    barrier_packet,
    deep,
    encode,
    huge_frames,
    incidents,
    polling_worker,
    seed_corpus,
    websocket_worker,
)
from tests.support.py_client import PyClient

SEED = 20261129  # one seed for the corpus and the mutator: a failing run can be replayed exactly
FUZZ_PACKETS = 100_000
DEFAULT_LIMITS_PACKETS = 5_000
# Limits lifted for the main run, so the fuzz reaches the handlers instead of the rate limiter.
LIFTED_LIMITS = {
    "REALTIME_EVENT_RATE": "1000000",
    "REALTIME_EVENT_BURST": "1000000",
    "REALTIME_EVENT_ABUSE_DISCONNECT": "1000000",
    "REALTIME_MAX_CONNECTIONS_PER_USER": "100000",
    "REALTIME_AUTH_FAILURES_PER_MINUTE": "100000",
}

# Empty: every bug the fuzz found is fixed, and each has a regression test below (``FORMER_BUGS``). A new
# finding that cannot be fixed at once goes here, with a minimal reproduction, and its own xfail test.
KNOWN_BUGS: tuple[KnownBug, ...] = ()


# --- the world and the checks ---------------------------------------------------------------------


def _make_world() -> tuple[World, Any, Any, Any]:
    alice, bob = f.make_user("alice"), f.make_user("bob")
    project = f.make_project(alice, title="fuzzed")
    task = f.make_task(project, title="before")
    other = f.make_project(bob, title="bob's")
    chat = chat_services.chat_session_create(created_by=alice, title="fuzz chat", participants=["alice"])
    world = World(
        token=f.token_for(alice),
        own_project=str(project.pk),
        other_project=str(other.pk),
        chat_session=str(chat.pk),
        max_message_bytes=settings.REALTIME_MAX_MESSAGE_BYTES,
    )
    return world, alice, project, task


async def fuzz(url: str, world: World, *, total: int, seed: int, websockets_n: int = 4, polling_n: int = 2) -> Stats:
    """Send ``total`` generated frames to the server at ``url`` over several connections of both transports."""
    seeds, shakes = await asyncio.to_thread(seed_corpus, world, examples=600, seed=seed)
    rng = random.Random(seed)
    mutator = Mutator(seeds, seed)
    huge = huge_frames(world)

    def stream() -> Any:
        while True:
            # A huge frame about once in 4,000: every size class still goes out in a run.
            yield rng.choice(huge) if rng.random() < 1 / 4_000 else mutator.next()

    budget, stats = Budget(stream(), total), Stats()
    workers = [websocket_worker(url, budget, shakes, stats, random.Random(seed + i), batch=200) for i in range(websockets_n)]
    workers += [polling_worker(url, budget, shakes, world.token, stats, random.Random(seed + 100 + i)) for i in range(polling_n)]
    await asyncio.gather(*workers)
    return stats


async def assert_normal_client_served(url: str, world: World, task: Any) -> None:
    """A well-behaved client connects, joins the project and sees a REST PATCH of one of its tasks."""
    client = PyClient()
    await client.connect(url, auth={"token": world.token})
    try:
        assert await client.call("join_project", {"project_id": world.own_project}, timeout=10) == {
            "ok": True,
            "project_id": world.own_project,
        }
        await client.wait_for("initial_tasks", timeout=10)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            response = await http.patch(
                f"/api/tasks/{task.pk}/", json={"title": "after the fuzz"}, headers={"Authorization": f"Bearer {world.token}"}
            )
        assert response.status_code == 200, response.text
        update = await client.wait_for("task_updated", lambda t: t["title"] == "after the fuzz", timeout=10)
        assert update["id"] == str(task.pk)
    finally:
        await client.close()


def triage(found: list[Incident], stats: Stats, refusals: int) -> None:
    """Fail on anything unknown; then, if only known bugs occurred, fail with ``KnownServerBugs`` (the xfail)."""
    unknown = [i for i in found if i.bug is None]
    known: dict[str, list[Incident]] = {}
    for incident in found:
        if incident.bug is not None:
            known.setdefault(incident.bug.id, []).append(incident)
    print(stats.line())
    print(f"fuzz: {len(found)} log incidents ({len(unknown)} unknown), {refusals} engine.io refusal lines (expected)")
    for bug in KNOWN_BUGS:
        print(f"  known bug {bug.id}: {len(known.get(bug.id, []))} incidents")
    if unknown:
        heads: dict[str, int] = {}
        for incident in unknown:
            heads[incident.headline] = heads.get(incident.headline, 0) + 1
        listing = "\n".join(f"  {n} x {head}" for head, n in sorted(heads.items(), key=lambda kv: -kv[1]))
        first = "\n\n".join(i.text[:4_000] for i in unknown[:3])
        raise AssertionError(f"unknown failures in the server's log (seed {SEED}):\n{listing}\n\nfirst ones:\n{first}")
    if known:
        lines = [
            f"  {bug.id} ({len(known[bug.id])}x) in {bug.where}: {bug.summary}; repro {bug.repro!r}"
            for bug in KNOWN_BUGS
            if bug.id in known
        ]
        raise KnownServerBugs("the fuzz hit known, unfixed bugs:\n" + "\n".join(lines))


async def _fuzz_run(spawn: Any, *, total: int, **env: str) -> None:
    world, _, _, task = await db(_make_world)()
    server = spawn(**env)
    started = time.monotonic()
    stats = await fuzz(server.url, world, total=total, seed=SEED)
    elapsed = time.monotonic() - started
    print(f"fuzz: {stats.packets / elapsed:,.0f} packets/s over {elapsed:.1f} s")

    assert stats.packets >= total, stats.line()
    assert server.proc is not None and server.proc.poll() is None, f"the server died:\n{server.output()[-4_000:]}"
    await assert_normal_client_served(server.url, world, task)
    assert server.proc.poll() is None
    found, refusals = incidents(server.output(), KNOWN_BUGS)
    print(f"fuzz: {stats.packets} packets over {stats.connections} connections, {stats.server_closed} server-closed; 0 crashes")
    triage(found, stats, refusals)


XFAIL_KNOWN = pytest.mark.xfail(
    bool(KNOWN_BUGS), raises=KnownServerBugs, strict=True, reason="known unfixed bugs (KNOWN_BUGS, each with its own reproduction test)"
)


@XFAIL_KNOWN
async def test_fuzz_the_socketio_surface_with_lifted_limits(spawn):
    await _fuzz_run(spawn, total=FUZZ_PACKETS, **LIFTED_LIMITS)


@XFAIL_KNOWN
async def test_fuzz_with_the_default_abuse_limits(spawn):
    await _fuzz_run(spawn, total=DEFAULT_LIMITS_PACKETS)


# --- regression tests: each bug the fuzz found, with its variants, against the in-process server ----------


class Captured(logging.Handler):
    """Every record at WARNING or above from the root and uvicorn's error logger (which does not propagate)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @contextlib.contextmanager
    def attached(self) -> Any:
        loggers = [logging.getLogger(), logging.getLogger("uvicorn.error")]
        for logger in loggers:
            logger.addHandler(self)
        try:
            yield self
        finally:
            for logger in loggers:
                logger.removeHandler(self)

    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class FormerBug:
    """A bug the fuzz found (fixed): frames that reproduced it, and what the server must answer now."""

    id: str
    frames: tuple[Frame, ...] = ()  # sent after a successful token handshake (or as the handshake, see ``handshake``)
    handshake: bool = False
    polling_bodies: tuple[str | bytes, ...] = ()  # long-polling POST bodies instead of websocket frames
    closed: bool = False  # the server ends the connection (a websocket closes; a polling session is refused 400)
    close_code: int | None = None  # the websocket's close code, when it matters
    answer: str = ""  # a regex one message from the server must match
    log: str = ""  # a regex one WARNING line in the server's log must match (the refusal, on one line)


def former(id: str, *variants: Frame, **expect: Any) -> list[Any]:
    """One case per variant frame: the server closes on the first malformed frame, so each needs its own connection."""
    return [pytest.param(FormerBug(id, (frame,), **expect), id=f"{id}-{i}") for i, frame in enumerate(variants)]


MALFORMED_SIO = r"WARNING realtime\.limits: disconnected \S+: malformed Socket\.IO packet \(.+\)$"
MALFORMED_EIO = r"WARNING realtime\.eio: disconnected \S+: malformed engine\.io packet \(.+\)$"
MALFORMED_ANY = r"WARNING realtime\.(eio|limits): disconnected \S+: malformed (engine\.io|Socket\.IO) packet \(.+\)$"
FORMER_BUGS = [
    # python-engineio 4.15 decoded websocket frames outside its try: "Exception in ASGI application".
    *former("eio-empty-frame", "", closed=True, log=MALFORMED_EIO),
    *former("eio-undecodable-frame", "x", "4" + deep(10_000, "["), "bA", closed=True, log=MALFORMED_EIO),
    # ... and named packet types 7-9 by indexing a 7-item list: "Unknown receive error" with IndexError.
    *former("eio-unknown-packet-type", "9", "7", closed=True, log=MALFORMED_EIO),
    # python-socketio 5.18 decoded outside any try: "message async handler error" with a traceback.
    *former(
        "sio-undecodable-packet",
        "4x",
        "42[",
        "42" + deep(10_000, "["),
        '42["join_project",' + "9" * 5_000 + "]",
        "42" + "1" * 101 + '["a"]',
        closed=True,
        log=MALFORMED_SIO,
    ),
    *former("sio-event-without-data", "42", "421[]", "421{}", "42null", closed=True, log=MALFORMED_SIO),
    *former("sio-unexpected-packet-type", "44", "47", "49[]", closed=True, log=MALFORMED_SIO),
    pytest.param(
        FormerBug("sio-binary-before-connect", ('451-["a",{"_placeholder":true,"num":0}]',), handshake=True, closed=True),
        id="sio-unexpected-packet-type-binary-before-connect",
    ),
    # realtime's binary check sliced whatever engine.io had decoded as JSON.
    # (engine.io's JSON-decoded messages are now refused by realtime.eio already; the empty one by realtime.server)
    *former("binary-check-on-json-message", "4{}", "4-1", "4true", "4null", "4[5]", "4", closed=True, log=MALFORMED_ANY),
    # realtime's dispatcher sliced and hashed the event name: non-strings are unknown events, the connection stays.
    *former(
        "event-name-not-a-string",
        "421[5,{}]",
        "421[null]",
        '421[["a"]]',
        '421["connect",{}]',
        "421[" + deep(900, "[") + "]",
        answer=r'^431\[\{"ok":false,"error":"unknown event: (<(int|NoneType|list)>|\x27connect\x27)"\}\]$',
        log=r"WARNING realtime\.dispatcher: refused (<\w+>|'connect') from \S+: unknown event: (<\w+>|'connect')$",
    ),
    # hash_token encoded the raw token as strict UTF-8.
    *former(
        "token-lone-surrogate",
        '40{"token":"\\ud800"}',
        '40{"token":"a\\udfffb"}',
        handshake=True,
        answer=r'^44\{"message":"invalid token"\}$',
        log=r"refused connection \S+: invalid token$",
    ),
    # uvicorn closes (1007) as it should; it logged the client's fault as a traceback.
    *former(
        "uvicorn-invalid-utf8-text-frame",
        TextBytes(b"4\xff"),
        TextBytes(b'42["join_project",{"project_id":"\xc0\x80"}]'),
        closed=True,
        close_code=1007,
        log=r"WARNING uvicorn\.error: websocket closed \(1007\): the client sent a text frame that is not UTF-8$",
    ),
    # python-engineio 4.15 logged any undecodable long-polling payload with a traceback and answered 200.
    *[
        pytest.param(
            FormerBug("eio-polling-bad-payload", polling_bodies=(body,), closed=True, log=r"malformed engine\.io payload \(.+\)$"),
            id=f"eio-polling-bad-payload-{i}",
        )
        for i, body in enumerate(["\x1e".join(["3"] * 17), b"4\xff", "x", "9", "4" + deep(10_000, "["), "3\x1e\x1e3"])
    ],
    # ... and a POST to a session it had just closed escaped as KeyError 'Session is disconnected'.
    pytest.param(FormerBug("eio-polling-closed-session", polling_bodies=("1", "3"), closed=True), id="eio-polling-closed-session"),
    # Found once the above was fixed: a payload whose own CLOSE precedes a packet engine.io refuses ('0', '2').
    pytest.param(FormerBug("eio-polling-close-then-junk", polling_bodies=("1\x1e0", "3"), closed=True), id="eio-polling-close-then-junk"),
]


@dataclass
class Answer:
    """What the server did with a case's frames."""

    messages: list[str] = field(default_factory=list)
    closed: bool = False
    close_code: int | None = None
    statuses: list[int] = field(default_factory=list)


async def send_case(url: str, token: str, case: FormerBug) -> Answer:
    """Send a case's frames (after a token handshake, unless the frames are the handshake) and observe the answer.

    Over a websocket a barrier event follows the frames: handled in order, its acknowledgement means the server
    handled the frames and kept the connection. Over long-polling, each POST's status is kept.
    """
    answer = Answer()
    if case.polling_bodies:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            opened = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
            params = {"EIO": "4", "transport": "polling", "sid": json.loads(opened.text[1:])["sid"]}
            connected = await http.post("/socket.io/", params=params, content="40" + encode({"token": token}))
            assert connected.status_code == 200
            for body in case.polling_bodies:
                answer.statuses.append((await http.post("/socket.io/", params=params, content=body)).status_code)
            answer.closed = answer.statuses[-1] == 400
        return answer
    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with websockets.connect(ws_url, close_timeout=1) as ws:
        try:
            await ws.recv()  # Engine.IO OPEN
            if not case.handshake:
                await ws.send("40" + encode({"token": token}))
                assert (await ws.recv()).startswith("40{")
            for frame in case.frames:
                await (ws.send(bytes(frame), text=True) if isinstance(frame, TextBytes) else ws.send(frame))
            await ws.send(barrier_packet(7))
            async for message in ws:
                if message == "2":
                    await ws.send("3")
                    continue
                answer.messages.append(message)
                if message.startswith("437"):
                    return answer  # the barrier's acknowledgement: the connection is still served
                if message.startswith("44"):
                    return answer  # the handshake was refused
        except websockets.ConnectionClosed:
            pass
        answer.closed, answer.close_code = True, ws.close_code
    return answer


async def assert_still_served(url: str, token: str) -> None:
    """A fresh connection is served; its answer also orders us after the server's log lines about the case."""
    client = PyClient()
    await client.connect(url, auth={"token": token})
    try:
        assert (await client.call("leave_project", {"project_id": str(uuid.uuid4())}))["ok"] is True
    finally:
        await client.close()


def assert_clean_log(captured: Captured, expected: str) -> None:
    """No traceback or ERROR in the log (engine.io's own refusal lines aside), and the refusal on one warning line."""
    found, _ = incidents(captured.text(), ())
    assert not found, f"{found[0].headline}\n{found[0].text[:3_000]}"
    if expected:
        assert any(re.search(expected, line) for line in captured.lines), captured.lines


@pytest.mark.parametrize("case", FORMER_BUGS)
async def test_malformed_input_is_refused_cleanly(server, case):
    """Each bug the fuzz found: the input is refused (answered with a reason, or its connection closed), logged on one line."""
    alice = await db(f.make_user)("alice")
    token = await db(f.token_for)(alice)
    with Captured().attached() as captured:
        answer = await send_case(server.url, token, case)
        await asyncio.sleep(0)  # the connection's teardown logs in the server's thread: let the client's close land first
        await assert_still_served(server.url, token)
    if case.closed:
        assert answer.closed, f"the server kept the connection: {answer}"
        assert not any(m.startswith("437") for m in answer.messages)
    else:
        assert not answer.closed, f"the server closed the connection: {answer}"
    if case.close_code is not None:
        assert answer.close_code == case.close_code, answer
    if case.polling_bodies:
        assert answer.statuses[-1] == 400, answer  # engine.io's "bad request", not 200 "ok" nor a 500
    if case.answer:
        assert any(re.search(case.answer, m) for m in answer.messages), answer.messages
    assert_clean_log(captured, case.log)


def _masked(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 §5.2), payload under 126 bytes."""
    mask = os.urandom(4)
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def test_invalid_utf8_with_the_clients_close_in_one_read_is_a_warning(server):
    """Former race (uvicorn-close-race): a text frame that is not UTF-8 and the client's close frame arrive together.

    uvicorn's ``send_close(1007)`` then meets a connection that is already closing and raises websockets'
    ``InvalidState`` out of ``data_received``: the loop aborts the transport and logged "Fatal error on transport".
    Sent in one write on loopback, both frames arrive in one read, so the race is reproduced every time.
    """
    alice = await db(f.make_user)("alice")
    token = await db(f.token_for)(alice)
    sockets_before = set(sio.eio.sockets)
    with Captured().attached() as captured:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        await reader.readexactly(2)  # the OPEN frame's header (unmasked, short)...
        writer.write(_masked(0x1, b"4\xff") + _masked(0x8, (1000).to_bytes(2, "big")))
        await writer.drain()
        await asyncio.wait_for(reader.read(), timeout=10)  # ...the rest, until the server ends the connection
        writer.close()
        # Nothing is left behind: engine.io saw the transport end and forgot the session.
        for _ in range(100):
            if not set(sio.eio.sockets) - sockets_before:
                break
            await asyncio.sleep(0.05)
        assert not set(sio.eio.sockets) - sockets_before
        await assert_still_served(server.url, token)
    assert_clean_log(captured, r"WARNING asyncio: websocket aborted: the client closed while its text frame that is not UTF-8 was refused$")


async def test_a_join_on_a_connection_that_has_gone_is_refused(server):
    """Former race (enter-room-after-disconnect): a join still running when its connection closed raised KeyError."""
    namespace = sio.namespace_handlers["/"]
    with pytest.raises(Reject, match="the connection is closed"):
        await namespace.enter_room("no-such-sid", str(uuid.uuid4()))


async def test_a_client_connect_event_on_a_connection_that_has_gone_is_ignored(server):
    """Found by the fuzz once the above were fixed: a client's "connect" event still queued when its connection closed
    ran the connect handler, whose refusal escaped the event's task ("Task exception was never retrieved")."""
    namespace = sio.namespace_handlers["/"]
    assert await namespace.trigger_event("connect", "no-such-sid", {"REMOTE_ADDR": "127.0.0.1"}, {"token": "x"}) is None


def test_the_generated_corpus_covers_the_brief():
    """Cheap guard on the generator: every real event, every packet type, binary, invalid UTF-8 and deep JSON are drawn."""
    world = World("t" * 43, str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()), 1_000_000)
    seeds, shakes = seed_corpus(world, examples=600, seed=SEED)
    mutator = Mutator(seeds, SEED)
    sample = seeds + [mutator.next() for _ in range(5_000)]
    texts = [s for s in sample if isinstance(s, str)]
    for event in EVENTS:
        assert any(f'"{event}"' in t for t in texts), event
    assert {t[:1] for t in texts if t} >= set("0123456")
    assert {t[1:2] for t in texts if t.startswith("4")} >= set("0123456")
    assert any(isinstance(s, TextBytes) for s in sample) and any(isinstance(s, bytes) and not isinstance(s, TextBytes) for s in sample)
    assert any(deep(1_000, "[") in t or deep(1_000, "{") in t for t in texts)
    assert any(world.token in s for s in shakes) and any(world.token not in s for s in shakes)
    assert max(len(s) for s in huge_frames(world)) > world.max_message_bytes
