"""A failure every client meets at once (joins while Redis is down), logged as a run: its first, a count every
``every`` seconds while it lasts, its size at the end. Not one line per client."""

import logging
import time
from collections.abc import Callable


class FailureRun:
    """The first failure of a run is logged; while the run lasts, how many so far, at most every ``every`` seconds;
    and its size when the next success ends it. Used from the event loop only (not thread-safe)."""

    def __init__(self, logger: logging.Logger, what: str, *, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.what, self.every, self.clock = logger, what, every, clock
        self.count = 0  # failures in the current run
        self.logged_at = 0.0

    def failed(self, error: BaseException) -> None:
        self.count += 1
        now = self.clock()
        if self.count == 1:  # with its traceback: an unexpected error (a bug, not an outage) shows where it is
            self.logger.warning("%s (%s: %s)", self.what, type(error).__name__, error, exc_info=error)
        elif now - self.logged_at >= self.every:
            self.logger.warning("%s: still, %d times so far (last: %s: %s)", self.what, self.count, type(error).__name__, error)
        else:
            return
        self.logged_at = now

    def succeeded(self) -> None:
        if self.count:
            self.logger.warning("%s: over after %d times", self.what, self.count)
            self.count = 0
