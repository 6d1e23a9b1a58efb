"""Delivery from a process that does not serve Socket.IO itself (commands, shell, scripts).

Without a configured path to a server the event cannot be delivered: it is dropped
(the state it describes is already in the database), said once at info level.
"""

import logging
from typing import Any

log = logging.getLogger(__name__)
_warned = False


async def publish(message: dict[str, Any]) -> None:
    """Hand one bus message (emit / leave / disconnect) to the running servers."""
    global _warned
    level = logging.DEBUG if _warned else logging.INFO
    _warned = True
    log.log(level, "no realtime server reachable from this process; live events are dropped (first: %s)", message.get("event") or message["op"])
