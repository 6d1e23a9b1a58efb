"""The several-workers scenario of ``make bench`` (issue 14): ``uvicorn --workers N`` over Redis and PostgreSQL.

For each worker count: C websocket-only clients (``bench/loadgen.mjs``; no polling, so no sticky sessions) in
one project room, how the kernel spread them over the workers (read from /proc), then K saves one after
another (deliveries per second to all C) and saves at a steady rate (save-to-screen: request sent to the last
client's delivery). Beside each figure, the CPU seconds of the load generator, the server's processes, Redis
and PostgreSQL over that phase. On a 2-core machine they all compete for the same two cores: see
``docs/scaling.md`` for what that lets these figures show.

Run alone: ``python -m bench.workers [--quick]``; ``--costs``: only the per-operation Redis and PostgreSQL costs of docs/scaling.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.run import Django, LoadGen, percentile
from bench.servers import ROOT, Server, connections_per_process, cpu_seconds, descendants, uvicorn_workers
from tests.support.live_server import free_port
from tests.support.postgres import PostgresServer
from tests.support.processes import RedisServer, wait_for_port


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


class WorkersServer(Server):
    """``uvicorn --workers N``: output to a file (an undrained pipe could stall N processes that log), ready once
    every worker has finished starting (a worker still importing takes no connections, which would skew the spread)."""

    workers: int = 1

    def start(self) -> WorkersServer:
        self.log_path = Path(tempfile.gettempdir()) / f"archon-bench-workers-{self.port}.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(self.command, cwd=ROOT, env={**os.environ, **self.env, "PYTHONPATH": str(ROOT)},
                                         stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        wait_for_port(self.port, timeout=60, proc=self.proc)
        deadline, last, still = time.monotonic() + 90, -1.0, 0
        while time.monotonic() < deadline and still < 3:  # N workers, and their CPU idle for 0.75 s: imports done
            time.sleep(0.25)
            busy = cpu_seconds(self.proc.pid)
            still = still + 1 if len(self.worker_pids()) >= self.workers and busy == last else 0
            last = busy
        return self

    def worker_pids(self) -> list[int]:
        """The processes serving clients: uvicorn's one process, or the workers below its supervisor."""
        if not self.proc:
            return []
        if self.workers == 1:  # no supervisor: uvicorn serves in the process it was started as
            return [self.proc.pid]
        return [p for p in descendants(self.proc.pid) if p != self.proc.pid and b"spawn_main" in cmdline(p)]  # not the resource tracker

    def stop(self) -> None:
        pids = descendants(self.proc.pid) if self.proc else []
        super().stop()
        for pid in pids:  # a worker left behind by a supervisor that had to be killed
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def postgres_counters(postgres: PostgresServer) -> dict[str, float]:
    """The bench database's transactions and sessions (connections opened) so far, from pg_stat_database."""
    import psycopg  # noqa: PLC0415 — only this scenario needs the driver

    with psycopg.connect(postgres.url.replace("postgres://", "postgresql://"), autocommit=True) as conn:
        commits, sessions = conn.execute("SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = current_database()").fetchone()
    return {"pg_commits": commits, "pg_sessions": sessions}


def redis_commands(redis: RedisServer) -> dict[str, dict[str, float]]:
    """Redis's own count and mean time of each command it ran (INFO commandstats): what a broadcast costs it."""
    import redis as redis_py  # noqa: PLC0415

    client = redis_py.Redis.from_url(redis.url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): {"calls": v["calls"], "usec_per_call": v["usec_per_call"]} for name, v in stats.items()}


