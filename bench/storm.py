"""``make storm``: thousands of watchers reconnecting at once after a server restart, with recovery and with snapshots.

Two uvicorn nodes share a real redis-server (``REDIS_URL``): node A takes the REST writes (a steady mix of
creates, updates and deletes), node B serves the watchers (``bench/watchers.mjs``: official socket.io-client
sockets following the documented protocol, a few Node processes). Node B is killed and started again on the
same port, twice: once with watchers that send ``since`` (recovery: just the missed events, from the history
in Redis) and once with watchers that never do (every rejoin reloads the room's snapshot). For each, the time
from node B listening again until every watcher is current: rejoined, and every write acknowledged before
then applied. Afterwards writes pause and every watcher's tasks are compared with the database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.run import Django, percentile
from bench.servers import ROOT, Server, make
from tests.support.processes import RedisServer, wait_for_port

DESCRIPTION = "Realistic task text: " + "acceptance criteria, links and notes " * 4  # so that a snapshot weighs what a real one does


def now_ms() -> float:
    return time.time() * 1000


class LoggedServer(Server):
    """A bench server whose output goes to a file: an undrained pipe would stall it once full (a storm logs)."""

    def start(self) -> LoggedServer:
        self.log_path = Path(tempfile.gettempdir()) / f"archon-storm-{self.name}-{self.port}.log"
        with open(self.log_path, "a") as log:
            env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
            self.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, timeout=60, proc=self.proc)
        return self

    def kill(self) -> None:
        """A crash: no clean shutdown, every connection cut at once."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def logged(name: str, django: Django, redis_url: str, label: str) -> LoggedServer:
    base = make(name, django_env={**django.env, "REDIS_URL": redis_url}, redis_url=redis_url)
    server = LoggedServer(label, base.command, base.env, base.port)
    return server


class Site:
    """redis-server, a seeded database and the two nodes."""

    def __init__(self, projects: int, tasks: int, redis_pool: int = 0) -> None:
        self.redis = RedisServer().start()
        # redis-py reads pool options from the URL: ?max_connections=N lifts its asyncio default (100 connections).
        url = f"{self.redis.url}?max_connections={redis_pool}" if redis_pool else self.redis.url
        self.django = Django(url)
        self.django.env["REDIS_URL"] = url
        self.seed(projects, tasks)
        self.writer_node = logged("django-uvicorn", self.django, url, "node-a").start()
        self.watcher_node = logged("django-uvicorn", self.django, url, "node-b").start()

    def seed(self, projects: int, tasks: int) -> None:
        self.django.manage("migrate", "--noinput", "-v", "0")
        code = (
            "import json; from django.contrib.auth import get_user_model; from projects.models import Project, Task; "
            "from realtime.models import ApiToken; "
            "u = get_user_model().objects.create_user('bench', is_staff=True); "
            f"ps = [Project.objects.create(owner=u, title=f'p{{i}}') for i in range({projects})]; "
            f"Task.objects.bulk_create([Task(project=p, title=f't{{j}}', description={DESCRIPTION!r}, task_order=j, version=1) "
            f"for p in ps for j in range({tasks})], batch_size=2000); "
            "ids = {str(p.pk): [str(t) for t in p.tasks.values_list('pk', flat=True)] for p in ps}; "
            "print(json.dumps({'token': ApiToken.issue(user=u)[1], 'tasks': ids}))"
        )
        data = json.loads(self.django.manage("shell", "-c", code).strip().splitlines()[-1])
        self.token: str = data["token"]
        self.tasks: dict[str, list[str]] = data["tasks"]
        self.projects = list(self.tasks)

    async def database(self) -> dict[str, dict[str, int]]:
        """Every project's tasks as the database has them now: {project: {task: version}}."""
        async with httpx.AsyncClient(base_url=self.writer_node.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60) as http:
            lists = await asyncio.gather(*(http.get(f"/api/projects/{p}/tasks/") for p in self.projects))
        return {p: {t["id"]: t["version"] for t in r.raise_for_status().json()} for p, r in zip(self.projects, lists, strict=True)}

    def stop(self) -> None:
        for server in (self.watcher_node, self.writer_node):
            server.stop()
        self.redis.stop()


