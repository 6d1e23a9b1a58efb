"""A loopback TCP proxy that can leave its connections half-open, as a NAT or a load balancer that dropped them does."""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType


class FreezingProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream>``. ``freeze()``: the connections open now stay open on
    both sides but carry nothing more either way (no FIN, no RST); connections made afterwards work as usual."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self._frozen: list[asyncio.Event] = []  # one per connection: set, it forwards nothing more
        self._writers: list[asyncio.StreamWriter] = []
        self._handlers: list[asyncio.Task] = []
        self._server: asyncio.Server | None = None

    @property
    def redis_url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    def freeze(self) -> None:
        for frozen in self._frozen:
            frozen.set()

    async def __aenter__(self) -> FreezingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for handler in self._handlers:
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._handlers.append(asyncio.current_task())  # type: ignore[arg-type]
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        frozen = asyncio.Event()
        self._frozen.append(frozen)
        self._writers += [writer, upstream_writer]
        await asyncio.gather(self._pump(reader, upstream_writer, frozen), self._pump(upstream_reader, writer, frozen),
                             return_exceptions=True)  # fmt: skip

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, frozen: asyncio.Event) -> None:
        while not frozen.is_set() and (data := await source.read(65536)):
            if frozen.is_set():
                break  # dropped: sent into a connection that no longer reaches anyone
            sink.write(data)
            await sink.drain()
        if not frozen.is_set():
            sink.close()  # an ordinary close passes on
            return
        await asyncio.Event().wait()  # frozen: hold both ends open, silent, until the proxy is closed