class Meter:
    """CPU seconds of the load generator, the server's tree, Redis and PostgreSQL between two readings, and
    PostgreSQL's transactions and sessions (each session is a connection opened)."""

    def __init__(self, gen: LoadGen, server: Server, redis: RedisServer, postgres: PostgresServer) -> None:
        self.gen, self.redis, self.postgres = gen, redis, postgres
        self.pids = {"server": server.proc.pid, "redis": redis.proc.pid, "postgres": postgres.proc.pid}

    async def read(self) -> dict[str, float]:
        loadgen = (await self.gen.command("collect"))["cpuMs"] / 1000
        cpu = {f"{name}_cpu_s": cpu_seconds(pid) for name, pid in self.pids.items()}
        # Redis's own time in commands (µs), all and the scripts' (STAMP per broadcast; POSITION per join)
        commands = redis_commands(self.redis)
        usec = {"redis_commands_us": sum(v["calls"] * v["usec_per_call"] for v in commands.values()),
                "redis_scripts_us": sum(v["calls"] * v["usec_per_call"] for k, v in commands.items() if k.startswith("eval")),
                "redis_scripts": sum(v["calls"] for k, v in commands.items() if k.startswith("eval"))}  # fmt: skip
        return {"loadgen_cpu_s": loadgen, **cpu, **postgres_counters(self.postgres), **usec}

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
        spent = {k: round(after[k] - before[k], 2) for k in before}
        spent["wall_s"] = round(seconds, 2)
        return spent


async def one_count(workers: int, django: Django, redis: RedisServer, postgres: PostgresServer, sizes: dict) -> dict:
    port = free_port()
    server = WorkersServer(f"django-uvicorn-x{workers}", uvicorn_workers("archon_site.asgi:application", port, workers), django.env, port)
    server.workers = workers
    server.start()
    clients, room, task = sizes["clients"], django.projects[0], django.tasks[0]
    headers = {"Authorization": f"Bearer {django.token}"}
    url = f"{server.url}/api/tasks/{task}/"
    try:
        async with LoadGen(server.url, clients=clients, rooms=[room], auth={"token": django.token}, id_key="title") as gen:
            spread = connections_per_process(server.proc.pid, port)
            result: dict = {"workers": workers, "clients": clients, "connect_seconds": gen.ready["connectSeconds"],
                            "processes": len(server.worker_pids()), "connections_held": sum(spread.values()),
                            "spread": sorted(spread.values(), reverse=True), "rss_mb": round(server.rss(), 1)}  # fmt: skip
            meter = Meter(gen, server, redis, postgres)
            async with httpx.AsyncClient(timeout=60, headers=headers) as http:
                # Fan-out: K saves one after another, each to every client.
                await gen.command("reset")
                before, start = await meter.read(), time.time() * 1000
                for i in range(sizes["broadcasts"]):
                    (await http.patch(url, json={"title": f"w{workers}-f{i}"})).raise_for_status()
                got = await gen.wait_for(clients * sizes["broadcasts"], timeout=120)
                last = max(v[2] for v in got["perId"].values())
                after = await meter.read()
                seconds = (last - start) / 1000
                result["fanout"] = {"broadcasts": sizes["broadcasts"], "received": got["received"], "expected": clients * sizes["broadcasts"],
                                    "deliveries_per_s": got["received"] / max(seconds, 1e-9), **Meter.spent(before, after, seconds)}  # fmt: skip

                # Save-to-screen: `rate` saves a second, each timed from just before it is sent to its last delivery.
                await gen.command("reset")
                sent: dict[str, float] = {}
                count, rate = int(sizes["rate"] * sizes["seconds"]), sizes["rate"]

                errors: list[str] = []

                async def save(i: int) -> None:
                    title = f"w{workers}-s{i}"
                    sent[title] = time.time() * 1000
                    try:
                        (await http.patch(url, json={"title": title})).raise_for_status()
                    except httpx.HTTPError as error:  # a server far behind is a result too: counted, not fatal
                        errors.append(f"{type(error).__name__}: {error}")

                before, begin, tasks = await meter.read(), time.monotonic(), []
                for i in range(count):
                    await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))
                    tasks.append(asyncio.create_task(save(i)))
                await asyncio.gather(*tasks)
                got = await gen.wait_for(clients * count, timeout=60)
                after = await meter.read()
            latencies = [got["perId"][t][2] - sent[t] for t in sent if t in got["perId"]]
            result["save"] = {"saves": count, "rate": rate, "errors": len(errors), "first_error": errors[:1], "complete": sum(1 for t in sent if got["perId"].get(t, [0])[0] == clients),
                              "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99), "max_ms": max(latencies, default=float("nan")),
                              **Meter.spent(before, after, time.monotonic() - begin)}  # fmt: skip
            result["alive_processes"] = len(server.worker_pids())
            return result
    finally:
        server.stop()