class Writer:
    """Steady REST writes through node A: creates, updates and deletes at ``rate`` per second, each logged when acknowledged."""

    def __init__(self, site: Site, rate: float, tasks: int) -> None:
        self.site, self.rate, self.tasks = site, rate, tasks
        self.live = {p: list(ids) for p, ids in site.tasks.items()}  # the tasks the writer may touch
        self.log: list[tuple[float, str, str, int]] = []  # (acknowledged at, project, task, version; -1: deleted)
        self.errors: list[str] = []
        self.writes = 0
        self.running = asyncio.Event()
        self.inflight: set[asyncio.Task] = set()

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.site.writer_node.url, headers={"Authorization": f"Bearer {self.site.token}"},
                                     timeout=30) as self.http:  # fmt: skip
            i = 0
            while True:
                await self.running.wait()
                task = asyncio.create_task(self.one(i))
                self.inflight.add(task)
                task.add_done_callback(self.inflight.discard)
                i += 1
                await asyncio.sleep(1 / self.rate)

    async def one(self, i: int) -> None:
        project = random.choice(self.site.projects)
        ids, roll = self.live[project], random.random()
        try:
            if (roll < 0.15 and len(ids) < 1.1 * self.tasks) or len(ids) < 0.9 * self.tasks:
                r = await self.http.post(f"/api/projects/{project}/tasks/", json={"title": f"new {i}", "description": DESCRIPTION})
                if r.status_code == 201:
                    task = r.json()
                    ids.append(task["id"])
                    self.done(project, task["id"], task["version"])
                    return
            elif roll < 0.30:
                task_id = ids.pop(random.randrange(len(ids)))  # no later write picks it
                r = await self.http.delete(f"/api/tasks/{task_id}/")
                if r.status_code == 204:
                    self.done(project, task_id, -1)
                    return
            else:
                task_id = random.choice(ids)
                r = await self.http.patch(
                    f"/api/tasks/{task_id}/", json={"title": f"w{i}", "status": random.choice(["todo", "doing", "done"])}
                )
                if r.status_code == 200:
                    self.done(project, task_id, r.json()["version"])
                    return
                if r.status_code == 404:  # deleted meanwhile by a delete in flight
                    return
            self.errors.append(f"at {now_ms():.0f} ms: {r.request.method} {r.request.url.path}: {r.status_code} {r.text[:200]}")
        except httpx.HTTPError as error:
            self.errors.append(f"at {now_ms():.0f} ms: {type(error).__name__}: {error}")  # the clock of killed and ready

    def done(self, project: str, task: str, version: int) -> None:
        self.writes += 1
        self.log.append((now_ms(), project, task, version))

    def targets(self, until: float) -> dict[str, dict[str, int]]:
        """What a current watcher has: every write acknowledged by ``until`` (the highest version; deleted stays deleted)."""
        found: dict[str, dict[str, int]] = {}
        for at, project, task, version in self.log:
            if at > until:
                break
            room = found.setdefault(project, {})
            if version < 0 or room.get(task, 0) < 0:
                room[task] = -1
            else:
                room[task] = max(room.get(task, 0), version)
        return found

    async def pause(self) -> None:
        self.running.clear()
        if self.inflight:
            await asyncio.gather(*self.inflight, return_exceptions=True)

    def resume(self) -> None:
        self.running.set()


