"""The SSRF guard at the address check, with a stubbed resolver: no connection to a non-loopback address is ever opened."""

import re

import httpcore
import pytest

from crawls import netguard
from crawls.crawler import Crawler, Options

NOT_PUBLIC = {
    "127.0.0.1": "a loopback address",
    "127.0.0.2": "a loopback address",
    "10.0.0.1": "a private address",
    "172.16.5.4": "a private address",
    "192.168.1.1": "a private address",
    "169.254.169.254": "a link-local address",  # cloud metadata
    "100.64.0.1": "not a public address",  # shared address space (carrier-grade NAT)
    "0.0.0.0": "a private address",
    "224.0.0.1": "a multicast address",
    "::1": "a loopback address",
    "::": "a private address",
    "fc00::1": "a private address",
    "fd12:3456::1": "a private address",  # unique-local
    "fe80::1": "a link-local address",
    "fe80::1%eth0": "a link-local address",
    "ff02::1": "a multicast address",
    "::ffff:127.0.0.1": "a loopback address",  # IPv4-mapped
    "::ffff:10.1.2.3": "a private address",
    "::ffff:169.254.169.254": "a link-local address",
    "64:ff9b::a00:1": "a private address",  # NAT64 of 10.0.0.1
    "2002:7f00:1::": "a loopback address",  # 6to4 of 127.0.0.1
}


@pytest.mark.parametrize("address", sorted(NOT_PUBLIC))
def test_non_public_addresses_are_refused_with_the_reason(address):
    assert netguard.why_not_public(address) == NOT_PUBLIC[address]
    with pytest.raises(netguard.Refused, match=r"^refused: .* is "):
        netguard.check([address])


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:93.184.216.34"])
def test_public_addresses_pass(address):
    assert netguard.why_not_public(address) is None
    netguard.check([address])


@pytest.mark.parametrize(
    ("host", "answer"),
    [
        ("private.test", ["10.0.0.1"]),
        ("corp.test", ["172.16.0.10"]),
        ("home.test", ["192.168.0.1"]),
        ("metadata.test", ["169.254.169.254"]),
        ("ula.test", ["fd00::5"]),
        ("mixed.test", ["93.184.216.34", "10.0.0.1"]),  # one bad address is enough
    ],
)
def test_a_name_is_refused_by_what_it_resolves_to(fake_dns, host, answer):
    fake_dns[host] = answer
    with pytest.raises(netguard.Refused):
        netguard.check_url(f"http://{host}/")


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://localhost/", "http://[::1]/"])
def test_numeric_and_short_forms_of_loopback_are_refused(fake_dns, url):
    host = url.split("/")[2]
    # Only a true IP literal is echoed with what it is; numeric spellings and names are names here.
    reason = "::1 is a loopback address" if host == "[::1]" else f"{host} resolves to a non-public address"
    with pytest.raises(netguard.Refused, match=f"^refused: {re.escape(reason)}$"):
        netguard.check_url(url)


class Recorder(httpcore.AsyncNetworkBackend):
    """An inner backend that records where it was asked to connect and never connects anywhere."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self.asked.append((host, port))
        raise httpcore.ConnectError("recorder: not connecting")

    async def sleep(self, seconds):
        pass


async def test_dns_rebinding_is_caught_at_connect_time(fake_dns):
    answers = iter([["93.184.216.34"], ["10.0.0.1"]])
    fake_dns["rebind.test"] = lambda: next(answers)
    netguard.check_url("http://rebind.test/")  # public when the API checks…
    inner = Recorder()
    backend = netguard.GuardedBackend(inner, allow_private=False)
    with pytest.raises(netguard.Refused, match=r"^refused: rebind\.test resolves to a non-public address$"):
        await backend.connect_tcp("rebind.test", 80)  # …private when connecting: refused, nothing opened
    assert inner.asked == []


async def test_the_checked_address_is_the_one_connected_to(fake_dns):
    fake_dns["site.test"] = ["93.184.216.34"]
    inner = Recorder()
    backend = netguard.GuardedBackend(inner, allow_private=False)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("site.test", 443)
    assert inner.asked == [("93.184.216.34", 443)]  # the IP, not the name (which could resolve again elsewhere)


async def test_a_crawl_reports_refused_links_as_page_errors(fake_dns):
    """The whole crawler with the guard on: every link to a non-public address is that page's error."""
    fake_dns["public.test"] = ["93.184.216.34"]
    fake_dns["internal.test"] = ["10.1.2.3"]
    fake_dns["meta.test"] = ["169.254.169.254"]
    inner = Recorder()
    pages = {}

    async def on_page(page, stats):
        pages[page.url] = page

    targets = [
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://internal.test/",
        "http://meta.test/",
    ]
    options = Options(max_pages=20, max_depth=1, same_site_only=False, allow_private=False, timeout=2)
    crawler = Crawler("http://public.test/", options, on_page=on_page, network_backend=inner)
    # The start page "exists": its links are given directly (no connection to public.test is made either).
    crawler.seen.update(targets)
    for target in targets:
        crawler.stats.discovered += 1
        await crawler.queue.put((target, 1))
    await crawler.run()
    for target in targets:
        assert pages[target].error.startswith("refused: "), (target, pages[target].error)
    assert pages["http://meta.test/"].error == "refused: meta.test resolves to a non-public address"
    assert pages["http://169.254.169.254/latest/meta-data/"].error == "refused: 169.254.169.254 is a link-local address"
    assert all(host == "93.184.216.34" for host, _ in inner.asked)  # only the public start was ever asked for
