"""A serving process's start: work apps need done (``at_startup``, from their ``live.py``), GC tuning, log filters."""

import gc
import logging
from collections.abc import Awaitable, Callable

from websockets.exceptions import InvalidState

Hook = Callable[[], Awaitable[None]]
startup_hooks: list[Hook] = []

# CPython's defaults are (700, 10, 10): only the young generation's threshold is raised; see tune_gc.
GC_THRESHOLDS = (10_000, 10, 10)
_gc_tuned = False


def at_startup(hook: Hook) -> Hook:
    """Run ``async hook()`` when a server process starts, before it serves (e.g. mark jobs a dead process left)."""
    startup_hooks.append(hook)
    return hook


def tune_gc() -> None:
    """Keep full garbage collections off the delivery path of a long-running server.

    A full collection walks every tracked object while the event loop waits: with 1,000
    watchers it paused delivery 130–250 ms, the whole save-to-screen tail in ``make bench``.
    What startup built (Django, the apps) lives as long as the process, so it is frozen out
    of every later collection; and a larger first threshold lets short-lived request and
    broadcast objects die young instead of being promoted, so full collections come rarely.
    Measured, 3 runs each: p99 36–69 ms → 29–32 ms, max 190–252 ms → 55–63 ms.
    Once per process (a test run starts many servers in one process).
    """
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# --- two uvicorn log records, reduced to what they are --------------------------------------------


INVALID_UTF8 = "Invalid UTF-8 sequence received from client."  # uvicorn's message, verbatim


class _ClientFrameRefusals(logging.Filter):
    """Turn two uvicorn 0.54 records about a client's bad websocket data into one warning line each.

    uvicorn handles both correctly; only its logging says "server error":

    * A text frame that is not UTF-8: uvicorn closes the connection with 1007 (as RFC 6455 asks) and
      the app sees the disconnect, but it logs ``logger.exception("Invalid UTF-8 sequence received
      from client.")``, a traceback for the client's fault.
    * The same frame arriving with the client's own close frame in one read: the connection is no
      longer open, so uvicorn's ``send_close(1007)`` raises websockets' ``InvalidState`` out of
      ``data_received``; the event loop aborts the transport (``connection_lost`` runs: the app
      sees the disconnect, nothing is left behind) and logs "Fatal error on transport" with it.

    Matched narrowly (logger, message and exception type); any other record passes untouched.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.name == "uvicorn.error" and record.msg == INVALID_UTF8 and isinstance(exc, UnicodeDecodeError):
            _as_warning(record, "websocket closed (1007): the client sent a text frame that is not UTF-8")
        elif (
            record.name == "asyncio"
            and isinstance(exc, InvalidState)
            and isinstance(record.msg, str)
            and record.msg.startswith("Fatal error")
            and "websockets_sansio_impl.WebSocketsSansIOProtocol" in record.msg
        ):
            _as_warning(record, "websocket aborted: the client closed while its text frame that is not UTF-8 was refused")
        return True


def _as_warning(record: logging.LogRecord, message: str) -> None:
    record.msg, record.args = message, ()
    record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
    record.exc_info, record.exc_text, record.stack_info = None, None, None


def install_log_filters() -> None:
    """Attach ``_ClientFrameRefusals`` to uvicorn's and asyncio's loggers (idempotent: many servers, one process)."""
    for name in ("uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ClientFrameRefusals) for f in logger.filters):
            logger.addFilter(_ClientFrameRefusals())