async def main(quick: bool) -> dict:
    """Every worker count in turn on one Redis, one PostgreSQL and one seeded database."""
    # 2,000 clients at 10 saves/s: the 20,000 deliveries/s of the one-process save-to-screen (1,000 × 20/s), on twice the connections.
    sizes = {"workers": [1, 2, 4], "clients": 500 if quick else 2000, "broadcasts": 20 if quick else 50, "rate": 10,
             "seconds": 5 if quick else 30}  # fmt: skip
    redis, postgres = RedisServer().start(), PostgresServer(max_connections=500).start()
    try:
        django = Django(redis.url, database_url=postgres.url)
        django.env["REDIS_URL"] = redis.url
        django.seed(projects=1)
        results: dict = {"sizes": sizes, "database": "postgresql", "cpus": os.cpu_count()}
        for workers in sizes["workers"]:
            try:
                results[f"workers/{workers}"] = await one_count(workers, django, redis, postgres, sizes)
            except Exception as error:  # a worker count that cannot take the load is a result too
                results[f"workers/{workers}"] = {"error": f"{type(error).__name__}: {error}"}
            print(f"  workers/{workers}: {json.dumps(results[f'workers/{workers}'])}", flush=True)
        results["redis_commands"] = redis_commands(redis)  # over every worker count: per-call means
        return results
    finally:
        postgres.stop()
        redis.stop()


