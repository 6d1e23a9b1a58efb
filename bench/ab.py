"""The save path, before and after: REST saves against the app served from two source trees, alternately.

``python -m bench.ab <tree>,<tree> [--rounds 3] [--saves 300] [--postgres]``

Each tree (e.g. ``git worktree add /tmp/before <commit>``) is served in turn by uvicorn, ``--rounds``
times, on one seeded database (SQLite, or with ``--postgres`` a throwaway PostgreSQL server); each
time ``--saves`` task PATCHes are sent one after another, with no watchers. Prints, per tree, the
wall time and the server's CPU time per save (from /proc), sorted: old and new measured in the same
run, so a busy machine slows both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time

import httpx

from bench import run
from bench.profile import cpu_ms
from bench.servers import cpu_seconds, free_port, uvicorn
from bench.workers import postgres_counters
from tests.support.postgres import PostgresServer
from tests.support.processes import interrupt, wait_for_port


async def saves(tree: str, django: run.Django, count: int, postgres: PostgresServer | None) -> tuple[float, float, float, float]:
    """(wall ms, server CPU ms, PostgreSQL CPU ms, PostgreSQL connections opened) per save, ``count`` saves against ``tree``."""
    port = free_port()
    env = {**os.environ, **django.env, "PYTHONPATH": tree}
    command = uvicorn("archon_site.asgi:application", port)
    proc = subprocess.Popen(command, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    wait_for_port(port, proc=proc)
    try:
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {django.token}"}) as http:
            url = f"http://127.0.0.1:{port}/api/tasks/{django.tasks[0]}/"
            for i in range(20):  # warm: imports, caches, the first connections
                (await http.patch(url, json={"title": f"w{i}"})).raise_for_status()
            database = (cpu_seconds(postgres.proc.pid), postgres_counters(postgres)["pg_sessions"]) if postgres else (0.0, 0)
            cpu, started = sum(cpu_ms(proc.pid)), time.perf_counter()
            for i in range(count):
                (await http.patch(url, json={"title": f"s{i}"})).raise_for_status()
            wall, server = (time.perf_counter() - started) / count * 1000, (sum(cpu_ms(proc.pid)) - cpu) / count
            if postgres is None:
                return wall, server, 0.0, 0.0
            sessions = postgres_counters(postgres)["pg_sessions"] - database[1] - 1  # minus this reading's own
            return wall, server, (cpu_seconds(postgres.proc.pid) - database[0]) * 1000 / count, sessions / count
    finally:
        interrupt(proc)


async def main(trees: list[str], rounds: int, count: int, postgres: bool) -> None:
    server = PostgresServer().start() if postgres else None
    try:
        django = run.Django("", database_url=server.url if server else None)
        django.seed(projects=1)
        results: dict[str, list[tuple[float, float, float, float]]] = {tree: [] for tree in trees}
        for _ in range(rounds):
            for tree in trees:
                results[tree].append(await saves(tree, django, count, server))
        for tree, measured in results.items():
            walls, cpus, pg_cpus, opened = (sorted(round(m[k], 2) for m in measured) for k in range(4))
            line = f"{'postgres' if postgres else 'sqlite'} {tree}: wall ms/save {walls}  server CPU ms/save {cpus}"
            print(line + (f"  PostgreSQL CPU ms/save {pg_cpus}  connections opened/save {opened}" if postgres else ""))
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", help="comma-separated source trees (checkouts of the commits to compare)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--saves", type=int, default=300)
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL server instead of SQLite")
    args = parser.parse_args()
    asyncio.run(main(args.trees.split(","), args.rounds, args.saves, args.postgres))