class Fleet:
    """``bench/watchers.mjs`` processes sharing the watchers between them."""

    def __init__(
        self, url: str, token: str, rooms: list[str], clients: int, processes: int, since: bool, backoff: dict | None = None
    ) -> None:
        per = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
        offsets = [sum(per[:i]) for i in range(processes)]
        self.configs = [{"url": url, "token": token, "rooms": rooms, "clients": n, "offset": o, "since": since, "connectConcurrency": 50, **(backoff or {})}
                        for n, o in zip(per, offsets, strict=True) if n]  # fmt: skip
        self.clients = clients

    async def __aenter__(self) -> Fleet:
        self.procs = [await asyncio.create_subprocess_exec("node", str(ROOT / "bench" / "watchers.mjs"), json.dumps(c), cwd=ROOT,
                                                           stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26)
                      for c in self.configs]  # fmt: skip
        ready = await asyncio.gather(*(self.read(p, 900) for p in self.procs))
        self.connect_seconds = max(r["connectSeconds"] for r in ready)
        failed = sum(r["failed"] for r in ready)
        if failed:
            raise RuntimeError(f"{failed} of {self.clients} watchers failed to connect and join")
        return self

    async def read(self, proc: asyncio.subprocess.Process, timeout: float = 120) -> dict:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("a watchers.mjs process exited (see its stderr above)")
        return json.loads(line)

    async def ask(self, op: str, **args: object) -> list[dict]:
        data = (json.dumps({"op": op, **args}) + "\n").encode()
        for proc in self.procs:
            proc.stdin.write(data)
        await asyncio.gather(*(p.stdin.drain() for p in self.procs))
        return list(await asyncio.gather(*(self.read(p) for p in self.procs)))

    async def verify(self, site: Site, writer: Writer, timeout: float = 60) -> dict:
        """Pause the writes, then compare every watcher with the database until all agree or ``timeout``."""
        await writer.pause()
        deadline = time.monotonic() + timeout
        while True:
            db = await site.database()
            answers = await self.ask("verify", db=db)
            divergent = sum(a["divergent"] for a in answers)
            if divergent == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        return {"divergent": divergent, "sample": [s for a in answers for s in a["sample"]][:5], "counters": summed(answers)}

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.stdin.write(b'{"op":"exit"}\n')
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()


def summed(answers: list[dict]) -> dict[str, int]:
    total: dict[str, int] = {}
    for answer in answers:
        for key, value in answer["counters"].items():
            total[key] = total.get(key, 0) + value
    return total


async def storm(site: Site, writer: Writer, fleet: Fleet, *, since: bool, timeout: float) -> dict:
    """Restart node B under the fleet's watchers; the time until every one is current again."""
    mode = "recovery" if since else "snapshot"
    clients = fleet.clients
    await fleet.ask("mode", since=since)
    print(f"  {mode}: restarting node B under {clients} watchers…", flush=True)
    await asyncio.sleep(3)  # steady state: writes flowing to every watcher
    before = summed(await fleet.ask("counters"))
    await fleet.ask("mark")
    killed = now_ms()
    logged_before = site.watcher_node.log_path.stat().st_size
    await asyncio.to_thread(site.watcher_node.kill)
    await asyncio.to_thread(site.watcher_node.start)
    ready = now_ms()
    answers = await fleet.ask("targets", targets=writer.targets(ready), t0=ready)
    deadline, shown = time.monotonic() + timeout, time.monotonic()
    while sum(a["current"] for a in answers) < clients and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        answers = await fleet.ask("status", t0=ready)
        if time.monotonic() - shown > 15:
            shown = time.monotonic()
            print(f"    {(now_ms() - ready) / 1000:.0f} s: {sum(a['connected'] for a in answers)} connected, "
                  f"{sum(a['rejoined'] for a in answers)} rejoined, {sum(a['current'] for a in answers)} current", flush=True)  # fmt: skip
    answers = await fleet.ask("status", t0=ready, times=True)
    times = sorted(t for a in answers for t in a["times"])
    if len(times) < clients:
        print(f"    not current after {timeout:g} s, e.g.: {[w for a in answers for w in a['waiting']][:3]}", flush=True)
    current = len(times)
    check = await fleet.verify(site, writer)
    writer.resume()
    counters = {k: v - before.get(k, 0) for k, v in check["counters"].items()}
    text = site.watcher_node.log_path.read_bytes()[logged_before:].decode(errors="replace")  # what node B logged meanwhile
    counters["server_connect_timeouts"] = text.count("no Socket.IO connect within")
    counters["server_history_unreachable"] = text.count("history unreachable")
    return {"mode": mode, "clients": clients, "current": current, "down_s": (ready - killed) / 1000,
            "all_current_s": times[-1] / 1000 if current == clients else None, "p50_s": percentile(times, 50) / 1000,
            "p99_s": percentile(times, 99) / 1000, "divergent": check["divergent"], "sample": check["sample"], "counters": counters}  # fmt: skip


