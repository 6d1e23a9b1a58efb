"""Signed internal requests: a command on this machine hands events to the running server.

HMAC-SHA256 over the timestamp and body, keyed from ``SECRET_KEY``; requests older
than ``MAX_AGE`` seconds, from the future, or seen before (by nonce) are refused.
"""

import hashlib
import hmac
import time

from django.conf import settings

MAX_AGE = 30
TIMESTAMP_HEADER = "X-Realtime-Timestamp"
SIGNATURE_HEADER = "X-Realtime-Signature"

_seen: dict[str, float] = {}  # nonce -> when it may be forgotten (it is stale by then anyway)


def _key() -> bytes:
    # Derived, so the raw SECRET_KEY is never used for anything but Django's own signing.
    return hashlib.sha256(b"archon-realtime-bus:" + settings.SECRET_KEY.encode()).digest()


def sign(body: bytes, timestamp: int) -> str:
    return hmac.new(_key(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def headers(body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(body, timestamp), "Content-Type": "application/json"}


def refusal(body: bytes, timestamp: str | None, signature: str | None, nonce: object) -> str | None:
    """Why this request must be refused, or None when it is authentic, fresh and new."""
    if not timestamp or not signature:
        return "unsigned request"
    try:
        sent = int(timestamp)
    except ValueError:
        return "malformed timestamp"
    if not hmac.compare_digest(sign(body, sent), signature):
        return "bad signature"
    now = time.time()
    if abs(now - sent) > MAX_AGE:
        return "stale request"
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
        return "missing nonce"
    for old in [n for n, expiry in _seen.items() if expiry < now]:
        del _seen[old]
    if nonce in _seen:
        return "replayed request"
    _seen[nonce] = now + 2 * MAX_AGE
    return None
