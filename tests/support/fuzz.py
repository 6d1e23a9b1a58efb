"""Fuzzing the live Socket.IO surface: generated frames, a seeded mutator, raw clients for both transports, log triage.

Frames are built in two stages so that 100,000 of them cost seconds, not minutes: hypothesis strategies
draw a few thousand *seed* frames (Engine.IO packets, Socket.IO packets, event payloads for every real
event, handshakes), then a seeded ``random`` mutator (bit flips, truncation, duplication, splicing, type
swaps) derives the rest from them. The clients are raw: a ``websockets`` connection, or long-polling
over ``httpx``, so nothing between the fuzz and the server tidies the input up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

# --- frames --------------------------------------------------------------------------------------


class TextBytes(bytes):
    """Raw bytes sent as a websocket *text* frame (so invalid UTF-8 reaches the server as text)."""


Frame = str | bytes  # str: a text frame; bytes: a binary frame; TextBytes: a text frame of raw bytes

EVENTS = (
    "join_project",
    "leave_project",
    "subscribe_projects",
    "unsubscribe_projects",
    "subscribe_progress",
    "unsubscribe_progress",
    "crawl_subscribe",
    "crawl_unsubscribe",
    "crawl_stop",
    "join_chat",
    "leave_chat",
    "chat_message",
)
# The key each event's payload is about; events without one take an empty object.
ID_KEY = {
    "join_project": "project_id",
    "leave_project": "project_id",
    "subscribe_progress": "progress_id",
    "unsubscribe_progress": "progress_id",
    "crawl_subscribe": "progress_id",
    "crawl_unsubscribe": "progress_id",
    "crawl_stop": "progress_id",
    "join_chat": "session_id",
    "leave_chat": "session_id",
    "chat_message": "session_id",
}
DEEP = (10, 100, 500, 900, 950, 990, 1_000, 2_000, 10_000)  # nesting depths around Python's recursion limit


@dataclass(frozen=True)
class World:
    """Ids the fuzz can aim at: the user's own objects, someone else's, and none at all."""

    token: str
    own_project: str
    other_project: str
    chat_session: str
    max_message_bytes: int


# Placeholders in generated frames, replaced by the world's real values after generation, so every
# strategy below is built once (hypothesis validates a strategy on first use: building them per draw is slow).
OWN, OTHER, CHAT, TOKEN = "@OWN@", "@OTHER@", "@CHAT@", "@TOKEN@"


@functools.lru_cache
def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value Python can encode: big numbers, NaN and infinities, lone surrogates, control characters."""
    text = st.one_of(
        st.text(max_size=40),
        st.text(st.characters(codec=None, categories=["Cs", "Cc", "Co", "So", "Zs"]), max_size=8),
        st.sampled_from(["", "null", "__proto__", "constructor", "' OR 1=1 --", "../../etc/passwd", "\x00", "\ud800", "%s%n"]),
    )
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=True, allow_infinity=True),
        text,
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(text, children, max_size=5)),
        max_leaves=max_leaves,
    )


def encode(value: Any) -> str:
    """JSON as a client might send it (``NaN`` and ``Infinity`` included, lone surrogates escaped)."""
    return json.dumps(value, separators=(",", ":"))


def deep(depth: int, kind: str) -> str:
    """A JSON array or object nested ``depth`` levels deep (built as text: no recursion here)."""
    if kind == "[":
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


UUIDISH = st.one_of(  # something in an id's place: a real id, a random UUID, a UUID-ish string, or the wrong type
    st.sampled_from([OWN, OTHER, CHAT]),
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex.upper()),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
    st.tuples(st.uuids(), st.integers(0, 35)).map(lambda t: str(t[0])[: t[1]]),
    st.uuids().map(lambda u: str(u) + "\x00"),
    st.text(alphabet="0123456789abcdef-", max_size=40),
    json_values(4),
)
BODIES = st.one_of(st.text(max_size=60), st.just("x" * 4_001), st.just(""), json_values(3))
EXTRA_KEYS = st.dictionaries(st.text(max_size=12), json_values(3), min_size=1, max_size=3)
MORE_ARGS = st.lists(json_values(3), min_size=1, max_size=6)
DEEP_JSON = st.tuples(st.sampled_from(DEEP), st.sampled_from("[{")).map(lambda t: deep(*t))


@dataclass(frozen=True)
class _Raw:
    """A JSON fragment spliced in as text (deep nesting the encoder would refuse to build)."""

    text: str
    key: str