def line(r: dict) -> str:
    done = f"{r['all_current_s']:.2f} s" if r["all_current_s"] is not None else f"NOT ALL ({r['current']}/{r['clients']})"
    c = r["counters"]
    return (f"{r['mode']:>8}: every client current {done} after node B listened again (p50 {r['p50_s']:.2f} s, p99 {r['p99_s']:.2f} s; "
            f"down {r['down_s']:.1f} s); recoveries {c.get('recoveries', 0)} ({c.get('missedEvents', 0)} missed events), "
            f"snapshots {c.get('snapshots', 0)} ({c.get('unmarked', 0)} joins without a marker), "
            f"node B: {c.get('server_connect_timeouts', 0)} connect timeouts, {c.get('server_history_unreachable', 0)} 'history unreachable'; gaps {c.get('gaps', 0)}, resyncs {c.get('resyncs', 0)}; divergent at the end {r['divergent']}")  # fmt: skip


async def main(args: argparse.Namespace) -> dict:
    print(f"storm: seeding {args.projects} projects x {args.tasks} tasks…", flush=True)
    site = Site(args.projects, args.tasks, args.redis_pool)
    writer = Writer(site, args.rate, args.tasks)
    writer.resume()
    running = asyncio.create_task(writer.run())
    results: dict = {
        "clients": args.clients,
        "projects": args.projects,
        "tasks": args.tasks,
        "rate": args.rate,
        "redis_pool": args.redis_pool,
    }
    try:
        # One fleet for both storms (its first joins are snapshots: minutes at 5,000), switched between the two clients.
        backoff = {"reconnectionDelay": args.reconnect_delay, "reconnectionDelayMax": args.reconnect_delay_max}
        async with Fleet(
            site.watcher_node.url, site.token, site.projects, args.clients, args.processes, since=True, backoff=backoff
        ) as fleet:
            print(f"  {args.clients} watchers connected and joined in {fleet.connect_seconds:.1f} s", flush=True)
            for since in (mode == "recovery" for mode in args.modes.split(",")):
                r = await storm(site, writer, fleet, since=since, timeout=args.timeout)
                results[r["mode"]] = r
                print("  " + line(r), flush=True)
                if r["sample"]:
                    print(f"    divergent sample: {r['sample']}", flush=True)
    finally:
        # Let the writes in flight finish before cancelling run(): leaving its `async with httpx.AsyncClient` closes the
        # client under them (an empty httpx ReadError, very likely the one failed write of 2026-12-07's storm).
        await writer.pause()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        site.stop()
    results["writes"], results["write_errors"] = writer.writes, writer.errors[:5]
    recovery, snapshot = (results.get(mode, {}).get("all_current_s") for mode in ("recovery", "snapshot"))
    ratio = snapshot / recovery if recovery and snapshot else float("nan")
    results["ratio"] = ratio
    print(f"\nSTORM {args.clients} clients ({args.projects} projects x {args.tasks} tasks, {args.rate:g} writes/s): "
          f"recovery {recovery if recovery is None else f'{recovery:.2f} s'} vs full snapshots "
          f"{snapshot if snapshot is None else f'{snapshot:.2f} s'} until every client is current: "
          f"{ratio:.1f}x faster with recovery; divergent {'/'.join(str(results[m]['divergent']) for m in ('recovery', 'snapshot') if m in results)}; "
          f"{writer.writes} writes, {len(writer.errors)} write errors", flush=True)  # fmt: skip
    if writer.errors:
        print(f"write errors (first 5): {writer.errors[:5]}", flush=True)
    return results


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--tasks", type=int, default=200, help="tasks per project (what a snapshot carries)")
    parser.add_argument("--rate", type=float, default=20, help="REST writes per second, all projects together")
    parser.add_argument("--processes", type=int, default=2, help="Node processes sharing the watchers")
    parser.add_argument(
        "--redis-pool", type=int, default=0, help="the nodes' Redis pool size (max_connections in REDIS_URL; 0: redis-py's default)"
    )
    parser.add_argument("--reconnect-delay", type=int, default=None, help="socket.io-client reconnectionDelay, ms (default: its own, 1000)")
    parser.add_argument("--reconnect-delay-max", type=int, default=None, help="reconnectionDelayMax, ms (default: its own, 5000)")
    parser.add_argument("--modes", default="recovery,snapshot", help="which storms, in order: recovery (since), snapshot (no since)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for every client to be current")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(arguments()))