async def pubsub_cost(messages: int = 20000) -> dict:
    """What one broadcast costs Redis per subscribed process, and what a process pays to read and decode a broadcast
    for a room it has no client in (RedisManager: every process subscribes to the one channel and reads everything).

    Redis: its CPU seconds for `messages` PUBLISHes of a task_updated's JSON with S raw subscribers that only drain.
    A process: redis-py's async pubsub and ``json.loads`` per message, as python-socketio's listener does."""
    import redis.asyncio as aioredis  # noqa: PLC0415

    redis = RedisServer().start()
    import uuid  # noqa: PLC0415

    # The shape python-socketio publishes for a task_updated (projects.schemas.TaskOut plus the `_live` stamp).
    task = {"id": str(uuid.uuid4()), "project_id": str(uuid.uuid4()), "parent_task_id": None, "title": "Write the scaling plan",
            "description": "Realistic task text: " + "acceptance criteria, links and notes " * 6, "status": "doing", "assignee": "bench",
            "task_order": 3, "feature": "realtime", "sources": [], "code_examples": [], "archived": False, "archived_at": None,
            "created_at": "2026-11-29T11:00:00.000000+00:00", "updated_at": "2026-11-29T11:00:00.000000+00:00", "version": 42,
            "_live": {"room": "project:" + str(uuid.uuid4()), "epoch": "a1b2c3.d4e5f6", "seq": 1234}}  # fmt: skip
    payload = json.dumps({"method": "emit", "event": "task_updated", "data": [task], "namespace": "/", "room": task["_live"]["room"],
                          "skip_sid": None, "callback": None, "host_id": uuid.uuid4().hex})  # fmt: skip
    results: dict = {"messages": messages, "bytes": len(payload)}
    try:
        client = aioredis.from_url(redis.url)
        for subscribers in (1, 8, 32):
            streams = [await asyncio.open_connection("127.0.0.1", redis.port) for _ in range(subscribers)]
            for _, writer in streams:
                writer.write(b"SUBSCRIBE ch\r\n")
            drained = [asyncio.create_task(drain(reader)) for reader, _ in streams]
            await asyncio.sleep(0.2)
            before = cpu_seconds(redis.proc.pid)
            for start in range(0, messages, 500):
                pipe = client.pipeline(transaction=False)
                for _ in range(min(500, messages - start)):
                    pipe.publish("ch", payload)
                await pipe.execute()
            spent = cpu_seconds(redis.proc.pid) - before
            results[f"redis_us_per_publish/{subscribers}"] = round(spent / messages * 1e6, 1)
            if subscribers == 8:  # the real thing: STAMP (number, keep, publish) into one room whose history is full
                results["redis_us_per_stamp/8"] = round(await stamp_cost(client, redis, task, messages) * 1e6, 1)
            for draining in drained:
                draining.cancel()
            for _, writer in streams:
                writer.close()
        # The reader in a process of its own, so that its CPU time is its own: realtime's listener loop
        # (subscription.messages, with its heartbeat) or redis-py's listen() for reference, then json.loads.
        for key, loop in (("process_us_per_message", "messages(p, timeout=5.0, redis_answers=answers)"),
                          ("process_us_per_message_listen", "p.listen()")):  # fmt: skip
            code = (
                "import asyncio, json, sys, time, redis.asyncio as r\n"
                "from realtime.subscription import messages\n"
                "async def answers(): return True\n"
                "async def main():\n"
                f"    p = r.from_url('{redis.url}').pubsub(ignore_subscribe_messages=True); await p.subscribe('ch')\n"
                "    await p.get_message(timeout=1); print('ready', flush=True); got, began = 0, time.process_time()\n"
                f"    async for m in {loop}:\n"
                "        json.loads(m['data']); got += 1\n"
                f"        if got == {messages}: print(time.process_time() - began, flush=True); return\n"
                "asyncio.run(main())\n"
            )
            reader = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, cwd=ROOT)
            await reader.stdout.readline()
            for start in range(0, messages, 500):
                pipe = client.pipeline(transaction=False)
                for _ in range(min(500, messages - start)):
                    pipe.publish("ch", payload)
                await pipe.execute()
            results[key] = round(float((await reader.stdout.readline()).decode()) / messages * 1e6, 1)
            await reader.wait()
        await client.aclose()
    finally:
        redis.stop()
    return results