@st.composite
def event_args(draw: st.DrawFn, event: str) -> list[Any]:
    """The arguments after the event name: right, wrong types, missing or extra keys, many args."""
    key = ID_KEY.get(event)
    payload: Any = {key: draw(UUIDISH)} if key else {}
    if event == "chat_message":
        payload["body"] = draw(BODIES)
    shape = draw(st.integers(0, 9))
    if shape == 1 and payload:
        payload.pop(draw(st.sampled_from(sorted(payload))))  # a key missing
    elif shape == 2:
        payload.update(draw(EXTRA_KEYS))  # extra keys
    elif shape == 3:
        payload = draw(json_values())  # not an object at all
    elif shape == 4:
        return [payload, *draw(MORE_ARGS)]  # many arguments
    elif shape == 5:
        return []  # no payload
    elif shape == 6:
        payload["pad"] = "x" * draw(st.sampled_from([16_000, 16_400, 17_000]))  # around the payload size limit
    elif shape == 7:  # a deeply nested value in the id's place
        return [_Raw(draw(DEEP_JSON), key or "x")]
    return [payload]


EVENT_ARGS = {event: event_args(event) for event in EVENTS}


def _encode_args(event: Any, args: list[Any]) -> str:
    parts = [encode(event)]
    for arg in args:
        parts.append("{" + encode(arg.key) + ":" + arg.text + "}" if isinstance(arg, _Raw) else encode(arg))
    return "[" + ",".join(parts) + "]"


PACKET_TYPES = st.one_of(st.sampled_from("0123456"), st.just("2"), st.sampled_from(["7", "9", "x", "-", "", " "]))
ATTACHMENTS = st.sampled_from(["0-", "1-", "2-", "5-", "-1-", "99999999999-", "4294967296-", "a-"])
NAMESPACES = st.sampled_from(["", "", "", "", "/,", "/nope,", "/admin,", "/?x=1,", "/" + "n" * 300 + ",", "//,", "/"])
ACK_IDS = st.one_of(st.just(""), st.just(""), st.integers(0, 10**6).map(str), st.sampled_from(["-1", "0", "9" * 99, "9" * 101, "1e5"]))
EVENT_NAMES = st.one_of(
    st.sampled_from(EVENTS), st.sampled_from(EVENTS), json_values(3), st.sampled_from(["connect", "disconnect", "message", "*"])
)
MALFORMED_JSON = st.sampled_from(
    ['["join_project",', "[", "]", "{", '["a"', "[1,]", "{'a':1}", "[NaN]", "[-]", "nul", '"\\ud800"', "[1e99999]"]
)


@st.composite
def sio_packets(draw: st.DrawFn) -> str:
    """A Socket.IO packet (without the Engine.IO ``4``): types 0-6 and beyond, namespaces, ack ids, attachments, data."""
    ptype = draw(PACKET_TYPES)
    attachments = draw(ATTACHMENTS) if ptype in ("5", "6") or draw(st.integers(0, 20)) == 0 else ""
    namespace, ack, kind = draw(NAMESPACES), draw(ACK_IDS), draw(st.integers(0, 9))
    if kind <= 5:  # an event, real or not
        event = draw(EVENT_NAMES)
        name = event if isinstance(event, str) and event in EVENTS else draw(st.sampled_from(EVENTS))
        body = _encode_args(event, draw(EVENT_ARGS[name]))
    elif kind == 6:
        body = draw(MALFORMED_JSON)
    elif kind == 7:
        body = draw(DEEP_JSON)
    elif kind == 8:  # binary placeholders, real or fake
        body = encode(["join_project", {"_placeholder": True, "num": draw(st.integers(-2, 10))}])
    else:
        body = encode(draw(json_values()))
    return ptype + attachments + namespace + ack + body


SIO_PACKETS = sio_packets()
OTHER_EIO_PAYLOADS = st.one_of(st.just(""), st.just("probe"), st.text(max_size=20), json_values(3).map(encode))
NONSENSE = st.sampled_from(["", "7", "9", "x", " ", "-1", "44", "\u0663", "b", "bAAAA", "b!!!", "4\x00"])
BINARY = st.one_of(st.binary(max_size=64), st.sampled_from([b"", b"\x04", b"\x00\x01", b"451-[]"]))


