"""The chaos harness (issue 13): two uvicorn nodes on one Redis, Node watchers, random writes and faults, convergence.

- ``Cluster``: a real redis-server and two real uvicorn nodes (A, B) with ``REDIS_URL``, on the test database;
  faults restart a node (cleanly or killed), kill Redis (a fresh one comes back: no persistence, history lost),
  pause it (SIGSTOP / SIGCONT: a partition) or restart it.
- ``Watchers``: one Node process (``tests/js/chaos_watcher.mjs``, the official socket.io-client) hosting many
  watcher sockets that follow the documented protocol, asked for what they hold.
- ``Writer``: random creates, updates, deletes and moves (REST through node A, or a ``manage.py shell`` command
  publishing on its own), remembering where each task has been (see ``Writer.move_targets``).
- ``Chaos``: the rounds — writes, a fault with writes during it, writes after it, then wait (a deadline, not a
  speed assertion) until every watcher's tasks equal the database; count and describe the watchers that do not.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from asgiref.sync import sync_to_async

from .processes import ROOT, RedisServer, ServerProcess, interrupt, manage

WATCHER = ROOT / "tests" / "js" / "chaos_watcher.mjs"
CONVERGENCE_DEADLINE = 30.0  # seconds a round may take to converge before its watchers count as divergent
POLL = 0.1

TaskView = list[Any]  # [version, title, status, task_order]
ProjectView = dict[str, TaskView]  # task id -> view
State = dict[str, ProjectView]  # project id -> its unarchived tasks


def database_state(project_ids: list[str]) -> State:
    """What the database holds: every watched project's unarchived tasks, as the watchers report theirs (sync: ORM)."""
    from projects.models import Task

    state: State = {pid: {} for pid in project_ids}
    rows = Task.objects.filter(project_id__in=project_ids, archived=False).values_list(
        "id", "project_id", "version", "title", "status", "task_order"
    )
    for task_id, project_id, version, title, status, order in rows:
        state[str(project_id)][str(task_id)] = [version, title, status, order]
    return state


# ---------------------------------------------------------------- processes


class Cluster:
    """Redis and two nodes sharing it and one database; every fault leaves them running again."""

    def __init__(self, database_url: str, **env: str) -> None:
        self.database_url = database_url
        self.redis = RedisServer()
        self.env = env
        self.a: ServerProcess | None = None
        self.b: ServerProcess | None = None
        self.logs: dict[str, list[str]] = defaultdict(list)  # node name -> the output of its finished runs
        self.paused = False

    def start(self) -> Cluster:
        self.redis.start()
        self.a = ServerProcess(self.database_url, REDIS_URL=self.redis.url, **self.env).start()
        self.b = ServerProcess(self.database_url, REDIS_URL=self.redis.url, **self.env).start()
        return self

    def node(self, name: str) -> ServerProcess:
        node = self.a if name == "a" else self.b
        assert node is not None
        return node

    def up(self, name: str) -> bool:
        proc = self.node(name).proc
        return proc is not None and proc.poll() is None

    def stop_node(self, name: str, *, crash: bool) -> None:
        """Stop a node: a clean shutdown (SIGINT) or a crash (SIGKILL). Its output is kept for diagnosis."""
        node = self.node(name)
        if crash and node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait(10)
        else:
            interrupt(node.proc)
        node.log.close()
        self.logs[name].append(node.log_path.read_text(errors="replace") + f"----- node {name} {'killed' if crash else 'stopped'} -----\n")

    def start_node(self, name: str) -> None:
        self.node(name).start()  # the same port: its watchers reconnect to the address they know

    def redis_kill(self) -> None:
        self.redis_resume()
        self.redis.stop()  # SIGKILL: with no persistence, whatever it held is gone

    def redis_start(self) -> None:
        if self.redis.proc is None or self.redis.proc.poll() is not None:
            self.redis.start()  # a fresh redis-server on the same port

    def redis_pause(self) -> None:
        assert self.redis.proc is not None
        os.kill(self.redis.proc.pid, signal.SIGSTOP)
        self.paused = True

    def redis_resume(self) -> None:
        if self.paused and self.redis.proc is not None and self.redis.proc.poll() is None:
            os.kill(self.redis.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, keep_logs: Path | None = None) -> None:
        """Stop everything; ``keep_logs``: a folder to write each node's output to (all its runs)."""
        self.redis_resume()
        for name, node in (("a", self.a), ("b", self.b)):
            if node is not None and node.proc is not None:
                if node.proc.poll() is None:
                    interrupt(node.proc)
                if not node.log.closed:
                    node.log.close()
                    self.logs[name].append(node.log_path.read_text(errors="replace"))
                node.log_path.unlink(missing_ok=True)
                if keep_logs is not None:
                    keep_logs.mkdir(parents=True, exist_ok=True)
                    (keep_logs / f"node-{name}.log").write_text("".join(self.logs[name]))
        self.redis.stop()


