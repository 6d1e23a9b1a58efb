"""Abuse limits: what one connection, one user or one client address may cost a serving process.

* ``take_event``: a token bucket per connection, kept in its Socket.IO session.
* ``connections``: connections per user in this process.
* ``auth_failures``: failed-authentication connects per client address, per minute.
* ``handshakes``: connections not yet authenticated per client address, each closed after a timeout.
* ``OutgoingQueue``, ``admit`` and ``drop``: bytes sent to a connection but not yet written out are
  bounded; a connection that stays over the bound for a grace period (a client that stopped
  reading), or goes over a hard ceiling, is closed.

Process-level state is module state here, and every table is bounded: entries leave with their
connection, or expire and are pruned.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from engineio import packet as eio_packet

from . import direct_write

log = logging.getLogger(__name__)
_closing: set[asyncio.Task[None]] = set()  # strong references to close tasks until they finish


# --- events per connection ------------------------------------------------------------------


def take_event(session: dict[str, Any]) -> bool:
    """Spend one token of the connection's bucket (REALTIME_EVENT_BURST, refilled at REALTIME_EVENT_RATE/s)."""
    now = time.monotonic()
    burst = settings.REALTIME_EVENT_BURST
    tokens, stamp = session.get("_event_bucket", (burst, now))
    tokens = min(burst, tokens + (now - stamp) * settings.REALTIME_EVENT_RATE)
    allowed = tokens >= 1
    session["_event_bucket"] = (tokens - 1 if allowed else tokens, now)
    return allowed


# --- connections per user -------------------------------------------------------------------


class Connections:
    """This process's connections per user; an entry lives exactly as long as its connection."""

    def __init__(self) -> None:
        self._user_of: dict[str, int] = {}
        self._count: dict[int, int] = {}

    def add(self, user_id: int, sid: str) -> bool:
        """Count ``sid`` for the user, unless that would exceed REALTIME_MAX_CONNECTIONS_PER_USER."""
        if self._count.get(user_id, 0) >= settings.REALTIME_MAX_CONNECTIONS_PER_USER:
            return False
        self._user_of[sid] = user_id
        self._count[user_id] = self._count.get(user_id, 0) + 1
        return True

    def remove(self, sid: str) -> None:
        user_id = self._user_of.pop(sid, None)
        if user_id is None:
            return
        left = self._count[user_id] - 1
        if left:
            self._count[user_id] = left
        else:
            del self._count[user_id]

    def of(self, user_id: int) -> int:
        return self._count.get(user_id, 0)


connections = Connections()


# --- failed authentication per address ------------------------------------------------------


class FailedAttempts:
    """Failed-authentication connects per client address in fixed one-minute windows.

    Entries are kept in the order their window started, so expired ones are pruned from the
    front; past ``max_entries`` addresses (a spray of addresses) the oldest is forgotten.
    """

    window = 60.0

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._seen: dict[str, tuple[float, int]] = {}

    def blocked(self, address: str) -> bool:
        """True while ``address`` has used up REALTIME_AUTH_FAILURES_PER_MINUTE in its current window."""
        limit = settings.REALTIME_AUTH_FAILURES_PER_MINUTE
        entry = self._seen.get(address)
        if limit <= 0 or entry is None:
            return False
        started, failures = entry
        return failures >= limit and time.monotonic() - started < self.window

    def record(self, address: str) -> None:
        now = time.monotonic()
        self._prune(now)
        started, failures = self._seen.get(address, (now, 0))
        if now - started >= self.window:
            started, failures = now, 0
        if failures == 0:  # a new window: re-inserted at the end, keeping the order by start
            self._seen.pop(address, None)
            while len(self._seen) >= self.max_entries:
                del self._seen[next(iter(self._seen))]
        self._seen[address] = (started, failures + 1)

    def _prune(self, now: float) -> None:
        while self._seen:
            oldest = next(iter(self._seen))
            if now - self._seen[oldest][0] < self.window:
                return
            del self._seen[oldest]

    def __len__(self) -> int:
        return len(self._seen)