@st.composite
def eio_frames(draw: st.DrawFn) -> Frame:
    """One Engine.IO frame: mostly a Socket.IO message, else the other packet types, nonsense, binary, invalid UTF-8."""
    kind = draw(st.integers(0, 19))
    if kind == 12:  # the other packet types, with random payloads
        return draw(st.sampled_from("0123456")) + draw(OTHER_EIO_PAYLOADS)
    if kind == 13:  # invalid types and empties
        return draw(NONSENSE)
    if kind == 14:  # binary frames
        return draw(BINARY)
    if kind == 15:  # invalid UTF-8 as a text frame
        return TextBytes(b"4" + draw(st.binary(min_size=1, max_size=16)) + b"\xff\xfe\xc0\x80")
    if kind == 16:
        return "4" + draw(DEEP_JSON)
    return "4" + draw(SIO_PACKETS)


def huge_frames(world: World) -> list[Frame]:
    """Big frames, within and over the maximum message size: sent rarely, they cost bandwidth rather than find bugs."""
    sizes = (20_000, 100_000, 500_000, world.max_message_bytes - 64, world.max_message_bytes + 10, 3 * world.max_message_bytes)
    frames: list[Frame] = ['42["chat_message",{"session_id":"' + world.chat_session + '","body":"' + "y" * size + '"}]' for size in sizes]
    frames += ["4" + deep(size // 2, "[") for size in sizes[:3]]
    frames += [b"\x04" * size for size in sizes[-2:]]
    return frames


TOKEN_LIKE = st.one_of(json_values(3), st.text(max_size=300))
EXTRA_AUTH = st.dictionaries(st.text(max_size=8), json_values(2), max_size=3)


@st.composite
def handshakes(draw: st.DrawFn) -> str:
    """The Socket.IO CONNECT (after Engine.IO's ``4``): the real token, or garbage in its place."""
    kind = draw(st.integers(0, 9))
    if kind <= 3:
        return "40" + encode({"token": TOKEN})
    if kind == 4:
        return "40" + encode({"token": draw(TOKEN_LIKE)})
    if kind == 5:
        return "40" + encode(draw(json_values()))
    if kind == 6:
        return "40" + draw(st.sampled_from(["", "{", "/nope,", "/nope,{}", '{"token":"\\ud800"}', "[]", "null", deep(2_000, "{")]))
    if kind == 7:
        return draw(st.sampled_from(["41", "42", "43", "44", "45", "46", "4", "1", "2", "3", "5", "6"]))
    if kind == 8:
        return "40" + encode({"token": TOKEN[:-2]})  # a truncated token
    return "40" + encode({"token": TOKEN, **draw(EXTRA_AUTH)})


def _place(frame: Frame, world: World) -> Frame:
    """The frame with the placeholders replaced by the world's ids and token."""
    if not isinstance(frame, str):
        return frame
    for placeholder, value in ((OWN, world.own_project), (OTHER, world.other_project), (CHAT, world.chat_session), (TOKEN, world.token)):
        frame = frame.replace(placeholder, value)
    return frame


def seed_corpus(world: World, *, examples: int, seed: int) -> tuple[list[Frame], list[str]]:
    """Draw seed frames and handshakes with hypothesis (generate phase only: nothing here can fail)."""
    frames: list[Frame] = []
    shakes: list[str] = []

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(eio_frames(), min_size=1, max_size=12), handshakes())
    @hypothesis_seed(seed)
    def collect(batch: list[Frame], shake: str) -> None:
        frames.extend(_place(frame, world) for frame in batch)
        shakes.append(_place(shake, world))

    collect()
    return frames, shakes


class Mutator:
    """Derives new frames from the seeds: bit flips, truncation, duplication, splicing, type swaps."""

    def __init__(self, seeds: list[Frame], seed: int) -> None:
        self.seeds = seeds
        self.rng = random.Random(seed)

    def __iter__(self) -> Iterator[Frame]:
        while True:
            yield self.next()

    def next(self) -> Frame:
        rng = self.rng
        frame = rng.choice(self.seeds)
        roll = rng.random()
        if roll < 0.3:
            return frame  # a seed as drawn
        raw = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else bytes(frame)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            raw = self._mutate(raw)
        if isinstance(frame, bytes) and not isinstance(frame, TextBytes):
            return raw
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # Invalid UTF-8 ends a websocket at once (close 1007): keep a quarter, so connections live long enough
            # for the rest of the fuzz to reach the server.
            return TextBytes(raw) if rng.random() < 0.25 else raw.decode("utf-8", "replace")

    def _mutate(self, raw: bytes) -> bytes:
        rng = self.rng
        op = rng.randrange(8)
        if not raw:
            return bytes([rng.randrange(256)])
        i = rng.randrange(len(raw))
        if op == 0:  # bit flip, mostly past the packet types so the packet still gets parsed
            i = rng.randrange(min(len(raw), 2), len(raw)) if len(raw) > 2 and rng.random() < 0.9 else i
            return raw[:i] + bytes([raw[i] ^ (1 << rng.randrange(8))]) + raw[i + 1 :]
        if op == 1:  # truncation
            return raw[: max(1, i)]
        if op == 2:  # duplication of a slice
            j = rng.randrange(i, min(len(raw), i + 64) + 1)
            return raw[:j] + raw[i:j] + raw[j:]
        if op == 3:  # splice with another seed
            other = rng.choice(self.seeds)
            other_raw = other.encode("utf-8", "surrogatepass") if isinstance(other, str) else bytes(other)
            return raw[:i] + other_raw[rng.randrange(len(other_raw) + 1) :]
        if op == 4:  # swap a Socket.IO packet type (the second character)
            return raw[:1] + bytes([rng.choice(b"0123456789")]) + raw[2:] if len(raw) > 1 else raw
        if op == 5:  # insert an interesting byte
            return raw[:i] + bytes([rng.choice(b'\x00\x1e"[]{},-/\\\xff')]) + raw[i:]
        if op == 6:  # delete a run
            return raw[:i] + raw[i + rng.randrange(1, 8) :]
        return raw[:i] + rng.choice([b"9999999999999999999999", b"-1", b"NaN", b"1e309", b'"\\ud800"', b"null"]) + raw[i:]


# --- raw clients -----------------------------------------------------------------------------------


@dataclass
class Stats:
    """What one fuzz run did (every packet counted once it was handed to the transport)."""

    packets: int = 0
    connections: int = 0
    server_closed: int = 0
    refused_handshakes: int = 0
    stalled: int = 0  # barrier not answered (e.g. the server waits for binary attachments): reconnected
    acks: int = 0
    by_transport: dict[str, int] = field(default_factory=lambda: {"websocket": 0, "polling": 0})

    def line(self) -> str:
        return (
            f"fuzz: {self.packets} packets over {self.connections} connections, {self.server_closed} server-closed; "
            f"{self.by_transport['websocket']} by websocket, {self.by_transport['polling']} by long-polling; "
            f"{self.refused_handshakes} handshakes refused, {self.stalled} stalled, {self.acks} acks"
        )


class Budget:
    """A shared packet budget; workers take frames from one stream, and give back what they could not send."""

    def __init__(self, frames: Iterator[Frame], total: int) -> None:
        self.frames = frames
        self.left = total
        self._returned: list[Frame] = []

    def take(self, n: int) -> list[Frame]:
        n = min(n, self.left)
        self.left -= n
        taken, self._returned = self._returned[:n], self._returned[n:]
        return taken + [next(self.frames) for _ in range(n - len(taken))]

    def give_back(self, frames: list[Frame]) -> None:
        self.left += len(frames)
        self._returned.extend(frames)


ACK = re.compile(r"^43(\d+)")
BARRIER_TIMEOUT = 1.5  # pacing only: an unanswered barrier means "reconnect", never a failure


def barrier_packet(ack_id: int) -> str:
    """A cheap, valid, acknowledged event: once its ack is back, the server has handled everything before it."""
    return "42" + str(ack_id) + encode(["leave_project", {"project_id": str(uuid.uuid4())}])


class _Session:
    """What a reader shares with its sender: the acks seen, and whether the server has ended the connection."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.acked: dict[int, asyncio.Event] = {}
        self.connected = asyncio.Event()
        self.gone = asyncio.Event()
        self.next_ack = 10**9

    def on_message(self, message: str) -> str | None:
        """Note a message from the server; returns a reply to send, if any."""
        if message == "2":
            return "3"  # answer pings, so only the fuzz decides when a connection ends
        if message.startswith("40"):
            self.connected.set()
        elif message.startswith("44"):
            self.stats.refused_handshakes += 1
            self.gone.set()
        elif message == "1":
            self.gone.set()
        elif m := ACK.match(message):
            self.stats.acks += 1
            if (event := self.acked.pop(int(m.group(1)), None)) is not None:
                event.set()
        return None

    def barrier(self) -> tuple[str, asyncio.Event]:
        self.next_ack += 1
        self.acked[self.next_ack] = done = asyncio.Event()
        return barrier_packet(self.next_ack), done

    async def wait(self, event: asyncio.Event) -> bool:
        """Wait for ``event``, or for the server to end the connection, or ``BARRIER_TIMEOUT``; True when ``event`` came."""
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(self.gone.wait())]
        await asyncio.wait(waiters, timeout=BARRIER_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        return event.is_set()


async def websocket_worker(url: str, budget: Budget, shakes: list[str], stats: Stats, rng: random.Random, *, batch: int) -> None:
    """Connect, handshake, send batches with a barrier after each; reconnect whenever the server closes."""
    ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    while budget.left > 0:
        stats.connections += 1
        session = _Session(stats)
        try:
            async with websockets.connect(ws_url, max_size=None, compression=None, open_timeout=10, close_timeout=1) as ws:
                await _websocket_session(ws, session, budget, shakes, rng, batch=batch)
        except (websockets.ConnectionClosed, OSError, TimeoutError, websockets.InvalidHandshake):
            session.gone.set()
        if session.gone.is_set():
            stats.server_closed += 1


async def _websocket_session(ws: Any, session: _Session, budget: Budget, shakes: list[str], rng: random.Random, *, batch: int) -> None:
    stats = session.stats

    async def read() -> None:
        try:
            async for message in ws:
                if isinstance(message, str) and (reply := session.on_message(message)) is not None:
                    await ws.send(reply)
        finally:
            session.gone.set()

    async def send(frame: Frame) -> None:
        await (ws.send(bytes(frame), text=True) if isinstance(frame, TextBytes) else ws.send(frame))
        stats.packets += 1
        stats.by_transport["websocket"] += 1

    reader = asyncio.create_task(read())
    try:
        shake = rng.choice(shakes)
        await send(shake)
        if not shake.startswith("40{") or not await session.wait(session.connected):
            return  # a garbage or refused handshake: whatever the server does with it, start afresh
        while budget.left > 0 and not session.gone.is_set():
            frames = budget.take(rng.randint(1, batch))
            for i, frame in enumerate(frames):
                try:
                    await send(frame)
                except websockets.ConnectionClosed:
                    budget.give_back(frames[i:])
                    raise
            packet, done = session.barrier()
            await ws.send(packet)
            if not await session.wait(done):
                if not session.gone.is_set():
                    stats.stalled += 1  # e.g. the server waits for attachments: start afresh
                return
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader


async def polling_worker(url: str, budget: Budget, shakes: list[str], token: str, stats: Stats, rng: random.Random) -> None:
    """Long-polling sessions: POST bodies of 1-20 packets (16 is Engine.IO's maximum), a GET loop drains the replies."""
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10, read=40)) as http:
        while budget.left > 0:
            stats.connections += 1
            session = _Session(stats)
            try:
                await _polling_session(http, session, budget, shakes, token, rng)
            except (httpx.TransportError, ValueError, KeyError):
                session.gone.set()
            if session.gone.is_set():
                stats.server_closed += 1


