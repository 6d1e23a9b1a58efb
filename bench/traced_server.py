"""uvicorn serving an ASGI app while it watches itself, for ``bench/profile.py``.

``python -m bench.traced_server PORT APP DIR``: serves like ``bench.servers.uvicorn`` (uvloop, no
permessage-deflate) and records every garbage-collection pause (and how many objects it freed). With ``TRACE_MEMORY=<frames>``
it also traces Python allocations. On SIGUSR1 it writes ``DIR/gc.json`` and, when tracing,
``DIR/snapshot-<n>.bin`` (after a full collection, so only live objects count).
"""

import gc
import json
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import uvicorn

frames = int(os.environ.get("TRACE_MEMORY", "0"))
if frames:
    tracemalloc.start(frames)

port, app, out = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
pauses: list[tuple[int, float, float, int]] = []  # (generation, milliseconds, wall-clock end, objects freed)
_started = 0.0


def _timed(phase: str, info: dict[str, Any]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
    else:
        pauses.append((info["generation"], (time.perf_counter() - _started) * 1000, time.time(), info["collected"]))


def _report(*_: Any) -> None:
    (out / "gc.json").write_text(json.dumps(pauses))
    if frames:
        gc.collect()
        count = len(list(out.glob("snapshot-*.bin"))) + 1
        tracemalloc.take_snapshot().dump(str(out / f"snapshot-{count}.bin"))
    (out / "reported").write_text(str(time.time()))


gc.callbacks.append(_timed)
signal.signal(signal.SIGUSR1, _report)
config = uvicorn.Config(
    app, host="127.0.0.1", port=port, log_level="warning", access_log=False, ws_per_message_deflate=False, ws_ping_interval=0
)
uvicorn.Server(config).run()
