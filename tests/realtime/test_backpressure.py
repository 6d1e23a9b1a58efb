"""The unsent-bytes bound tells a burst to a reader that keeps up from a client that stopped reading.

A reorder of 1,500 tasks of 8 KB sends 12 MB of ``task_updated`` to every watcher of the project
within one event-loop iteration: nothing is written out in between, so even a fast reader's
transport holds several MB at once. Such a watcher must get every event and stay connected; a
stalled one (a tiny receive buffer, never read) is still dropped, after REALTIME_BUFFER_GRACE_SECONDS
or at once over the hard ceiling. Real uvicorn processes, real python-socketio and Node clients.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx

from projects.models import Task
from realtime import limits
from tests.conftest import db
from tests.realtime.test_memory import RawSocketIO
from tests.support import factories as f
from tests.support.node_client import NodeClient
from tests.support.py_client import PyClient

TASKS = 1_500
DESCRIPTION = 8_000  # characters: 1,500 x 8 KB = 12 MB of task_updated per watcher


def _world() -> tuple[Any, list[str], str]:
    alice = f.make_user("alice")
    project = f.make_project(alice)
    # bulk_create: no broadcasts (nobody watches yet), and seconds faster than 1,500 saves.
    tasks = Task.objects.bulk_create(
        Task(project=project, title=f"t{i:04}", description=f"{i}:" + "d" * DESCRIPTION, task_order=i, version=1) for i in range(TASKS)
    )
    return project, [str(t.pk) for t in tasks], f.token_for(alice)


async def _reorder(url: str, token: str, project: Any, ids: list[str]) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120) as rest:
        response = await rest.post(f"{url}/api/projects/{project.pk}/tasks/reorder/", json={"task_ids": ids[::-1]})
        assert response.status_code == 200, response.text[:500]


async def _stalled(url: str, token: str, project: Any) -> RawSocketIO:
    """A watcher that joins (reading its snapshot and the ack), then never reads again."""
    raw = await RawSocketIO(url, rcvbuf=4096).open(token)
    assert (await raw.call("join_project", {"project_id": str(project.pk)}))["ok"]
    return raw


async def _logged(server: Any, text: str) -> str:
    """The server's log once ``text`` is in it (bounded wait: the drop happens on the server's own clock)."""
    async with asyncio.timeout(60):
        while text not in (log := server.output()):  # noqa: ASYNC110  (a log has no event to await)
            await asyncio.sleep(0.1)
    return log


async def _all_updates(client: Any, count: int) -> list[dict[str, Any]]:
    # Bounded wait for the burst to arrive (a hang fails, a slow machine does not).
    async with asyncio.timeout(120):
        while len(updates := client.received("task_updated")) < count and client.connected:  # noqa: ASYNC110  (no event to await)
            await asyncio.sleep(0.05)
    return updates


async def test_a_burst_reaches_fast_readers_whole_and_a_stalled_watcher_is_dropped_after_the_grace(spawn):
    server = spawn(REALTIME_BUFFER_GRACE_SECONDS="1")  # the default bound (4 MB); a short grace keeps the test short
    project, ids, token = await db(_world)()
    join = {"project_id": str(project.pk)}

    stalled = await _stalled(server.url, token, project)
    # Born a websocket (direct writes) and upgraded from long-polling (engine.io's queue and writer).
    watchers: list[Any] = [PyClient(), NodeClient()]
    await watchers[0].connect(server.url, auth={"token": token}, transports=["websocket"])
    await watchers[1].connect(server.url, auth={"token": token})
    try:
        for watcher in watchers:
            assert (await watcher.call("join_project", join, timeout=60)) == {"ok": True, **join}
        started = time.perf_counter()
        await _reorder(server.url, token, project, ids)
        delivered = [await _all_updates(watcher, TASKS) for watcher in watchers]
        elapsed = time.perf_counter() - started
        for watcher, updates in zip(watchers, delivered, strict=True):
            assert sorted(u["id"] for u in updates) == sorted(ids), f"{watcher!r}: {len(updates)} of {TASKS}"
            assert watcher.connected and (await watcher.call("unsubscribe_projects")) == {"ok": True}
        # The stalled watcher reads nothing meanwhile (reading would drain it): its drop shows in the log.
        log = await _logged(server, limits.NOT_READING)
        assert await stalled.closed_by_server(timeout=30)
    finally:
        stalled.close()
        for watcher in watchers:
            await watcher.close()

    drops = re.findall(rf"disconnected \S+: (\d+) {limits.NOT_READING} \(([^)]*)\)", log)
    burst = sum(len(f"{i}:") + DESCRIPTION for i in range(TASKS))
    print(
        f"\nreorder burst: {TASKS} task_updated, {burst / 1e6:.1f} MB of descriptions per watcher, "
        f"all delivered to both in {elapsed:.1f} s; stalled: {drops}"
    )
    assert len(drops) == 1 and drops[0][1].startswith("over 4000000 for "), log[-3000:]


async def test_a_stalled_watcher_over_the_hard_ceiling_is_dropped_at_once(spawn):
    # A grace far longer than the test: only the ceiling (4 x 1 MB) can end this connection.
    server = spawn(REALTIME_MAX_BUFFERED_BYTES="1000000", REALTIME_BUFFER_GRACE_SECONDS="600")
    project, ids, token = await db(_world)()
    stalled = await _stalled(server.url, token, project)
    try:
        await _reorder(server.url, token, project, ids)
        log = await _logged(server, limits.NOT_READING)
        assert await stalled.closed_by_server(timeout=30)
    finally:
        stalled.close()
    assert re.search(rf"\d+ {limits.NOT_READING} \(over the hard ceiling of 4000000\)", log), log[-3000:]