class Watchers:
    """The Node process hosting every watcher socket (``tests/js/chaos_watcher.mjs``)."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None
        self._stderr: asyncio.Task | None = None
        self._waiting: dict[int, asyncio.Future] = {}
        self._req = 0
        self.stderr_tail: list[str] = []
        self.specs: dict[str, dict[str, Any]] = {}

    async def start(self) -> Watchers:
        node = shutil.which("node")
        if node is None or not (ROOT / "node_modules" / "socket.io-client").is_dir():
            raise RuntimeError("node and node_modules/socket.io-client are needed (scripts/bootstrap.sh node)")
        self.proc = await asyncio.create_subprocess_exec(
            node,
            str(WATCHER),
            cwd=str(ROOT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )
        ready = asyncio.get_running_loop().create_future()
        self._waiting[0] = ready
        self._reader = asyncio.create_task(self._read())
        self._stderr = asyncio.create_task(self._read_stderr())
        async with asyncio.timeout(10):
            await ready
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            msg = json.loads(line)
            req = 0 if msg["type"] == "ready" else msg.get("req")
            fut = self._waiting.pop(req, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the watcher process exited:\n" + "\n".join(self.stderr_tail[-20:])))

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr_tail = [*self.stderr_tail[-199:], line.decode(errors="replace").rstrip()]

    async def _send(self, cmd: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()

    async def add(self, watcher_id: str, url: str, token: str, projects: list[str], transports: list[str] | None, basic: bool) -> None:
        spec = {"id": watcher_id, "url": url, "token": token, "projects": projects, "transports": transports, "basic": basic}
        self.specs[watcher_id] = spec
        await self._send({"op": "add", **spec})

    async def drop(self, watcher_id: str) -> None:
        await self._send({"op": "drop", "id": watcher_id})

    async def reset(self, watcher_id: str) -> None:
        await self._send({"op": "reset", "id": watcher_id})

    async def _ask(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self._req += 1
        fut = asyncio.get_running_loop().create_future()
        self._waiting[self._req] = fut
        await self._send({**cmd, "req": self._req})
        async with asyncio.timeout(10):
            return await fut

    async def state(self) -> dict[str, Any]:
        """Every watcher's tasks per project, whether it is connected and which joins are unanswered; counters."""
        return await self._ask({"op": "state"})

    async def clock(self) -> float:
        """The watcher process's clock (ms since 1970), as its traces are stamped."""
        return (await self._ask({"op": "clock"}))["ms"]

    async def trace(self, watcher_id: str) -> list[list[Any]]:
        """What a watcher saw and did lately: [ms, kind, …] entries (see chaos_watcher.mjs)."""
        return (await self._ask({"op": "trace", "id": watcher_id}))["entries"]

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            try:
                await self._send({"op": "exit"})
                async with asyncio.timeout(5):
                    await self.proc.wait()
            except (TimeoutError, ConnectionError, BrokenPipeError):
                self.proc.kill()
                await self.proc.wait()
        for task in (self._reader, self._stderr):
            if task is not None:
                task.cancel()