async def _polling_session(
    http: httpx.AsyncClient, session: _Session, budget: Budget, shakes: list[str], token: str, rng: random.Random
) -> None:
    stats = session.stats
    opened = await http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
    opened.raise_for_status()
    params = {"EIO": "4", "transport": "polling", "sid": json.loads(opened.text[1:])["sid"]}

    async def post(body: str | bytes, packets: int) -> bool:
        response = await http.post("/socket.io/", params=params, content=body)
        stats.packets += packets
        stats.by_transport["polling"] += packets
        if response.status_code != 200:
            session.gone.set()
        return not session.gone.is_set()

    async def poll() -> None:
        try:
            while not session.gone.is_set():
                response = await http.get("/socket.io/", params=params)
                if response.status_code != 200:
                    return
                for message in response.text.split("\x1e"):
                    if (reply := session.on_message(message)) is not None:
                        await http.post("/socket.io/", params=params, content=reply)
        finally:
            session.gone.set()

    shake = rng.choice(shakes) if rng.random() < 0.3 else "40" + encode({"token": token})
    poller = asyncio.create_task(poll())
    try:
        if not await post(shake, 1) or not shake.startswith("40{") or not await session.wait(session.connected):
            return  # a garbage or refused handshake: whatever the server does with it, start afresh
        while budget.left > 0 and not session.gone.is_set():
            for _ in range(rng.randint(1, 8)):
                texts = [f for f in budget.take(rng.choice((1, 4, 16, 16, 17, 20))) if not isinstance(f, bytes) or isinstance(f, TextBytes)]
                if not texts:
                    continue
                if any(isinstance(f, bytes) for f in texts):
                    body: str | bytes = b"\x1e".join(f if isinstance(f, bytes) else f.encode("utf-8", "surrogatepass") for f in texts)
                else:
                    body = "\x1e".join(texts)
                if not await post(body, len(texts)):
                    return
            packet, done = session.barrier()
            if not await post(packet, 0) or not await session.wait(done):
                if not session.gone.is_set():
                    stats.stalled += 1
                return
    finally:
        with contextlib.suppress(httpx.HTTPError):
            await http.post("/socket.io/", params=params, content="1")  # close, so a pending GET returns
        poller.cancel()
        with contextlib.suppress(BaseException):
            await poller


