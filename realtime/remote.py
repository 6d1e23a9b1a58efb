"""Delivery from a process that does not serve Socket.IO (commands, the shell, scripts, WSGI).

Messages go, in order, through one background sender thread, so callers never
wait on the network:

* ``REDIS_URL`` set: python-socketio's write-only ``RedisManager`` publishes them
  to every server node;
* otherwise (one machine, nothing to install): a request signed with
  ``SECRET_KEY`` to the server at ``REALTIME_SERVER_URL`` (``realtime.views``).

A failed delivery is retried briefly, then reported with one clear log line.
With no server running, events are dropped with one warning line: their state
is in the database already.
"""

import atexit
import json
import logging
import queue
import secrets
import threading
import time
from typing import Any

import httpx
import socketio
from django.conf import settings

from . import history, lost, room_ops, signing, since_tokens
from .redis_history import SyncRedisHistory

log = logging.getLogger(__name__)

RETRY_DELAYS = (0.1, 0.3, 0.6)  # then give up: about one second in all
BATCH = 200


class Undeliverable(Exception):
    """Delivery failed for a reason worth retrying."""


class NoServer(Exception):
    """Nothing listens at the embedded address: no server is running."""


class _WriteOnlyRedis(socketio.RedisManager):
    def _publish(self, data: Any) -> Any:
        # python-socketio's own retries log and swallow errors; the sender decides here.
        try:
            if not self.connected:
                self._redis_connect()
            return self.redis.publish(self.channel, self.json.dumps(data))
        except Exception as error:
            self.connected = False
            raise Undeliverable(f"Redis unreachable at {settings.REDIS_URL}: {error}") from error


class RedisPath:
    def __init__(self) -> None:
        self.manager = _WriteOnlyRedis(settings.REDIS_URL, channel=settings.REALTIME_REDIS_CHANNEL, write_only=True)
        self.history: SyncRedisHistory | None = None

    def _history(self) -> SyncRedisHistory:
        if not self.manager.connected:
            self.manager._redis_connect()
            self.manager.connected = True
        if self.history is None or self.history.redis is not self.manager.redis:
            self.history = SyncRedisHistory(self.manager.redis)
        return self.history

    def send(self, batch: list[dict[str, Any]]) -> None:
        """Publish in order; each published message leaves ``batch``, so a retry never repeats one."""
        try:
            while batch:
                message = batch[0]
                if message["op"] == "emit" and history.recoverable(message["room"]):
                    # Numbered, kept and published by Redis in one step, as a serving node does (``redis_history``).
                    try:
                        data = history.unstamped_object(message["room"], message["data"])
                    except ValueError as error:
                        log.error("dropped: %s", error)
                    else:
                        self._history().stamp(message["room"], message["event"], data)
                elif message["op"] == "emit":
                    self.manager.emit(message["event"], message["data"], namespace="/", room=message["room"])
                else:
                    for what, subject in since_tokens.changes(message):  # first: void the since tokens it concerns
                        if what == "history":
                            self._history().replace_epoch()
                        else:
                            getattr(self._history(), "forget_room" if what == "room" else "bump")(subject)
                    self.manager.emit(room_ops.OP_EVENT, message, namespace="/")
                batch.pop(0)
        except Exception as error:
            self.manager.connected = False
            raise Undeliverable(f"Redis unreachable at {settings.REDIS_URL}: {error}") from error


