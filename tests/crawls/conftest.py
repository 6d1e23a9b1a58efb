"""A stub resolver for SSRF tests (names map to addresses we choose, and no query ever leaves the machine),
and a log of the requests the crawlers of this process send."""

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from crawls import netguard

Answer = list[str] | Callable[[], list[str]]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Answer]]:
    """``fake_dns["name.test"] = ["10.0.0.1"]`` (or a callable, for answers that change: rebinding).

    Numeric hosts (127.0.0.2, ::1, 2130706433, 0x7f.1) are parsed as the system would, without DNS;
    ``localhost`` is loopback; any other name fails as NXDOMAIN would. This stub only answers
    questions: a connection is made only if the crawler decides to, and the tests only ever let it
    reach loopback.
    """
    names: dict[str, Answer] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: object, port: object, *args: object, **kwargs: object) -> list:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in names:
            answer = names[name]
            addresses = answer() if callable(answer) else answer
        elif name == "localhost":
            addresses = ["127.0.0.1", "::1"]
        else:
            try:
                addresses = [str(ipaddress.ip_address(name))]
            except ValueError:
                try:
                    addresses = [socket.inet_ntoa(socket.inet_aton(name))]  # 2130706433, 0x7f.1: as inet_aton reads them
                except OSError:
                    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        result = []
        for address in addresses:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            result.extend(real(address, port, family, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST))
        return result

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield names


@pytest.fixture
def crawler_requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, str]]:
    """``(time.monotonic(), url)`` of each request a crawl of this process hands to its transport, as it does.

    Recorded on the crawler's side, on its event loop, so it orders exactly against the events that
    loop emits afterwards (``crawl:stopped``). The test site's own log cannot: its handler thread
    may wait for the GIL a few milliseconds after the bytes arrived, long enough for a stop to be
    stored, announced and received in between.
    """
    sent: list[tuple[float, str]] = []
    original = netguard.GuardedTransport.handle_async_request

    async def recording(self: netguard.GuardedTransport, request: httpx.Request) -> httpx.Response:
        sent.append((time.monotonic(), str(request.url)))
        return await original(self, request)

    monkeypatch.setattr(netguard.GuardedTransport, "handle_async_request", recording)
    return sent
