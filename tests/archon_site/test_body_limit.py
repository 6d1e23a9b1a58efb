"""Request bodies over their cap are refused as they arrive, before Django or engine.io reads them."""

from __future__ import annotations

import socket

import httpx
import pytest
from django.conf import settings

from archon_site.body_limit import BodyLimit

pytestmark = pytest.mark.django_db(transaction=True)


def _raw_request(url: str, head: str, body: bytes) -> bytes:
    """Send a request's head and part of its body, never finishing it; return what the server answers."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as conn:
        conn.sendall(head.encode() + body)
        conn.settimeout(20)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


def test_declared_length_over_the_cap_is_refused_before_the_body(server) -> None:
    # Only the head is sent: the 413 cannot have waited for the body.
    head = (
        "POST /api/projects/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {settings.REQUEST_MAX_BYTES + 1}\r\n\r\n"
    )
    assert _raw_request(server.url, head, b"").startswith(b"HTTP/1.1 413")


def test_streamed_body_over_the_cap_is_cut_off_as_it_arrives(server) -> None:
    # Chunked, no Content-Length, and never finished: the server answers once the cap is passed.
    cap = settings.REALTIME_PUBLISH_MAX_BYTES
    chunk = b"x" * 65_536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(cap // len(chunk) + 2))
    head = "POST /_realtime/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert _raw_request(server.url, head, body).startswith(b"HTTP/1.1 413")


async def test_polling_post_over_the_message_cap_is_refused(server, http: httpx.AsyncClient) -> None:
    body = b"4" + b"x" * settings.REALTIME_MAX_MESSAGE_BYTES
    response = await http.post("/socket.io/?EIO=4&transport=polling&sid=nothing", content=body)
    assert response.status_code == 413


async def test_bodies_within_the_cap_pass(server, http: httpx.AsyncClient) -> None:
    response = await http.post("/api/projects/", json={"title": "x"})
    assert response.status_code == 401  # reached the API (no credentials), not refused for size


def test_caps_by_path_prefix() -> None:
    limit = BodyLimit(lambda *a: None, default=10, caps=[("/socket.io/", 5), ("/_realtime/publish", 7)])  # type: ignore[arg-type,return-value]
    assert (limit.cap_for("/socket.io/?EIO=4"), limit.cap_for("/_realtime/publish"), limit.cap_for("/api/x")) == (5, 7, 10)