# ---------------------------------------------------------------- writes

COMMAND = """
import json, os
from projects.models import Task
for op in json.loads(os.environ["CHAOS_OPS"]):
    kind = op["op"]
    if kind == "create":
        Task.objects.create(project_id=op["project"], title=op["title"], task_order=op["order"])
        continue
    task = Task.objects.filter(pk=op["task"]).first()
    if task is None:
        continue
    if kind == "delete":
        task.delete()
        continue
    if kind == "move":
        task.project_id = op["project"]
    else:
        task.title = op["title"]
        task.status = op["status"]
    task.save()
"""

STATUSES = ["todo", "doing", "review", "done"]


class Writer:
    """Random writes. Knows the database's tasks (refreshed each round) and where each task has been."""

    MAX_TASKS = 14  # per project: creates give way to deletes above it, so snapshots stay small

    def __init__(self, rng: random.Random, cluster: Cluster, token: str, projects: list[str]) -> None:
        self.rng = rng
        self.cluster = cluster
        self.headers = {"Authorization": f"Bearer {token}"}
        self.projects = projects
        self.state: State = {}
        self.visited: dict[str, set[str]] = defaultdict(set)  # task id -> projects it has been in
        self.counts: Counter[str] = Counter()
        self.serial = 0
        self.via = "rest a"
        self.round = 0  # set by Chaos: the round each write is logged under
        self.log: list[dict[str, Any]] = []  # every write: when, through what, which task, the version it made

    def note(self, via: str, op: str, task: str, project: str, version: int | None = None) -> None:
        entry = {"at": time.time(), "round": self.round, "via": via, "op": op, "task": task, "project": project, "version": version}
        self.log.append(entry)

    def refresh(self, state: State) -> None:
        self.state = {pid: dict(tasks) for pid, tasks in state.items()}
        for pid, tasks in state.items():
            for task_id in tasks:
                self.visited[task_id].add(pid)

    def _title(self) -> str:
        self.serial += 1
        return f"t{self.serial}-{self.rng.randrange(1000)}"

    def _some_task(self) -> tuple[str, str] | None:
        tasks = [(pid, tid) for pid, ts in self.state.items() for tid in ts]
        return self.rng.choice(tasks) if tasks else None

    def move_targets(self, task_id: str) -> list[str]:
        """Projects a task may move to: only ones it was never in. The protocol keeps a deleted id deleted in its
        room, and a move is a delete in the old room, so a task moved back would stay gone for that room's watchers."""
        return [p for p in self.projects if p not in self.visited[task_id]]

    async def rest(self, n: int) -> None:
        """``n`` random REST writes through node A (B while A is down): create, rename, move on the board, reorder, archive, delete."""
        name = "a" if self.cluster.up("a") else "b"
        self.via = f"rest {name}"
        async with httpx.AsyncClient(base_url=self.cluster.node(name).url, headers=self.headers, timeout=20) as http:
            for _ in range(n):
                await self._one(http)

    async def _one(self, http: httpx.AsyncClient) -> None:
        rng = self.rng
        pid = rng.choice(self.projects)
        size = len(self.state.get(pid, {}))
        picked = self._some_task()
        roll = rng.random()
        if picked is None or size < 3 or (roll < 0.3 and size < self.MAX_TASKS):  # keep every project populated
            body = {"title": self._title(), "status": rng.choice(STATUSES), "task_order": rng.randrange(100)}
            r = await http.post(f"/api/projects/{pid}/tasks/", json=body)
            r.raise_for_status()
            task = r.json()
            self.state.setdefault(pid, {})[task["id"]] = [task["version"], task["title"], task["status"], task["task_order"]]
            self.visited[task["id"]].add(pid)
            self.counts["create"] += 1
            self.note(self.via, "create", task["id"], pid, task["version"])
            return
        pid, tid = picked
        if roll < 0.45 or len(self.state[pid]) > self.MAX_TASKS:
            r = await http.delete(f"/api/tasks/{tid}/")
            assert r.status_code in (204, 404), r.text
            self.state[pid].pop(tid, None)
            self.counts["delete"] += 1
            self.note(self.via, "delete", tid, pid)
        elif roll < 0.7:
            r = await http.patch(f"/api/tasks/{tid}/", json={"title": self._title()})
            self._updated(r, "rename")
        elif roll < 0.88:
            body = {"status": rng.choice(STATUSES), "task_order": rng.randrange(100)}
            r = await http.patch(f"/api/tasks/{tid}/", json=body)  # a move on the board
            self._updated(r, "board-move")
        elif roll < 0.95:
            ids = list(self.state[pid])
            rng.shuffle(ids)
            r = await http.post(f"/api/projects/{pid}/tasks/reorder/", json={"task_ids": ids[: rng.randint(1, len(ids))]})
            r.raise_for_status()
            for task in r.json():
                self.state[pid][task["id"]] = [task["version"], task["title"], task["status"], task["task_order"]]
                self.note(self.via, "reorder", task["id"], pid, task["version"])
            self.counts["reorder"] += 1
        else:
            r = await http.patch(f"/api/tasks/{tid}/", json={"archived": True})
            r.raise_for_status()
            self.state[pid].pop(tid, None)
            self.counts["archive"] += 1
            self.note(self.via, "archive", tid, pid, r.json()["version"])

    def _updated(self, r: httpx.Response, kind: str) -> None:
        if r.status_code == 404:  # gone meanwhile (a command deleted it)
            return
        r.raise_for_status()
        task = r.json()
        self.state[task["project_id"]][task["id"]] = [task["version"], task["title"], task["status"], task["task_order"]]
        self.counts[kind] += 1
        self.note(self.via, kind, task["id"], task["project_id"], task["version"])

    def command_ops(self, n: int) -> list[dict[str, Any]]:
        """``n`` random writes for a command: create, rename, delete, and moves to another project."""
        ops: list[dict[str, Any]] = []
        for _ in range(n):
            picked = self._some_task()
            roll = self.rng.random()
            if picked is None or roll < 0.25:
                pid = self.rng.choice(self.projects)
                ops.append({"op": "create", "project": pid, "title": self._title(), "order": self.rng.randrange(100)})
                continue
            pid, tid = picked
            targets = self.move_targets(tid)
            if roll < 0.6 and targets:
                target = self.rng.choice(targets)
                ops.append({"op": "move", "task": tid, "project": target})
                self.visited[tid].add(target)
                self.state[target] = self.state.get(target, {})
                self.state[target][tid] = self.state[pid].pop(tid)
            elif roll < 0.75:
                ops.append({"op": "delete", "task": tid})
                self.state[pid].pop(tid)
            else:
                ops.append({"op": "update", "task": tid, "title": self._title(), "status": self.rng.choice(STATUSES)})
            self.counts["cmd-" + ops[-1]["op"]] += 1
            self.note("command", ops[-1]["op"], tid, ops[-1].get("project", pid))
        return ops

    async def command(self, n: int, *, redis: bool = True) -> None:
        """A separate process writes and publishes (``manage.py shell -c``), through Redis."""
        ops = self.command_ops(n)
        env = {"CHAOS_OPS": json.dumps(ops)}
        if redis:
            env["REDIS_URL"] = self.cluster.redis.url
        result = await asyncio.to_thread(manage, self.cluster.database_url, "shell", "-c", COMMAND, **env)
        assert result.returncode == 0, result.stderr[-3000:]


