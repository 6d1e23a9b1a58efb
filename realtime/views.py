"""The embedded path's door: signed bus messages from commands and scripts on this machine."""

import json
import logging

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import bus, signing

log = logging.getLogger(__name__)


@csrf_exempt
@require_POST
async def publish(request: HttpRequest) -> JsonResponse:
    """Deliver a batch ``{nonce, messages: [...]}`` signed by ``signing``; anything else is refused."""
    try:
        body = json.loads(request.body)
        messages = body["messages"]
        assert isinstance(messages, list) and all(isinstance(m, dict) for m in messages)
    except (ValueError, KeyError, TypeError, AssertionError):
        return JsonResponse({"ok": False, "error": "malformed request"}, status=400)
    reason = signing.refusal(
        request.body, request.headers.get(signing.TIMESTAMP_HEADER), request.headers.get(signing.SIGNATURE_HEADER), body.get("nonce")
    )
    if reason:
        log.warning("refused internal publish: %s", reason)
        return JsonResponse({"ok": False, "error": reason}, status=403)
    try:
        for message in messages:
            await bus.deliver(message)
    except (KeyError, TypeError, ValueError) as error:
        return JsonResponse({"ok": False, "error": f"malformed message: {error}"}, status=400)
    return JsonResponse({"ok": True, "delivered": len(messages)})
