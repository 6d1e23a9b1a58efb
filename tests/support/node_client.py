"""Asyncio wrapper around ``tests/js/client.mjs`` (the official socket.io-client).

``NodeClient`` drives one Node.js process speaking a JSON-lines protocol on its
stdin/stdout, and exposes the same small interface as ``PyClient`` (the
python-socketio based client), so a test can be parametrised over both.

All arguments and ack/event payloads travel as JSON, so only JSON-serialisable
values can be sent or received (no bytes).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from realtime.testing.client import ClientBase

from .clients import ConnectionRefused

REPO_ROOT = Path(__file__).resolve().parents[2]
DRIVER = REPO_ROOT / "tests" / "js" / "client.mjs"

CONNECT_TIMEOUT = 10.0
STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 3.0
# Extra slack on top of the driver-side ack timeout before we give up on the process.
ACK_GRACE = 2.0
STREAM_LIMIT = 64 * 1024 * 1024  # longest stdout line we accept

__all__ = ["NodeClient", "ConnectionRefused"]


class NodeClient(ClientBase):
    kind = "node"

    def __init__(self) -> None:
        super().__init__()  # _cond, _pending, _received: wait_for and received
        self._proc: asyncio.subprocess.Process | None = None
        self._reader_task: asyncio.Task | None = None
        self._stderr_task: asyncio.Task | None = None
        self._ids = itertools.count(1)
        self._acks: dict[int, asyncio.Future] = {}
        self._ready = False
        self._eof = False
        self._connected = False
        self._connect_result: dict | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        self.sid: str | None = None
        self.disconnect_reason: str | None = None

    # ------------------------------------------------------------------ API

    @property
    def connected(self) -> bool:
        return self._connected and self._proc is not None and self._proc.returncode is None

    async def connect(
        self,
        url: str,
        *,
        auth: dict | None = None,
        headers: dict | None = None,
        transports: list[str] | None = None,
    ) -> None:
        if self._proc is None:
            await self._start()
        async with self._cond:
            self._connect_result = None
            self._connected = False
            self._pending.clear()
            self._received.clear()
            self.sid = None
            self.disconnect_reason = None
        await self._command(
            {
                "op": "connect",
                "url": url,
                "auth": auth,
                "extraHeaders": headers,
                "transports": transports,
                "reconnection": False,
            }
        )
        try:
            await self._wait_until(lambda: self._connect_result is not None or self._eof, CONNECT_TIMEOUT)
        except TimeoutError:
            # Stop the attempt so a late success does not surprise the test.
            await self._command({"op": "disconnect"}, missing_ok=True)
            raise TimeoutError(f"socket.io-client did not connect to {url} within {CONNECT_TIMEOUT}s{self._stderr_hint()}") from None
        result = self._connect_result
        if result is None:
            raise ConnectionError(f"node driver exited while connecting{self._stderr_hint()}")
        if result["type"] == "connect_error":
            raise ConnectionRefused(result.get("message"), result.get("data"))

    async def call(self, event: str, *args: Any, timeout: float = 5.0) -> object:
        fut = await self._emit(event, args, {"timeout": max(1, int(timeout * 1000))})
        try:
            async with asyncio.timeout(timeout + ACK_GRACE):
                msg = await fut
        except TimeoutError:
            raise TimeoutError(f"no ack for {event!r} within {timeout}s") from None
        if msg["type"] == "ack_timeout":
            raise TimeoutError(f"no ack for {event!r} within {timeout}s")
        resp = msg.get("args") or []
        if not resp:
            return None
        if len(resp) == 1:
            return resp[0]
        return tuple(resp)

    async def send(self, event: str, *args: Any) -> None:
        fut = await self._emit(event, args, {"raw": True})
        async with asyncio.timeout(5.0):
            await fut

    async def disconnect(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        try:
            if proc.returncode is None and proc.stdin is not None:
                try:
                    proc.stdin.write(b'{"op":"exit"}\n')
                    await proc.stdin.drain()
                    proc.stdin.close()
                except (BrokenPipeError, ConnectionResetError, RuntimeError):
                    pass
                try:
                    async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                        await proc.wait()
                except TimeoutError:
                    pass
        finally:
            if proc.returncode is None:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass
                try:
                    async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                        await proc.wait()
                except TimeoutError:
                    pass
            for task in (self._reader_task, self._stderr_task):
                if task is not None and not task.done():
                    task.cancel()
            for task in (self._reader_task, self._stderr_task):
                if task is not None:
                    try:
                        await task
                    except (asyncio.CancelledError, Exception):
                        pass
            self._reader_task = self._stderr_task = None
            self._connected = False
            self._fail_acks(ConnectionError("node client disconnected"))

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"<NodeClient {state} sid={self.sid!r}>"

    # ------------------------------------------------------------ internals

    async def _start(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH (run scripts/bootstrap.sh node)")
        if not (REPO_ROOT / "node_modules" / "socket.io-client").is_dir():
            raise RuntimeError("socket.io-client is not installed (run scripts/bootstrap.sh node)")
        self._ready = False
        self._eof = False
        self._connected = False
        self._stderr_tail.clear()
        self._proc = await asyncio.create_subprocess_exec(
            node,
            str(DRIVER.relative_to(REPO_ROOT)),
            cwd=str(REPO_ROOT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=os.environ.copy(),
            limit=STREAM_LIMIT,
        )
        try:
            self._reader_task = asyncio.create_task(self._read_stdout(self._proc))
            self._stderr_task = asyncio.create_task(self._read_stderr(self._proc))
            try:
                await self._wait_until(lambda: self._ready or self._eof, STARTUP_TIMEOUT)
            except TimeoutError:
                raise TimeoutError(f"node driver did not start within {STARTUP_TIMEOUT}s{self._stderr_hint()}") from None
            if not self._ready:
                raise RuntimeError(f"node driver exited on startup{self._stderr_hint()}")
        except BaseException:
            await self.disconnect()
            raise

    async def _emit(self, event: str, args: tuple, extra: dict) -> asyncio.Future:
        if self._proc is None:
            raise ConnectionError("NodeClient is not connected (call connect() first)")
        msg_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._acks[msg_id] = fut
        try:
            await self._command({"op": "emit", "id": msg_id, "event": event, "args": list(args), **extra})
        except BaseException:
            self._acks.pop(msg_id, None)
            raise
        fut.add_done_callback(lambda _f: self._acks.pop(msg_id, None))
        return fut

    async def _command(self, cmd: dict, *, missing_ok: bool = False) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None or proc.stdin is None or self._eof:
            if missing_ok:
                return
            raise ConnectionError(f"node driver is not running{self._stderr_hint()}")
        data = (json.dumps(cmd, separators=(",", ":")) + "\n").encode()
        try:
            proc.stdin.write(data)
            await proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            if missing_ok:
                return
            raise ConnectionError(f"node driver is gone{self._stderr_hint()}") from exc

    async def _wait_until(self, pred: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            async with self._cond:
                await self._cond.wait_for(pred)

    async def _read_stdout(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    break
                try:
                    msg = json.loads(raw)
                except ValueError:
                    self._stderr_tail.append(f"(bad stdout line) {raw!r}")
                    continue
                await self._dispatch(msg)
        except (ValueError, asyncio.LimitOverrunError) as exc:
            self._stderr_tail.append(f"(stdout reader failed) {exc!r}")
        finally:
            self._eof = True
            self._connected = False
            self._fail_acks(ConnectionError(f"node driver exited{self._stderr_hint()}"))
            try:
                async with self._cond:
                    self._cond.notify_all()
            except RuntimeError:  # loop shutting down
                pass

    async def _dispatch(self, msg: dict) -> None:
        kind = msg.get("type")
        async with self._cond:
            if kind == "ready":
                self._ready = True
            elif kind == "connect":
                self._connected = True
                self.sid = msg.get("sid")
                self._connect_result = msg
            elif kind == "connect_error":
                self._connected = False
                self._connect_result = msg
            elif kind == "disconnect":
                self._connected = False
                self.disconnect_reason = msg.get("reason")
            elif kind == "event":
                args = msg.get("args") or []
                first = args[0] if args else None
                name = msg.get("event")
                self._pending.append((name, first))
                self._received[name].append(first)
            elif kind in ("ack", "ack_timeout", "sent"):
                fut = self._acks.get(msg.get("id"))
                if fut is not None and not fut.done():
                    fut.set_result(msg)
            else:
                self._stderr_tail.append(f"(unknown driver message) {msg!r}")
            self._cond.notify_all()

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while True:
            raw = await proc.stderr.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            self._stderr_tail.append(line)
            print(f"[node-client] {line}", file=sys.stderr)

    def _fail_acks(self, exc: Exception) -> None:
        for fut in list(self._acks.values()):
            if not fut.done():
                fut.set_exception(exc)
        self._acks.clear()

    def _stderr_hint(self) -> str:
        if not self._stderr_tail:
            return ""
        return "\nnode stderr (tail):\n" + "\n".join(list(self._stderr_tail)[-20:])