async def stamp_cost(client: Any, redis: RedisServer, task: dict, calls: int) -> float:
    """Redis CPU seconds per call of realtime's STAMP script (realtime/redis_history.py), history full (trimming)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "archon_site.settings")
    os.environ.setdefault("SECRET_KEY", "bench-secret")  # settings refuse to start without one; nothing is signed here
    import django  # noqa: PLC0415 — the script's arguments come from the project's settings

    django.setup()
    from realtime.redis_history import STAMP, stamp_args  # noqa: PLC0415

    script = client.register_script(STAMP)
    keys, argv = stamp_args(task["_live"]["room"], "task_updated", {k: v for k, v in task.items() if k != "_live"}, host_id="bench")
    argv[6] = "ch"  # the channel the raw subscribers listen on
    for _ in range(500):  # fill the room's history first: from then on each call also trims the oldest entry
        await script(keys=keys, args=argv)
    before = cpu_seconds(redis.proc.pid)
    for start in range(0, calls, 500):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(500, calls - start)):
            await script(keys=keys, args=argv, client=pipe)
        await pipe.execute()
    return (cpu_seconds(redis.proc.pid) - before) / calls


def postgres_connection_cost(connections: int = 300) -> dict:
    """PostgreSQL CPU per connection opened (a backend started, a login, one query, closed) against one query on a
    connection kept open: what a pool saves per request, since without one every save opens a connection."""
    import psycopg  # noqa: PLC0415

    postgres = PostgresServer().start()
    url = postgres.url.replace("postgres://", "postgresql://")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, title text)")
            conn.execute("INSERT INTO t VALUES (1, 'x')")
        before = cpu_seconds(postgres.proc.pid)
        for i in range(connections):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("UPDATE t SET title = %s WHERE id = 1", (f"c{i}",))
        opened = (cpu_seconds(postgres.proc.pid) - before) / connections
        with psycopg.connect(url, autocommit=True) as conn:
            before = cpu_seconds(postgres.proc.pid)
            for i in range(connections * 10):
                conn.execute("UPDATE t SET title = %s WHERE id = 1", (f"k{i}",))
            kept = (cpu_seconds(postgres.proc.pid) - before) / (connections * 10)
    finally:
        postgres.stop()
    return {
        "postgres_ms_per_connection_and_update": round(opened * 1000, 2),
        "postgres_ms_per_update_kept_connection": round(kept * 1000, 3),
    }


async def drain(reader: asyncio.StreamReader) -> None:
    while await reader.read(1 << 16):
        pass


def rows(results: dict) -> list[str]:
    """The table rows of the scenario (bench/run.py's table)."""
    out = []
    for workers in results["sizes"]["workers"]:
        r = results.get(f"workers/{workers}", {})
        label = f"{workers} uvicorn worker{'s' if workers > 1 else ''}, Redis + PostgreSQL ({results['sizes']['clients']} clients)"
        if "error" in r or not r:
            out.append(f"| {label} | django-uvicorn ×{workers} | {r.get('error', '—')} | — |")
            continue
        f, s = r["fanout"], r["save"]
        per_save = (f"per save: PostgreSQL {s['postgres_cpu_s'] / s['saves'] * 1000:.1f} ms CPU and {s['pg_sessions'] / s['saves']:.1f} connections opened, "
                    f"Redis {s['redis_commands_us'] / s['saves']:.0f} µs in commands ({s['redis_scripts_us'] / max(s['redis_scripts'], 1):.0f} µs per script)")  # fmt: skip
        out.append(f"| {label} | django-uvicorn ×{workers} | held {r['connections_held']:,} (per worker {'/'.join(map(str, r['spread']))}); "
                   f"fan-out {f['deliveries_per_s']:,.0f} deliveries/s; save-to-screen {s['rate']}/s p50 {s['p50_ms']:.1f} / p99 {s['p99_ms']:.1f} / "
                   f"max {s['max_ms']:.1f} ms ({s['complete']}/{s['saves']} complete, {s['errors']} failed) | CPU s, fan-out / saves: load generator "
                   f"{f['loadgen_cpu_s']:.1f} / {s['loadgen_cpu_s']:.1f}, server {f['server_cpu_s']:.1f} / {s['server_cpu_s']:.1f}, "
                   f"Redis {f['redis_cpu_s']:.2f} / {s['redis_cpu_s']:.2f}, PostgreSQL {f['postgres_cpu_s']:.1f} / {s['postgres_cpu_s']:.1f} "
                   f"(wall {f['wall_s']:.1f} / {s['wall_s']:.1f}); {per_save} |")  # fmt: skip
    commands = results.get("redis_commands", {})
    if commands:
        top = sorted(commands.items(), key=lambda kv: -kv[1]["calls"] * kv[1]["usec_per_call"])[:4]
        figure = ", ".join(f"{name} {v['usec_per_call']:.1f} µs × {v['calls']:,}" for name, v in top)
        out.append(f"| Redis commands over the workers scenario (INFO commandstats, mean per call) | redis-server | {figure} | — |")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--costs", action="store_true", help="only the per-operation Redis and PostgreSQL costs of docs/scaling.md")
    args = parser.parse_args()
    if args.costs:
        print(json.dumps({**asyncio.run(pubsub_cost()), **postgres_connection_cost()}))
    else:
        print("\n".join(rows(asyncio.run(main(args.quick)))))
