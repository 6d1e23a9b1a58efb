"""(b) A bare python-socketio ASGI app emitting directly: the same protocol as the project, no Django.

``BENCH_MANAGER=stock`` uses python-socketio's own manager, ``fast`` (default) the project's
``realtime.manager.FastManager``, so the bench can show what the manager alone changes.
Clients join with ``join_project {project_id}``; ``POST /emit?room=R&n=K`` broadcasts K messages.
"""

import os
import time
from urllib.parse import parse_qs

import socketio
from django.conf import settings

# The project's manager applies realtime's per-connection byte bound: its two settings, at their defaults.
settings.configure(REALTIME_MAX_BUFFERED_BYTES=4_000_000, REALTIME_BUFFER_GRACE_SECONDS=5.0)

from realtime import direct_write  # noqa: E402
from realtime.manager import FastManager  # noqa: E402

stock = os.environ.get("BENCH_MANAGER") == "stock"
if not stock:
    direct_write.install()
manager = socketio.AsyncManager() if stock else FastManager()
sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager, cors_allowed_origins=None, logger=False, engineio_logger=False)


@sio.on("join_project")
async def join_project(sid: str, data: dict) -> dict:
    await sio.enter_room(sid, str(data["project_id"]))
    return {"ok": True}


async def http_app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http" or scope["path"] != "/emit":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    t0 = time.time() * 1000
    for seq in range(int(query.get("n", 1))):
        await sio.emit(query.get("event", "task_updated"), {"seq": seq, "t": t0}, room=query["room"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


app = socketio.ASGIApp(sio, other_asgi_app=http_app)
