"""Signed internal requests: a command on this machine hands events to the running server.

HMAC-SHA256 over the timestamp and body, keyed from ``SECRET_KEY``; requests older
than ``MAX_AGE`` seconds, from the future, or seen before (by nonce) are refused.

The signature is checked over the raw body before anything parses it (``check``);
only then is the body's nonce claimed (``claim``). So only a holder of the key can
add a nonce to the replay store, and each stays there just until its request
would be stale anyway; ``MAX_NONCES`` bounds the store even for a key holder.
"""

import hashlib
import hmac
import time
from collections import OrderedDict

from django.conf import settings

MAX_AGE = 30
MAX_NONCES = 100_000  # about 1,600 signed requests a second sustained over the nonce lifetime
TIMESTAMP_HEADER = "X-Realtime-Timestamp"
SIGNATURE_HEADER = "X-Realtime-Signature"

# nonce -> when it may be forgotten (its request is stale by then). Insertion order is
# expiry order (a fixed lifetime from "now"), so pruning only looks at the oldest end.
_seen: OrderedDict[str, float] = OrderedDict()


def _key() -> bytes:
    # Derived, so the raw SECRET_KEY is never used for anything but Django's own signing.
    return hashlib.sha256(b"archon-realtime-bus:" + settings.SECRET_KEY.encode()).digest()


def sign(body: bytes, timestamp: int) -> str:
    """The hex HMAC of ``timestamp`` and ``body``."""
    return hmac.new(_key(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def headers(body: bytes) -> dict[str, str]:
    """The headers of a signed request carrying ``body``, stamped now."""
    timestamp = int(time.time())
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(body, timestamp), "Content-Type": "application/json"}


def check(body: bytes, timestamp: str | None, signature: str | None) -> str | None:
    """Why this raw request is not authentic and fresh, or None when it is. Reads nothing but the bytes."""
    if not timestamp or not signature:
        return "unsigned request"
    try:
        sent = int(timestamp)
    except ValueError:
        return "malformed timestamp"
    # As bytes: compare_digest refuses str with non-ASCII characters (a header may carry any latin-1).
    if not hmac.compare_digest(sign(body, sent).encode(), signature.encode("utf-8", "surrogateescape")):
        return "bad signature"
    if abs(time.time() - sent) > MAX_AGE:
        return "stale request"
    return None


def claim(nonce: object) -> str | None:
    """Remember the nonce of an authentic request; why not (missing, replayed, store full), or None."""
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
        return "missing nonce"
    now = time.time()
    while _seen and next(iter(_seen.values())) < now:
        _seen.popitem(last=False)
    if nonce in _seen:
        return "replayed request"
    if len(_seen) >= MAX_NONCES:
        # Refused rather than forgetting a fresh nonce early, which would let its request be replayed.
        return "too many signed requests: try again shortly"
    _seen[nonce] = now + 2 * MAX_AGE
    return None
