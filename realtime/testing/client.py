"""python-socketio's client behind a small test interface (see ``realtime.testing``)."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Mapping
from typing import Any, Self

import socketio

log = logging.getLogger(__name__)


class ConnectionRefused(Exception):
    """The server refused the Socket.IO connection (a ``connect_error``): ``message`` is its reason."""

    def __init__(self, message: str, data: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class ClientBase:
    """What every test client shares: received events kept in order (``wait_for`` takes them, ``received``
    lists them all), and ``close`` / ``async with``. Subclasses connect, send and ``disconnect``."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._pending: list[tuple[str, Any]] = []  # received, not yet taken by wait_for
        self._received: dict[str, list[Any]] = collections.defaultdict(list)

    async def _add(self, event: str, first: Any) -> None:
        async with self._cond:
            self._pending.append((event, first))
            self._received[event].append(first)
            self._cond.notify_all()

    async def wait_for(self, event: str, predicate: Callable[[Any], bool] | None = None, timeout: float = 5.0) -> Any:
        """The oldest received ``event`` (matching ``predicate``) not yet taken, waiting up to ``timeout`` for it."""

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

    def received(self, event: str) -> list[Any]:
        """Every payload of ``event`` received so far, taken by ``wait_for`` or not."""
        return list(self._received.get(event, ()))

    async def disconnect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        await self.disconnect()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class SocketClient(ClientBase):
    """python-socketio's ``AsyncClient`` for tests: acks as return values, received events kept in order."""

    def __init__(self) -> None:
        super().__init__()
        self._sio = socketio.AsyncClient(reconnection=False)
        self._sio.on("*", self._on_event)
        self._sio.on("connect_error", self._on_connect_error)
        self._refusal: Any = None
        self.sid: str | None = None

    async def _on_connect_error(self, data: Any = None) -> None:
        self._refusal = data

    async def _on_event(self, event: str, *args: Any) -> None:
        await self._add(event, args[0] if args else None)

    @property
    def connected(self) -> bool:
        return self._sio.connected

    async def connect(
        self,
        url: str,
        *,
        auth: dict | None = None,
        headers: dict | None = None,
        transports: list[str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Connect to ``url``; ``ConnectionRefused`` with the server's reason when it refuses."""
        try:
            await self._sio.connect(url, auth=auth, headers=headers or {}, transports=transports, wait_timeout=timeout)
        except socketio.exceptions.ConnectionError as error:
            info = self._refusal
            message = info.get("message") if isinstance(info, dict) else str(error)
            raise ConnectionRefused(message, info) from None
        self.sid = self._sio.sid

    async def call(self, event: str, *args: Any, timeout: float = 5.0) -> Any:
        """Send ``event`` with its payload and return the server's acknowledgement (``TimeoutError`` without one)."""
        data: Any = args[0] if len(args) == 1 else (tuple(args) if args else None)
        try:
            return await self._sio.call(event, data, timeout=timeout)
        except socketio.exceptions.TimeoutError:
            raise TimeoutError(f"no ack for {event!r} within {timeout}s") from None

    async def send(self, event: str, *args: Any) -> None:
        """Send ``event`` without waiting for an acknowledgement."""
        await self._sio.emit(event, args[0] if len(args) == 1 else (tuple(args) if args else None))

    async def disconnect(self) -> None:
        if self._sio.connected:
            await self._sio.disconnect()


async def connect(
    url: str,
    *,
    token: str | None = None,
    cookies: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    transports: list[str] | None = None,
) -> SocketClient:
    """A connected ``SocketClient``, authenticated by an API ``token`` or by ``cookies`` (e.g. the session's).

    ``ConnectionRefused`` when the server refuses (its ``message`` says why). Close it with ``await client.close()``
    or ``async with await connect(...) as client``.
    """
    sent = dict(headers or {})
    if cookies:
        sent["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
    client = SocketClient()
    await client.connect(url, auth={"token": token} if token is not None else None, headers=sent, transports=transports)
    return client
