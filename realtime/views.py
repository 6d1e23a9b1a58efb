"""The embedded path's door: signed bus messages from commands and scripts on this machine.

Checked in this order, each refusal a 4xx with ``{"ok": false, "error": reason}``:
size (413), signature over the raw bytes (403), JSON and shape (400), nonce (403),
every message (400, nothing delivered). Only then is the batch delivered, in order.
"""

import json
import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import bus, room_ops, signing

log = logging.getLogger(__name__)


def _refuse(status: int, reason: str) -> JsonResponse:
    log.warning("refused internal publish (%d): %s", status, reason)
    return JsonResponse({"ok": False, "error": reason}, status=status)


def _declared_length(request: HttpRequest) -> int | None:
    """The Content-Length header as a number, None when absent; ``ValueError`` when malformed."""
    raw = request.META.get("CONTENT_LENGTH")
    if not raw:
        return None
    length = int(raw)
    if length < 0:
        raise ValueError(raw)
    return length


def _parse(body: bytes) -> tuple[list[Any], object] | str:
    """``(messages, nonce)`` from an authentic body, or why it is malformed."""
    try:
        batch = json.loads(body)
    except RecursionError:
        return "malformed request: JSON nested too deeply"
    except ValueError:  # UnicodeDecodeError included
        return "malformed request: not JSON"
    if not isinstance(batch, dict) or not isinstance(batch.get("messages"), list):
        return "malformed request: expected {nonce, messages: [...]}"
    return batch["messages"], batch.get("nonce")


@csrf_exempt
@require_POST
async def publish(request: HttpRequest) -> JsonResponse:
    """Deliver a batch ``{nonce, messages: [...]}`` signed by ``signing``; anything else is refused with a reason."""
    limit = settings.REALTIME_PUBLISH_MAX_BYTES
    try:
        declared = _declared_length(request)
    except ValueError:
        return _refuse(400, "malformed Content-Length")
    if declared is not None and declared > limit:
        return _refuse(413, f"request body over {limit} bytes")
    # Read from the stream, not request.body: the cap is ours (DATA_UPLOAD_MAX_MEMORY_SIZE is a form limit),
    # and one byte more than the cap tells an oversize body whatever its headers said.
    body = request.read(limit + 1)
    if len(body) > limit:
        return _refuse(413, f"request body over {limit} bytes")
    reason = signing.check(body, request.headers.get(signing.TIMESTAMP_HEADER), request.headers.get(signing.SIGNATURE_HEADER))
    if reason:
        return _refuse(403, reason)
    parsed = _parse(body)
    if isinstance(parsed, str):
        return _refuse(400, parsed)
    messages, nonce = parsed
    for index, message in enumerate(messages):
        if problem := room_ops.problem(message):
            return _refuse(400, f"malformed message {index}: {problem}")
    if reason := signing.claim(nonce):
        return _refuse(429 if reason.startswith("too many") else 403, reason)
    for index, message in enumerate(messages):
        try:
            await bus.deliver(message)
        except (ValueError, TypeError, RecursionError) as error:
            # Validated above, so this is data the transport could not encode: stop, saying how far it got.
            log.error("internal publish: message %d not delivered: %s", index, error)
            return JsonResponse({"ok": False, "error": f"message {index} not delivered: {error}", "delivered": index}, status=400)
    return JsonResponse({"ok": True, "delivered": len(messages)})