# --- the server's log --------------------------------------------------------------------------------

# python-engineio logs a client's protocol error at ERROR level the first time (``_log_error_once``), then
# at INFO: these lines are refusals of bad requests, not failures of the server.
ENGINEIO_REFUSALS = (
    "Invalid session",
    "Invalid transport",
    "unsupported version of the Socket.IO or Engine.IO protocols",
    "Invalid websocket upgrade",
    "Unexpected HTTP request",
    "is not connected",
    "is not an accepted origin",
    "Invalid JSONP index number",
)


@dataclass(frozen=True)
class KnownBug:
    """A failure the fuzz finds that is not fixed yet: how to recognise it in the log, and how to reproduce it."""

    id: str
    where: str
    signature: str  # a regex over one incident's text
    repro: tuple[Frame, ...]  # frames sent after a successful token handshake (handshake: the CONNECT itself); none: a race
    summary: str
    handshake: bool = False
    polling_bodies: tuple[str, ...] = ()  # the repro is these long-polling POST bodies instead


@dataclass
class Incident:
    """One traceback or ERROR line in the server's log."""

    text: str
    bug: KnownBug | None = None

    @property
    def headline(self) -> str:
        lines = [line for line in self.text.splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if not line.startswith((" ", "\t", "^"))), lines[-1] if lines else "")
        where = next((line.strip() for line in reversed(lines) if line.strip().startswith("File ")), "")
        return f"{last[:160]}  [{where[:160]}]"


