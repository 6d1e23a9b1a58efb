"""``make profile``: where the time and memory go, behind the figures ``make bench`` prints.

* **save cost** — server CPU per REST save along the full Django path, with no watchers and
  with 1,000 (from /proc: the event-loop thread's user and kernel time, and the request
  threads'), beside a bare python-socketio broadcast to the same 1,000;
* **gc** — garbage-collection pauses during save-to-screen (1,000 watchers, 20 saves/s), with
  the serving process's GC tuning (``REALTIME_GC_TUNING``) on and off, and the objects they freed
  (garbage only a collection can free: reference cycles);
* **memory** — the Python heap per idle connection (tracemalloc, after a full collection),
  by the package whose code allocated it.

Prints Markdown and writes it to ``bench/results/profile-<date>.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import signal
import tempfile
import time
import tracemalloc
from pathlib import Path

import httpx

from bench import run
from bench.servers import PY, ROOT, Server, free_port, make

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def cpu_ms(pid: int, thread: int | None = None) -> tuple[float, float]:
    """(user, kernel) CPU milliseconds of a process, or of one of its threads."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) * TICK_MS, int(fields[12]) * TICK_MS


async def measure_cpu(server: Server, trigger, count: int, gen: run.LoadGen | None, expected: int) -> dict:  # type: ignore[no-untyped-def]
    pid = server.proc.pid
    before, loop_before = cpu_ms(pid), cpu_ms(pid, pid)
    for i in range(count):
        await trigger(i)
    if gen:
        await gen.wait_for(expected, timeout=60)
    after, loop_after = cpu_ms(pid), cpu_ms(pid, pid)
    total = (sum(after) - sum(before)) / count
    loop_user, loop_sys = ((a - b) / count for a, b in zip(loop_after, loop_before, strict=True))
    return {
        "total_ms": total,
        "loop_user_ms": loop_user,
        "loop_sys_ms": loop_sys,
        "other_threads_ms": max(0.0, total - loop_user - loop_sys),
    }


async def save_cost(django: run.Django, saves: int) -> list[dict]:
    rows = []
    headers = {"Authorization": f"Bearer {django.token}"}
    server = make("django-uvicorn", django_env=django.env, redis_url="").start()
    try:
        async with httpx.AsyncClient(timeout=60, headers=headers) as http:

            async def save(i: int) -> None:
                (await http.patch(f"{server.url}/api/tasks/{django.tasks[0]}/", json={"title": f"p{i}"})).raise_for_status()

            await save(-1)
            rows.append({"what": "REST save, no watchers", **await measure_cpu(server, save, saves, None, 0)})
            async with run.LoadGen(
                server.url, clients=1000, rooms=[django.projects[0]], auth={"token": django.token}, id_key="version"
            ) as gen:
                rows.append({"what": "REST save, 1,000 watchers", **await measure_cpu(server, save, saves, gen, saves * 1000)})
    finally:
        server.stop()
    server = make("bare-uvicorn", django_env={}, redis_url="").start()
    try:
        async with httpx.AsyncClient(timeout=60) as http, run.LoadGen(server.url, clients=1000, rooms=["room-0"]) as gen:

            async def emit(i: int) -> None:
                (await http.post(f"{server.url}/emit", params={"room": "room-0", "n": 1})).raise_for_status()

            rows.append({"what": "bare broadcast, 1,000 watchers", **await measure_cpu(server, emit, saves, gen, saves * 1000)})
    finally:
        server.stop()
    return rows


def traced(django: run.Django, directory: Path, **env: str) -> Server:
    port = free_port()
    server = Server(
        "traced",
        [PY, "-m", "bench.traced_server", str(port), "archon_site.asgi:application", str(directory)],
        {**django.env, **env},
        start_timeout=180,
    )
    server.port = port
    return server.start()


async def report(server: Server, directory: Path) -> None:
    """Ask the traced server for its report and wait until it is written."""
    marker = directory / "reported"
    marker.unlink(missing_ok=True)
    server.proc.send_signal(signal.SIGUSR1)
    while not marker.exists():  # noqa: ASYNC110  (another process writes it)
        await asyncio.sleep(0.2)


