"""Progress streams: at most ~10 events a second, yet never a lost first, status change or final event.

The latest state always goes out: an update that arrives too soon is held and
sent when the interval has passed (unless a newer one replaces it first).
Percentages never move backwards.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

State = dict[str, Any]
log = logging.getLogger(__name__)


class ProgressStream:
    def __init__(self, send: Callable[[State], Awaitable[None]], *, interval: float = 0.1) -> None:
        self._send_fn, self.interval = send, interval
        self._lock = asyncio.Lock()
        self._last_sent = float("-inf")
        self._last_status: str | None = None
        self._percentage = 0.0
        self._held: State | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.sent = 0

    async def update(self, state: State, *, force: bool = False) -> None:
        """Offer a new state; sent now if due (or a status change, or ``force``), else held briefly."""
        async with self._lock:
            state = self._monotonic(state)
            due = time.monotonic() - self._last_sent >= self.interval
            if force or due or state.get("status") != self._last_status:
                await self._send(state)
            else:
                self._held = state
                if self._flusher is None or self._flusher.done():
                    self._flusher = asyncio.create_task(self._flush_later())

    async def close(self, state: State) -> None:
        """Send the final state, after anything held (which it replaces)."""
        # A flusher still waiting goes; one already sending (it holds the lock) finishes first: cancelled in its
        # broadcast, that broadcast's room would be recorded as lost and its watchers told to resync for nothing.
        if self._flusher is not None and self._flusher is not asyncio.current_task() and not self._lock.locked():
            self._flusher.cancel()
        async with self._lock:
            await self._send(self._monotonic(state))

    def _monotonic(self, state: State) -> State:
        if "percentage" in state:
            self._percentage = max(self._percentage, float(state["percentage"]))
            state = {**state, "percentage": round(self._percentage, 1)}
        return state

    async def _send(self, state: State) -> None:
        self._held = None
        self._last_sent, self._last_status = time.monotonic(), state.get("status")
        self.sent += 1
        await self._send_fn(state)

    async def _flush_later(self) -> None:
        await asyncio.sleep(max(0.0, self._last_sent + self.interval - time.monotonic()))
        async with self._lock:
            if self._held is not None:
                try:
                    await self._send(self._held)
                except Exception:  # noqa: BLE001  (nobody awaits this task: said here, not lost silently)
                    log.exception("a held progress state could not be sent")