# ---------------------------------------------------------------- rounds


@dataclass
class Fault:
    name: str
    weight: float
    run: Callable[[Chaos], Awaitable[None]]


@dataclass
class Divergence:
    round: int
    fault: str
    watcher: str
    node: str
    details: list[str]


@dataclass
class Report:
    seed: int
    rounds: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    by_fault: Counter[str] = field(default_factory=Counter)
    converge_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    round_s: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    counters: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def summary(self) -> str:
        return f"chaos: rounds={self.rounds} divergent={len(self.divergences)} seed={self.seed}"


def clock(at: float) -> str:
    """A wall-clock time as the nodes' logs print it."""
    return time.strftime("%H:%M:%S", time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def compare(expected: State, watched: dict[str, TaskView | Any]) -> list[str]:
    """What a watcher's projects hold that the database does not (and the reverse), one line per difference."""
    lines: list[str] = []
    for pid, tasks in watched.items():
        want = expected.get(pid, {})
        for tid in sorted(set(want) - set(tasks)):
            lines.append(f"project {pid[:8]}: missing {tid[:8]} v{want[tid][0]}")
        for tid in sorted(set(tasks) - set(want)):
            lines.append(f"project {pid[:8]}: extra {tid[:8]} v{tasks[tid][0]} (not in the database's project)")
        for tid in sorted(set(tasks) & set(want)):
            if list(tasks[tid]) != list(want[tid]):
                lines.append(f"project {pid[:8]}: stale {tid[:8]} has {tasks[tid]} db {want[tid]}")
    return lines


class Chaos:
    """Runs the rounds; ``report`` has what happened."""

    def __init__(
        self, cluster: Cluster, watchers: Watchers, writer: Writer, seed: int, *, verbose: bool = False, only: list[str] | None = None
    ) -> None:
        self.cluster = cluster
        self.watchers = watchers
        self.writer = writer
        self.rng = writer.rng
        self.report = Report(seed=seed)
        self.verbose = verbose
        # Weighted so that a round costs about a second on average (200 rounds in `make test`): dropped connections
        # are cheap and common; node restarts (~3.5 s: Django starts) and long Redis outages rarer.
        self.faults = [
            Fault("drop-watchers", 50, Chaos.drop_watchers),
            Fault("command", 8, Chaos.command),
            Fault("redis-pause", 14, Chaos.redis_pause),
            Fault("redis-pause-long", 1, Chaos.redis_pause_long),
            Fault("redis-restart", 7, Chaos.redis_restart),
            Fault("redis-outage", 5, Chaos.redis_outage),
            Fault("restart-b", 6, Chaos.restart_b),
            Fault("restart-a", 2, Chaos.restart_a),
            Fault("command-during-b-restart", 3, Chaos.command_during_b_restart),
        ]
        if only:  # a subset, by name (CHAOS_FAULTS): to look into one kind of fault
            unknown = set(only) - {f.name for f in self.faults}
            assert not unknown, f"unknown faults {unknown}; known: {[f.name for f in self.faults]}"
            self.faults = [f for f in self.faults if f.name in only]

    # ---- faults (each leaves everything running)

    async def drop_watchers(self) -> None:
        for wid in self.rng.sample(sorted(self.watchers.specs), self.rng.randint(1, 6)):
            await self.watchers.drop(wid)
        await self.writer.rest(self.rng.randint(1, 3))

    async def command(self) -> None:
        await self.writer.command(self.rng.randint(1, 4))

    async def redis_pause(self, seconds: float | None = None) -> None:
        """Redis stops answering (SIGSTOP) while writes go on, then resumes: a partition, nothing lost by Redis itself."""
        self.cluster.redis_pause()
        try:
            started = time.monotonic()
            await self.writer.rest(self.rng.randint(1, 3))
            await asyncio.sleep(max(0.0, (seconds or self.rng.uniform(0.1, 0.8)) - (time.monotonic() - started)))
        finally:
            self.cluster.redis_resume()

    async def redis_pause_long(self) -> None:
        """Paused past the nodes' 5 s Redis timeouts: they count it as an outage."""
        await self.redis_pause(self.rng.uniform(5.5, 7.0))

    async def redis_restart(self) -> None:
        self.cluster.redis_kill()
        self.cluster.redis_start()

    async def redis_outage(self) -> None:
        self.cluster.redis_kill()
        try:
            started = time.monotonic()
            await self.writer.rest(self.rng.randint(1, 4))
            await asyncio.sleep(max(0.0, self.rng.uniform(1.0, 3.0) - (time.monotonic() - started)))
        finally:
            self.cluster.redis_start()

    async def _restart(self, name: str, during: Callable[[], Awaitable[None]]) -> None:
        crash = self.rng.random() < 0.5
        await asyncio.to_thread(self.cluster.stop_node, name, crash=crash)
        try:
            await during()
        finally:
            await asyncio.to_thread(self.cluster.start_node, name)

    async def restart_b(self) -> None:
        await self._restart("b", lambda: self.writer.rest(self.rng.randint(1, 4)))

    async def restart_a(self) -> None:
        await self._restart("a", lambda: self.writer.rest(self.rng.randint(1, 4)))  # written through B meanwhile

    async def command_during_b_restart(self) -> None:
        await self._restart("b", lambda: self.writer.command(self.rng.randint(1, 4)))

    # ---- rounds

    async def expected(self) -> State:
        return await sync_to_async(database_state)(self.writer.projects)

    async def converge(self, deadline: float) -> tuple[State, dict[str, Any], list[tuple[str, list[str]]]]:
        """Poll until every watcher equals the database (or the deadline): the last state, and who differs."""
        end = time.monotonic() + deadline
        while True:
            expected = await self.expected()
            snapshot = await self.watchers.state()
            differing = []
            for wid, view in snapshot["watchers"].items():
                lines = compare(expected, view["projects"])
                if lines or view["joining"] or not view["connected"]:
                    differing.append((wid, lines))
            if not differing or time.monotonic() >= end:
                return expected, snapshot, differing
            await asyncio.sleep(POLL)

    async def explain(self, wid: str, lines: list[str], *, since: float) -> None:
        """Print the first divergent watcher's trace of this round: its connections, joins, markers, and the broadcasts
        of the tasks that differ (each as event, task, version, epoch#seq, and the room's state when it came)."""
        ids = {word for line in lines for word in line.split() if len(word) == 8 and all(c in "0123456789abcdef" for c in word)}
        shown = 0
        print(f"  writes of tasks {sorted(ids)}:", flush=True)
        for write in self.writer.log:
            if write["task"][:8] in ids:
                print(f"    {clock(write['at'])} round {write['round']} via {write['via']}: {write['op']} {write['task'][:8]} "
                      f"project {write['project'][:8]} -> v{write.get('version', '-')}", flush=True)  # fmt: skip
        entries = await self.watchers.trace(wid)
        connection = [f"{clock(e[0] / 1000)} {e[1]} {e[2]}" for e in entries if e[1] in ("connect", "disconnect")][-4:]
        print(f"  {wid}'s last connects and disconnects: {connection}", flush=True)
        print(f"  trace of {wid} this round (tasks {sorted(ids)}):", flush=True)
        for entry in entries:
            text = clock(entry[0] / 1000) + " " + json.dumps(entry[1:])
            about_tasks = entry[1] in ("event", "snapshot")
            if entry[0] < since - 2000 or (about_tasks and not any(i in text for i in ids)):
                continue
            print("    " + text[:400], flush=True)
            shown += 1
            if shown >= 150:
                break

    async def round(self, number: int) -> None:
        round_started = await self.watchers.clock()
        began = time.monotonic()
        fault = self.rng.choices(self.faults, weights=[f.weight for f in self.faults])[0]
        self.writer.round = number
        self.writer.refresh(await self.expected())
        await self.writer.rest(self.rng.randint(0, 2))
        await fault.run(self)
        self.writer.refresh(await self.expected())
        await self.writer.rest(self.rng.randint(1, 2))  # after the fault: a node that lost its way shows it now
        started = time.monotonic()
        _, snapshot, differing = await self.converge(CONVERGENCE_DEADLINE)
        self.report.rounds += 1
        self.report.by_fault[fault.name] += 1
        self.report.counters = snapshot["counters"]
        if not differing:
            self.report.round_s[fault.name].append(time.monotonic() - began)
            self.report.converge_s[fault.name].append(time.monotonic() - started)
            if self.verbose:
                took = time.monotonic() - began
                print(f"round {number}: {fault.name} converged in {time.monotonic() - started:.2f}s (round {took:.2f}s)", flush=True)
            return
        for wid, lines in differing:
            view = snapshot["watchers"][wid]
            state = [] if view["connected"] else ["not connected"]
            if view["joining"]:
                state.append(f"joins unanswered: {[p[:8] for p in view['joining']]}")
            node = "b" if self.watchers.specs[wid]["url"] == self.cluster.node("b").url else "a"
            node += ", basic protocol" if self.watchers.specs[wid]["basic"] else ""
            self.report.divergences.append(Divergence(number, fault.name, wid, node, state + lines))
        print(f"round {number}: {fault.name}: {len(differing)} watcher(s) diverged after {CONVERGENCE_DEADLINE}s:", flush=True)
        for d in self.report.divergences[-len(differing) :]:
            print(f"  {d.watcher} (node {d.node}): " + "; ".join(d.details[:6]) + (" …" if len(d.details) > 6 else ""), flush=True)
        explained: set[tuple[str, bool]] = set()  # one watcher per node and kind (recovery or basic protocol)
        for d in self.report.divergences[-len(differing) :]:
            kind = (d.node, True)
            if kind not in explained:
                explained.add(kind)
                await self.explain(d.watcher, [line for w, lines in differing if w == d.watcher for line in lines], since=round_started)
        # Start the divergent ones afresh (a reloaded page), so later rounds test the protocol again, not this round's damage.
        for wid, _ in differing:
            await self.watchers.reset(wid)
        _, _, still = await self.converge(CONVERGENCE_DEADLINE)
        if still:
            raise AssertionError(f"round {number}: even fresh watchers do not converge: {still[:3]}")

    async def run(self, rounds: int, *, max_divergent_rounds: int) -> Report:
        started = time.monotonic()
        _, _, differing = await self.converge(CONVERGENCE_DEADLINE)
        assert not differing, f"the watchers never matched the database at the start: {differing[:3]}"
        divergent_rounds = 0
        for number in range(1, rounds + 1):
            before = len(self.report.divergences)
            await self.round(number)
            if len(self.report.divergences) > before:
                divergent_rounds += 1
                if divergent_rounds >= max_divergent_rounds:
                    print(f"chaos: stopping after {divergent_rounds} divergent rounds", flush=True)
                    break
            if number % 50 == 0:
                print(f"chaos: {number} rounds, {len(self.report.divergences)} divergent, {time.monotonic() - started:.0f}s", flush=True)
        self.report.wall_s = time.monotonic() - started
        return self.report

    def print_figures(self) -> None:
        """Measured figures (printed, never asserted)."""
        r = self.report
        print(f"chaos: {r.rounds} rounds in {r.wall_s:.1f}s; faults {dict(r.by_fault)}", flush=True)
        for name, times in sorted(r.converge_s.items()):
            rounds = r.round_s[name]
            print(
                f"chaos:   {name}: converged in median {statistics.median(times):.2f}s, max {max(times):.2f}s over {len(times)}; "
                f"a round took {statistics.mean(rounds):.2f}s on average"
            )
        print(f"chaos: writes {dict(self.writer.counts)}")
        print(f"chaos: watcher counters {r.counters}")
