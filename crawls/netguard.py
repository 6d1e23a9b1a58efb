"""SSRF guard: the crawler connects only to public addresses (unless private networks are allowed).

The check happens where the connection is made: ``GuardedBackend.connect_tcp`` resolves the
host itself, refuses if any resolved address is not public, and connects to the address it
checked — so a name that resolves to a public address once and to ``127.0.0.1`` the next time
(DNS rebinding) cannot slip through. TLS still uses the URL's host name for SNI and the
certificate, and the ``Host`` header comes from the URL: only the TCP destination changes.
No Django here.
"""

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Not trusted to ipaddress alone: some Python versions (3.11.7) call 192.0.0.8 and fec0::1 global.
# Special-purpose ranges (RFC 6890 and its IPv6 registry) a crawler has no business reaching.
DENIED = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation (TEST-NET-1)
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation (TEST-NET-2)
        "203.0.113.0/24",  # documentation (TEST-NET-3)
        "240.0.0.0/4",  # reserved, and 255.255.255.255
        "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, …)
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique-local
        "fec0::/10",  # site-local (deprecated, still routed internally)
    )
)


class Refused(Exception):
    """A destination the crawler may not reach; the message says why.

    ``refused: 10.0.0.1 is a private address`` for an IP literal, ``refused: intranet.example resolves to a
    non-public address`` for a name.
    """


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), else the address itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def why_not_public(address: str) -> str | None:
    """None for a public address; else what it is ("a private address", "a loopback address", …)."""
    ip = _embedded_ipv4(ipaddress.ip_address(address.split("%", 1)[0]))  # drop an IPv6 zone ("fe80::1%eth0")
    # Order matters: 169.254.169.254 is also "private" to ipaddress, but "link-local" says more.
    for kind in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    if any(ip.version == net.version and ip in net for net in DENIED):
        return "not a public address"
    return None if ip.is_global else "not a public address"


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


def check(addresses: Iterable[str], host: str | None = None) -> None:
    """Raise ``Refused`` if any of the addresses ``host`` resolved to is not public.

    An IP literal (the user's own input) is echoed with the reason; for a name, the address it
    resolved to is not said: that would map the internal network for whoever asks.
    """
    for address in addresses:
        reason = why_not_public(address)
        if reason:
            if host is not None and not _is_ip_literal(host):
                raise Refused(f"refused: {host} resolves to a non-public address")
            raise Refused(f"refused: {address.split('%', 1)[0]} is {reason}")


def lookup(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (numeric forms such as 2130706433 and 0x7f.1 included).

    Blocking: call it from a thread (``resolve`` does).
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve(host: str, port: int) -> list[str]:
    """``lookup`` off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, lookup, host, port)


def check_url(url: str) -> None:
    """Refuse a URL whose host is, or resolves to, a non-public address (blocking: not on the event loop).

    A host that does not resolve passes: the crawl reports it on the page, and the connection is
    checked again anyway.
    """
    try:
        parsed = httpx.URL(url)
        addresses = lookup(parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80))
    except (OSError, UnicodeError, httpx.InvalidURL):
        return
    check(addresses, parsed.host)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, checks, then connects to the checked address."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend, *, allow_private: bool) -> None:
        self.inner, self.allow_private = inner, allow_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve(host, port)
        except OSError as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        if not self.allow_private:
            check(addresses, host)
        last: Exception | None = None
        for address in addresses:  # as the system would: each in turn until one answers
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectError as error:
                last = error
        raise last or httpcore.ConnectError(f"no address for {host}")

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None) -> Any:
        raise Refused("refused: Unix sockets are not crawled")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with every TCP connection made through ``GuardedBackend``."""

    def __init__(self, *, allow_private: bool, inner: httpcore.AsyncNetworkBackend | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # httpx has no public hook for the network backend: its pool's own is wrapped (tests prove the guard holds).
        self._pool._network_backend = GuardedBackend(inner or self._pool._network_backend, allow_private=allow_private)
