"""``PyClient``: the python-socketio ``AsyncClient`` behind the same small interface as ``NodeClient``."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import socketio

from .clients import ConnectionRefused


class PyClient:
    kind = "python"

    def __init__(self) -> None:
        self._sio = socketio.AsyncClient(reconnection=False)
        self._cond = asyncio.Condition()
        self._pending: list[tuple[str, Any]] = []
        self._received: dict[str, list[Any]] = collections.defaultdict(list)
        self._sio.on("*", self._on_event)
        self._sio.on("connect_error", self._on_connect_error)
        self._refusal: Any = None
        self.sid: str | None = None

    async def _on_connect_error(self, data: Any = None) -> None:
        self._refusal = data

    async def _on_event(self, event: str, *args: Any) -> None:
        first = args[0] if args else None
        async with self._cond:
            self._pending.append((event, first))
            self._received[event].append(first)
            self._cond.notify_all()

    @property
    def connected(self) -> bool:
        return self._sio.connected

    async def connect(
        self, url: str, *, auth: dict | None = None, headers: dict | None = None, transports: list[str] | None = None
    ) -> None:
        try:
            await self._sio.connect(url, auth=auth, headers=headers or {}, transports=transports, wait_timeout=10)
        except socketio.exceptions.ConnectionError as error:
            info = self._refusal
            message = info.get("message") if isinstance(info, dict) else str(error)
            raise ConnectionRefused(message, info) from None
        self.sid = self._sio.sid

    async def call(self, event: str, *args: Any, timeout: float = 5.0) -> object:
        data: Any = args[0] if len(args) == 1 else (tuple(args) if args else None)
        try:
            return await self._sio.call(event, data, timeout=timeout)
        except socketio.exceptions.TimeoutError:
            raise TimeoutError(f"no ack for {event!r} within {timeout}s") from None

    async def send(self, event: str, *args: Any) -> None:
        await self._sio.emit(event, args[0] if len(args) == 1 else (tuple(args) if args else None))

    async def wait_for(self, event: str, predicate: Callable[[Any], bool] | None = None, timeout: float = 5.0) -> object:
        def find() -> int | None:
            for i, (name, arg) in enumerate(self._pending):
                if name == event and (predicate is None or predicate(arg)):
                    return i
            return None

        try:
            async with asyncio.timeout(timeout):
                async with self._cond:
                    while (index := find()) is None:
                        await self._cond.wait()
                    return self._pending.pop(index)[1]
        except TimeoutError:
            seen = [name for name, _ in self._pending]
            raise TimeoutError(f"event {event!r} not received within {timeout}s (pending: {seen})") from None

    def received(self, event: str) -> list:
        return list(self._received.get(event, ()))

    async def disconnect(self) -> None:
        if self._sio.connected:
            await self._sio.disconnect()

    async def close(self) -> None:
        await self.disconnect()
