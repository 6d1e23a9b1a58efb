"""Delivery from a process that does not serve Socket.IO itself (commands, shell, scripts).

Without a configured path to a server the event cannot be delivered: it is dropped
with one info line (the state it describes is already in the database).
"""

import logging
from typing import Any

log = logging.getLogger(__name__)


async def publish(message: dict[str, Any]) -> None:
    """Hand one bus message (emit / leave / disconnect) to the running servers."""
    log.info("no realtime server reachable from this process; %s to %s dropped", message.get("event") or message["op"], message.get("room") or message.get("members_of"))