async def gc_pauses(django: run.Django, seconds: float) -> list[dict]:
    rows = []
    for tuning in ("true", "false"):
        directory = Path(tempfile.mkdtemp(prefix="archon-gc-"))
        server = traced(django, directory, REALTIME_GC_TUNING=tuning)
        try:
            result = await run.save_to_screen(server, django, 1000, 20, seconds)
            await report(server, directory)
        finally:
            server.stop()
        pauses = [
            (g, ms, freed) for g, ms, end, freed in json.loads((directory / "gc.json").read_text()) if end >= result["began_at"]
        ]  # while saving
        full = [ms for g, ms, _ in pauses if g == 2]
        young = [ms for g, ms, _ in pauses if g < 2]
        rows.append({"tuning": tuning, "collections": len(pauses), "full": len(full), "longest_full_ms": max(full, default=0.0),
                     "longest_young_ms": max(young, default=0.0), "freed": sum(freed for *_, freed in pauses),
                     "over_10_ms": sum(1 for _, ms, _ in pauses if ms > 10), "p99_ms": result["p99_ms"], "max_ms": result["max_ms"]})  # fmt: skip
    return rows


def _package(filename: str) -> str:
    if match := re.search(r"site-packages/([^/]+)", filename):
        return match.group(1).removesuffix(".py")
    if filename.startswith(str(ROOT)):
        return "this project"
    return "stdlib"


async def memory(django: run.Django, clients: int) -> list[tuple[str, float]]:
    """Heap per idle connection by allocating package (the innermost non-stdlib frame)."""
    directory = Path(tempfile.mkdtemp(prefix="archon-mem-"))
    server = traced(django, directory, TRACE_MEMORY="20")
    auth = {"token": django.token}
    try:
        async with run.LoadGen(server.url, clients=50, rooms=[], auth=auth, join=False):  # warm caches and lazy imports
            pass
        await asyncio.sleep(1)
        await report(server, directory)
        async with run.LoadGen(server.url, clients=clients, rooms=[], auth=auth, join=False):
            await asyncio.sleep(1)
            await report(server, directory)
    finally:
        server.stop()
    before, after = (tracemalloc.Snapshot.load(str(directory / f"snapshot-{n}.bin")) for n in (1, 2))
    owners: collections.Counter[str] = collections.Counter()
    for stat in after.compare_to(before, "traceback"):
        frames = list(stat.traceback)[::-1]  # innermost first
        owner = next((f.filename for f in frames if _package(f.filename) != "stdlib"), frames[0].filename)
        owners[_package(owner)] += stat.size_diff
    return [(name, size / clients / 1024) for name, size in owners.most_common() if abs(size) / clients >= 50]


def markdown(costs: list[dict], pauses: list[dict], heap: list[tuple[str, float]], clients: int) -> str:
    lines = [
        "### Server CPU per save or broadcast (ms)",
        "",
        "| what | total | loop thread user | loop thread kernel | other threads |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['what']} | {r['total_ms']:.1f} | {r['loop_user_ms']:.1f} | {r['loop_sys_ms']:.1f} | {r['other_threads_ms']:.1f} |"
        for r in costs
    ]
    lines += ["", "### Garbage collection during save-to-screen (1,000 watchers, 20 saves/s)", "",
              "| GC tuning | collections | full | longest full (ms) | longest young (ms) | objects freed by them | pauses > 10 ms | save-to-screen p99 / max (ms) |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [
        f"| {r['tuning']} | {r['collections']} | {r['full']} | {r['longest_full_ms']:.1f} | {r['longest_young_ms']:.1f} | {r['freed']:,} "
        f"| {r['over_10_ms']} | {r['p99_ms']:.1f} / {r['max_ms']:.1f} |"
        for r in pauses
    ]
    total = sum(kb for _, kb in heap)
    lines += [
        "",
        f"### Python heap per idle connection ({clients:,} connections): {total:.1f} KB",
        "",
        "| allocated by | KB per connection |",
        "|---|---|",
    ]
    lines += [f"| {name} | {kb:.1f} |" for name, kb in heap]
    return "\n".join(lines)


async def main(quick: bool) -> str:
    django = run.Django(redis_url="")  # one process: no bus between processes needed
    django.seed(projects=2)
    clients = 300 if quick else 2000
    costs = await save_cost(django, 30 if quick else 300)
    pauses = await gc_pauses(django, 5 if quick else 30)
    heap = await memory(django, clients)
    return markdown(costs, pauses, heap, clients)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    text = asyncio.run(main(args.quick))
    stamp = time.strftime("%Y-%m-%d")
    out = run.RESULTS / (f"profile-{stamp}-quick.md" if args.quick else f"profile-{stamp}.md")
    out.write_text(f"# make profile, {stamp}, {os.cpu_count()} CPUs\n\n{text}\n")
    print(text)
    print(f"\nwritten: {out}")