auth_failures = FailedAttempts()


def client_address(environ: dict[str, Any]) -> str:
    """The peer's address as the ASGI server saw it (behind a proxy: the proxy, unless the server trusts its headers).

    engine.io's ASGI driver sets ``REMOTE_ADDR`` to a fixed 127.0.0.1, so the ASGI scope's ``client`` comes first.
    """
    client = (environ.get("asgi.scope") or {}).get("client")
    if client:
        return str(client[0])
    return str(environ.get("REMOTE_ADDR") or "unknown")


# --- connections not yet authenticated, per address -----------------------------------------


class PendingHandshakes:
    """Engine.IO connections whose Socket.IO namespace is not connected yet, per client address.

    An entry lives from the engine.io handshake until the namespace connects or the connection
    closes, and at most REALTIME_CONNECT_TIMEOUT: then ``expire`` is called (it closes the
    connection). So the table holds only open connections, at most REALTIME_MAX_PENDING_PER_ADDRESS
    per address, each for a bounded time.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, asyncio.TimerHandle | None]] = {}  # eio sid -> (address, timer)
        self._count: dict[str, int] = {}

    def add(self, eio_sid: str, address: str, expire: Callable[[str], None]) -> bool:
        """Count a new connection from ``address``, unless that address has REALTIME_MAX_PENDING_PER_ADDRESS pending."""
        if self._count.get(address, 0) >= settings.REALTIME_MAX_PENDING_PER_ADDRESS or eio_sid in self._entries:
            return False
        try:
            timer = asyncio.get_running_loop().call_later(settings.REALTIME_CONNECT_TIMEOUT, self._expire, eio_sid, expire)
        except RuntimeError:  # not on an event loop (a unit test): no timeout
            timer = None
        self._entries[eio_sid] = (address, timer)
        self._count[address] = self._count.get(address, 0) + 1
        return True

    def busy(self) -> bool:
        """Whether REALTIME_MAX_PENDING connections (from all addresses) are being set up already.

        A server that takes every handshake of a reconnect storm at once sets none of them up in
        time (each is closed at REALTIME_CONNECT_TIMEOUT and comes back): refused early instead,
        clients retry after their backoff, and those admitted connect.
        """
        return len(self._entries) >= settings.REALTIME_MAX_PENDING

    def remove(self, eio_sid: str) -> None:
        """The connection connected its namespace or closed: no longer pending (a no-op when it was not)."""
        entry = self._entries.pop(eio_sid, None)
        if entry is None:
            return
        address, timer = entry
        if timer is not None:
            timer.cancel()
        left = self._count[address] - 1
        if left:
            self._count[address] = left
        else:
            del self._count[address]

    def _expire(self, eio_sid: str, expire: Callable[[str], None]) -> None:
        if eio_sid in self._entries:
            self.remove(eio_sid)
            expire(eio_sid)

    def of(self, address: str) -> int:
        return self._count.get(address, 0)

    def __contains__(self, eio_sid: object) -> bool:
        return eio_sid in self._entries

    def __len__(self) -> int:
        return len(self._entries)


handshakes = PendingHandshakes()


# --- unsent bytes per connection ------------------------------------------------------------

# The hard ceiling, as a multiple of REALTIME_MAX_BUFFERED_BYTES: past it a connection is dropped at
# once, grace or not, so a burst can never make one connection cost more than this. 4x (16 MB at the
# default bound) lets a reading client take, in one loop iteration, a burst the size of the largest
# common one (a reorder of 1,500 tasks of 8 KB: 12 MB) while the kernel has buffered nothing yet.
HARD_CEILING_FACTOR = 4
NOT_READING = "bytes unsent, client not reading"  # the logged reason (tests and operators grep for it)


def unsent(socket: Any) -> int:
    """Bytes sent to an engine.io socket that it has not read yet: its queue's count and its transport's buffer."""
    return getattr(socket.queue, "pending", 0) + direct_write.transport_bytes(socket)


def admit(socket: Any, before: int, size: int, bound: int | None = None) -> bool:
    """May ``size`` more bytes go to a connection holding ``before`` unsent? False once it has been dropped.

    O(1) per recipient. Every send in one loop iteration lands in the transport's buffer before
    anything is written out, so a burst to a fast reader passes the bound as surely as output to a
    stalled one: being over it is allowed for REALTIME_BUFFER_GRACE_SECONDS (remembered per socket
    from when it first went over, forgotten once it is back under), and a timer drops the connection
    if it is still over when the grace ends, even with nothing more sent. Over the hard ceiling
    (HARD_CEILING_FACTOR x the bound) it is dropped at once, so memory stays bounded during the grace.
    """
    if bound is None:
        bound = settings.REALTIME_MAX_BUFFERED_BYTES  # a broadcast reads it once and passes it, not once per recipient
    if before <= bound and getattr(socket, "realtime_over_since", None) is not None:
        # Back under: a later excess starts a new grace. Only then written: an attribute every
        # socket carried would grow every idle connection's instance dictionary.
        socket.realtime_over_since = None
    after = before + size
    if after <= bound:
        return True
    ceiling = bound * HARD_CEILING_FACTOR
    if after > ceiling:
        drop(socket, f"{after} {NOT_READING} (over the hard ceiling of {ceiling})")
        return False
    since = getattr(socket, "realtime_over_since", None)
    now = time.monotonic()
    if since is None:
        socket.realtime_over_since = now
        _check_after_grace(socket, now)
        return True
    if now - since >= settings.REALTIME_BUFFER_GRACE_SECONDS:
        drop(socket, f"{after} {NOT_READING} (over {bound} for {now - since:.1f} s)")
        return False
    return True


def _check_after_grace(socket: Any, since: float) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not on the server's loop: the next send checks instead
        return
    # A fresh context, not the caller's: a broadcast sent from a request (the publish endpoint) must not hand its
    # request's context, which ends with it, to work that runs later.
    loop.call_later(settings.REALTIME_BUFFER_GRACE_SECONDS, _grace_over, socket, since, context=contextvars.Context())


def _grace_over(socket: Any, since: float) -> None:
    """The grace that began at ``since`` has ended: drop the connection if it has stayed over the bound since."""
    if socket.closed or getattr(socket, "realtime_dropped", False) or getattr(socket, "realtime_over_since", None) != since:
        return  # gone, or it went back under (and maybe over again: that excess has its own timer)
    held = unsent(socket)
    if held <= settings.REALTIME_MAX_BUFFERED_BYTES:
        socket.realtime_over_since = None
        return
    drop(socket, f"{held} {NOT_READING} (over {settings.REALTIME_MAX_BUFFERED_BYTES} for {time.monotonic() - since:.1f} s)")


def _size(item: Any) -> int:
    # engine.io packets cache their encoding, and a broadcast's packet is shared by every
    # recipient: this is one encoding per broadcast, a length afterwards. Socket.IO's JSON is
    # ASCII, so characters are bytes.
    return len(item.encode()) if isinstance(item, eio_packet.Packet) else 0


def _expire(getter: asyncio.Future[None]) -> None:
    if not getter.done():
        getter.set_exception(TimeoutError())


class LeanQueue:
    """An unbounded FIFO with ``asyncio.Queue``'s interface, holding nothing while it holds nothing.

    engine.io keeps one queue per connection. ``asyncio.Queue`` builds four deques up front (its
    items, getters, putters and ``join``'s event): 3 KB per connection, most of it for features an
    unbounded send queue never uses (putters) or uses rarely (``join``). Here the items' deque exists
    only while something is queued, waiting getters are a list, and ``join``'s event is made when one waits.
    """

    maxsize = 0

    def __init__(self) -> None:
        self._items: collections.deque[Any] | None = None
        self._getters: list[asyncio.Future[None]] | None = None
        self._unfinished = 0
        self._finished: asyncio.Event | None = None

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return False

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        self._unfinished += 1
        if self._finished is not None:
            self._finished.clear()
        self._wake_next()

    def _wake_next(self) -> None:
        """Wake the first getter still waiting (one that timed out or was cancelled is skipped)."""
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                break

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items:
            self._items = None  # an idle connection holds no deque
        return item

    async def get(self, timeout: float | None = None) -> Any:
        """The next item; with ``timeout``, ``TimeoutError`` once it has passed with nothing queued.

        The timeout is a timer on the waiting future: no ``asyncio.wait_for``, whose extra task (on
        Python 3.11) every idle connection's writer would hold for as long as it waits.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._items:
            getter = loop.create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            timer = None if deadline is None else loop.call_at(deadline, _expire, getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                if getter in self._getters:
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():  # woken, then cancelled: wake the next one instead
                    self._wake_next()
                raise
            finally:
                if timer is not None:
                    timer.cancel()
        return self.get_nowait()

    def task_done(self) -> None:
        if self._unfinished <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished -= 1
        if self._unfinished == 0 and self._finished is not None:
            self._finished.set()

    async def join(self) -> None:
        if self._unfinished:
            if self._finished is None:
                self._finished = asyncio.Event()
            await self._finished.wait()


class OutgoingQueue(LeanQueue):
    """engine.io's send queue of one connection, counting the bytes it holds.

    ``pending`` counts what was queued and not yet handed to the transport: packets in the queue,
    and on a websocket also those the writer task took and is still waiting to write (it awaits
    flow control). With the transport's own buffer that is everything the client has not read;
    a put over REALTIME_MAX_BUFFERED_BYTES is judged by ``admit`` (a grace, then the connection is closed).
    """

    def __init__(self) -> None:
        super().__init__()
        self.socket: Any = None  # the engine.io socket, known once it has connected
        self.pending = 0
        self.refusing = False

    def put_nowait(self, item: Any) -> None:
        if item is None:  # engine.io's "stop" marker ends a writer or a poll: always accepted
            return super().put_nowait(item)
        if self.refusing:
            return None
        size = _size(item)
        if self.socket is not None and not admit(self.socket, self.pending + direct_write.transport_bytes(self.socket), size):
            return None
        self.pending += size
        return super().put_nowait(item)

    def get_nowait(self) -> Any:
        item = super().get_nowait()
        socket = self.socket
        # A websocket's writer still holds the packet until ``written`` (when counted); a poll answers with it now.
        if not (socket is not None and direct_write.counts_writes(socket)):
            self.pending = max(0, self.pending - _size(item))
        return item

    def written(self, size: int) -> None:
        """The websocket writer handed ``size`` bytes to the transport (now counted there)."""
        self.pending = max(0, self.pending - size)

    def discard(self) -> None:
        """Refuse further packets and release those held (the connection is being dropped)."""
        self.refusing = True
        while not self.empty():
            super().get_nowait()
            self.task_done()
        self.pending = 0


def drop(socket: Any, reason: str) -> None:
    """Close an engine.io connection now, without waiting for the client (logged at warning level).

    A websocket's transport is aborted: its unsent bytes are released at once, and engine.io sees
    the connection end and runs the disconnect handlers as for any lost client. Otherwise
    (long-polling) the socket is closed here and a waiting poll is released.
    """
    if socket.closed or getattr(socket, "realtime_dropped", False):
        return
    socket.realtime_dropped = True
    log.warning("disconnected %s: %s", getattr(socket, "realtime_sid", None) or socket.sid, reason)
    queue = socket.queue
    if isinstance(queue, OutgoingQueue):
        queue.discard()
    transport = getattr(socket, "realtime_transport", None)
    if transport is not None:
        transport.abort()
        return
    task = asyncio.get_running_loop().create_task(_close(socket), context=contextvars.Context())  # as in _check_after_grace
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _close(socket: Any) -> None:
    server = socket.server
    await socket.close(wait=False, abort=True, reason=server.reason.SERVER_DISCONNECT)
    socket.queue.put_nowait(None)  # a poll waiting for packets returns; the next request is refused
    if server.sockets.get(socket.sid) is socket:
        del server.sockets[socket.sid]