def incidents(log: str, known: tuple[KnownBug, ...]) -> tuple[list[Incident], int]:
    """Tracebacks (with the line that announced them) and lone ERROR/CRITICAL lines in ``log``, each matched to a
    known bug when one fits; and the count of python-engineio's refusal lines (ERROR level, expected)."""
    lines = log.splitlines()
    found: list[Incident] = []
    refusals, i = 0, 0

    def add(text: str) -> None:
        bug = next((b for b in known if re.search(b.signature, text, re.S)), None)
        # python-engineio's own handler repeats each of its records without a prefix: one incident, not two.
        if found and found[-1].bug is bug and _tail(found[-1].text) == _tail(text):
            return
        found.append(Incident(text, bug))

    while i < len(lines):
        line = lines[i]
        if line.startswith("Traceback (most recent call last):"):
            end = _traceback_end(lines, i)
            add("\n".join(x[:2_000] for x in lines[max(0, i - 1) : end + 1]))
            i = end + 1
            continue
        if any(refusal in line for refusal in ENGINEIO_REFUSALS):
            refusals += 1
        elif re.search(r"\b(ERROR|CRITICAL)\b|Exception in ASGI application", line):
            if not (i + 1 < len(lines) and lines[i + 1].startswith("Traceback")):  # else: the traceback's header
                add(line[:2_000])
        i += 1
    return found, refusals


def _traceback_end(lines: list[str], start: int) -> int:
    """The index of the exception line ending the traceback at ``start`` (following chained tracebacks)."""
    j = start + 1
    while True:
        while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
            j += 1
        end = min(j, len(lines) - 1)
        k = end + 1
        while k < len(lines) and not lines[k].strip():
            k += 1
        if k < len(lines) and lines[k].startswith(("The above exception", "During handling")):
            k += 1
            while k < len(lines) and not lines[k].strip():
                k += 1
            if k < len(lines) and lines[k].startswith("Traceback"):
                j = k + 1
                continue
        return end


def _tail(text: str) -> str:
    return text.strip().splitlines()[-1] if text.strip() else ""


class KnownServerBugs(AssertionError):
    """The fuzz found only failures already listed in ``KNOWN_BUGS`` (the test is marked xfail on this alone)."""