class EmbeddedPath:
    def __init__(self) -> None:
        self.url = settings.REALTIME_SERVER_URL.rstrip("/") + "/_realtime/publish"
        self.client = httpx.Client(timeout=5, trust_env=False)

    def send(self, batch: list[dict[str, Any]]) -> None:
        """POST in requests under the server's size cap; each delivered message leaves ``batch``."""
        while batch:
            count, body = self._fit(batch)
            if count == 0:
                # One message alone is over the cap: the server would refuse it (413) whatever we do.
                message = batch.pop(0)
                lost.record([message])
                log.error(
                    "a live message over REALTIME_PUBLISH_MAX_BYTES (%d bytes) was dropped: %s",
                    settings.REALTIME_PUBLISH_MAX_BYTES,
                    room_ops.describe(message) if message.get("op") != "emit" else f"{message.get('event')} to {message.get('room')!r}",
                )
                continue
            self._post(body, batch[:count])
            del batch[:count]

    @staticmethod
    def _fit(batch: list[dict[str, Any]]) -> tuple[int, bytes]:
        """The most leading messages (halving) whose body fits ``REALTIME_PUBLISH_MAX_BYTES``: (count, body); (0, b"") if none."""
        count = len(batch)
        while count:
            body = json.dumps({"nonce": secrets.token_hex(16), "messages": batch[:count]}).encode()
            if len(body) <= settings.REALTIME_PUBLISH_MAX_BYTES:
                return count, body
            count //= 2
        return 0, b""

    def _post(self, body: bytes, messages: list[dict[str, Any]]) -> bool:
        """True when the server took them; refused ones are logged (and noted as lost, see ``lost``)."""
        try:
            response = self.client.post(self.url, content=body, headers=signing.headers(body))
        except httpx.ConnectError as error:
            raise NoServer(str(error)) from error
        except httpx.HTTPError as error:
            raise Undeliverable(f"{self.url}: {error}") from error
        if response.status_code >= 500:
            raise Undeliverable(f"{self.url} answered {response.status_code}")
        if response.status_code != 200:
            # Refused (bad signature: another SECRET_KEY? too many requests?): retrying will not help.
            lost.record(messages)
            log.error("the realtime server at %s refused our events: %s", self.url, response.text[:200])
            return False
        return True


class Sender:
    """One thread that delivers messages in the order they were published."""

    def __init__(self) -> None:
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue()
        self.path = RedisPath() if settings.REDIS_URL else EmbeddedPath()
        self.said_no_server = False
        self.failures = 0
        threading.Thread(target=self._run, name="realtime-sender", daemon=True).start()

    def _run(self) -> None:
        while True:
            batch = [self.queue.get()]
            while len(batch) < BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self._deliver(batch)
            for _ in batch:
                self.queue.task_done()

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        batch = list(batch)  # the path consumes what it delivered
        for delay in (*RETRY_DELAYS, None):
            try:
                self.path.send(batch)
                return
            except NoServer as error:
                if not self.said_no_server:
                    self.said_no_server = True
                    log.warning(
                        "no realtime server at %s (%s): live events from this process are dropped; the database has the changes"
                        " (set REALTIME_SERVER_URL to the running server, or REDIS_URL)",
                        settings.REALTIME_SERVER_URL,
                        error,
                    )
                return
            except Undeliverable as error:
                if delay is None:
                    self.failures += len(batch)
                    lost.record(batch)
                    _report_lost(batch, attempts=len(RETRY_DELAYS) + 1, error=error)
                    return
                time.sleep(delay)

    def flush(self, timeout: float) -> bool:
        """Wait until everything published so far was delivered (or given up); False on timeout."""
        done = threading.Event()
        threading.Thread(target=lambda: (self.queue.join(), done.set()), daemon=True).start()
        return done.wait(timeout)


def _report_lost(batch: list[dict[str, Any]], *, attempts: int, error: Exception) -> None:
    """One error line saying what was lost: events are state the database has; room operations are revocations."""
    ops = [m for m in batch if m.get("op") != "emit"]
    events = len(batch) - len(ops)
    log.error("could not deliver %d live event(s) and %d room operation(s) after %d attempts: %s", events, len(ops), attempts, error)
    if ops:
        shown = "; ".join(room_ops.describe(op) for op in ops[:20])
        more = f" (and {len(ops) - 20} more)" if len(ops) > 20 else ""
        log.error(
            "LOST room operations (connections on the servers keep rooms they should have left until they reconnect): %s%s", shown, more
        )


_sender: Sender | None = None
_lock = threading.Lock()


def sender() -> Sender:
    global _sender
    with _lock:
        if _sender is None:
            _sender = Sender()
            atexit.register(_sender.flush, 5.0)  # a command's last events still go out
        return _sender


async def publish(message: dict[str, Any]) -> None:
    """Queue one bus message (an emit or a room operation) for the running servers; never blocks."""
    sender().queue.put(message)


def flush(timeout: float = 5.0) -> bool:
    """Block until this process's published events are delivered (or given up)."""
    return _sender.flush(timeout) if _sender is not None else True
