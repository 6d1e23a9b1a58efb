"""``make bench``: this project beside the reference servers, driven by one lean load generator.

Prints one table (each figure with its ratio to the reference measured in the same run) and
writes the results, with the machine and date, to ``bench/results/``. ``--quick`` runs small sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import httpx

from bench.servers import PY, ROOT, Server, cpu_seconds, make
from tests.support.processes import RedisServer

RESULTS = ROOT / "bench" / "results"
# "fanout1000" is the repeated 1,000-client fan-out of django-uvicorn and the reference alone ("fanout" includes it).
SECTIONS = frozenset({"fanout", "fanout1000", "save", "screen", "rooms", "idle", "cross", "workers", "storm"})
REPEATED_FANOUT = 1000  # the fan-out size run several times (issue 14's target: ≥ 0.6× the reference there)
# Each fan-out run's CPU time (user + system) in ms per 1,000 deliveries (= µs per delivery), per process: the server's
# whole process tree (/proc, in 10 ms ticks: ±0.4 ms at 50,000 deliveries), the load generator (process.cpuUsage), and
# this process, which sends the requests (time.process_time). A cost per delivery, however the 2 cores were shared.
CPU_PER_1K = ("server_cpu_ms_per_1k", "loadgen_cpu_ms_per_1k", "driver_cpu_ms_per_1k")
# Save-to-screen, both harnesses: p50 / p99 / max count every save, as the target does; `steady_*` the same figures
# without the first WARMUP_SECONDS of saves, in which both sides warm up (V8 compiling the load generator's code,
# first uses in the server): a tail made only there shows as a gap between the two.
WARMUP_SECONDS = 1.0


class LoadGen:
    """bench/loadgen.mjs: N raw Socket.IO (or plain websocket) clients in one Node process."""

    def __init__(self, url: str, *, clients: int, rooms: list[str], kind: str = "socketio", auth: dict | None = None,
                 event: str = "task_updated", id_key: str = "seq", join: bool = True) -> None:  # fmt: skip
        self.config = {"url": url, "kind": kind, "clients": clients, "rooms": rooms, "auth": auth, "event": event, "idKey": id_key,
                       "join": {"event": "join_project", "key": "project_id"} if join and kind == "socketio" else None,
                       "connectConcurrency": 100}  # fmt: skip

    async def __aenter__(self) -> LoadGen:
        self.proc = await asyncio.create_subprocess_exec("node", str(ROOT / "bench" / "loadgen.mjs"), json.dumps(self.config), cwd=ROOT,
                                                         stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 26)  # fmt: skip
        self.ready = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 600))
        if self.ready["failed"]:
            raise RuntimeError(f"{self.ready['failed']} of {self.config['clients']} clients failed to connect or join")
        return self

    async def command(self, op: str) -> dict:
        self.proc.stdin.write((json.dumps({"op": op}) + "\n").encode())
        await self.proc.stdin.drain()
        return json.loads(await self.proc.stdout.readline())

    async def wait_for(self, total: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            result = await self.command("collect")
            if result["received"] >= total or time.monotonic() > deadline:
                return result
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        self.proc.stdin.write(b'{"op":"exit"}\n')
        await self.proc.stdin.drain()
        await self.proc.wait()


class Django:
    """A bench database with a user, a token and projects with one task each."""

    def __init__(self, redis_url: str, database_url: str | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="archon-bench-")
        # SQLite in a temporary folder unless given a server's URL (PostgreSQL): `migrate` and the seed go there too.
        self.env = {"DATABASE_URL": database_url or f"sqlite:///{self.dir}/bench.sqlite3", "DEBUG": "false", "SECRET_KEY": "bench-secret",
                    "ALLOWED_HOSTS": "127.0.0.1,localhost", "REALTIME_LOG_LEVEL": "WARNING", "REDIS_URL": "",
                    # Every load-generator client is the one bench user on one address: the per-user and per-address caps are lifted.
                    "REALTIME_MAX_CONNECTIONS_PER_USER": "100000", "REALTIME_MAX_PENDING_PER_ADDRESS": "100000"}  # fmt: skip
        self.redis_url = redis_url

    def manage(self, *args: str, **env: str) -> str:
        return subprocess.run([PY, "manage.py", *args], cwd=ROOT, env={**os.environ, **self.env, **env}, check=True,
                              capture_output=True, text=True).stdout  # fmt: skip

    def seed(self, projects: int, batch_tasks: int = 0) -> None:
        """`projects` projects of one task each; and one more project of `batch_tasks` tasks (``batch_project``)."""
        self.manage("migrate", "--noinput", "-v", "0")
        code = (
            "import json; from django.contrib.auth import get_user_model; from projects.models import Project, Task; "
            "from realtime.models import ApiToken; "
            "u = get_user_model().objects.create_user('bench', is_staff=True); "
            f"ps = [Project.objects.create(owner=u, title=f'p{{i}}') for i in range({projects})]; "
            "ts = [Task.objects.create(project=p, title='t') for p in ps]; "
            "b = Project.objects.create(owner=u, title='batch'); "
            f"bs = [Task.objects.create(project=b, title=f'b{{i}}', task_order=i) for i in range({batch_tasks})]; "
            "print(json.dumps({'token': ApiToken.issue(user=u)[1], 'projects': [str(p.pk) for p in ps], 'tasks': [str(t.pk) for t in ts], "
            "'batch_project': str(b.pk), 'batch_tasks': [str(t.pk) for t in bs]}))"
        )
        data = json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1])
        self.token, self.projects, self.tasks = data["token"], data["projects"], data["tasks"]
        self.batch_project, self.batch_tasks = data["batch_project"], data["batch_tasks"]

    def batch_order(self) -> list[str]:
        """The batch project's tasks in the order opposite to the last one given: a reorder to it moves every task."""
        self.batch_tasks = self.batch_tasks[::-1]
        return self.batch_tasks


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def spread(values: list[float]) -> dict[str, float]:
    """min / median / max of repeated runs (the median of an even count is the upper middle one)."""
    ordered = sorted(values)
    return {"min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]} if ordered else {}


def repeated(runs: list[dict], *figures: str) -> dict:
    """Several runs of one scenario: each run kept, and min / median / max of each figure (a run without it is left out)."""
    return {"runs": runs, **{f: spread([r[f] for r in runs if r.get(f) is not None]) for f in figures}}


async def screen(server: Server, django: Django | None, *, mode: str, clients: int, tag: str, rate: float = 20, seconds: float = 0,
                 broadcasts: int = 0, shape: str = "per-request") -> dict:  # fmt: skip
    """bench/screen.mjs, the second harness: official socket.io-client watchers and, in the same process, the saves.

    `shape` (fan-out): "one-request" (the Django side reorders the batch project's tasks) or "per-request".
    """
    batch = django is not None and mode == "fanout" and shape == "one-request"
    room = (django.batch_project if batch else django.projects[0]) if django else "room-0"
    config = {"url": server.url, "token": django.token if django else None, "room": room, "shape": shape,
              "order": django.batch_order() if batch else None, "task": django.tasks[0] if django else None, "clients": clients, "mode": mode, "rate": rate, "seconds": seconds, "warmup": WARMUP_SECONDS,
              "broadcasts": broadcasts, "reference": django is None, "tag": tag, "connectConcurrency": 100}  # fmt: skip
    proc = await asyncio.create_subprocess_exec("node", str(ROOT / "bench" / "screen.mjs"), json.dumps(config), cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE, limit=1 << 20)  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 600)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    result = json.loads(out.decode().strip().splitlines()[-1])
    if result["type"] != "result":
        raise RuntimeError(result.get("message", result))
    return result


async def fanout(server: Server, django: Django | None, clients: int, broadcasts: int, per_request: bool = False,
                 batch: bool = False, writers: int = 1, task_payload: bool = False) -> dict:  # fmt: skip
    """N clients in one room, K broadcasts: deliveries per second, and the CPU per 1,000 deliveries (``CPU_PER_1K``).

    The Django path makes one save after another (each awaited), or with `batch` one REST reorder of the batch
    project's K tasks (K saves in one request and one transaction: K ``task_updated``); a reference server gets one
    request for all K broadcasts, or with `per_request` one request per broadcast, each awaited. With `writers` > 1,
    that many writers each make awaited requests one after another at the same time, until K are made between
    them: on the Django path each writer saves its own task of the batch project (in the room), as several users do.
    With `task_payload` the reference sends what the Django path sends (a stamped task) instead of a small counter.
    """
    payload = {"payload": "task"} if task_payload else {}
    room = (django.batch_project if batch or writers > 1 else django.projects[0]) if django else "room-0"
    auth = {"token": django.token} if django else None
    kind = "ws" if server.name == "channels" else "socketio"
    made = 0

    async def writer(http: httpx.AsyncClient, task: str | None) -> None:
        nonlocal made
        while made < broadcasts:
            made += 1
            if task:  # the full Django path
                r = await http.patch(f"{server.url}/api/tasks/{task}/", json={"title": f"b{made}"},
                                     headers={"Authorization": f"Bearer {django.token}"})  # type: ignore[union-attr]  # fmt: skip
            else:
                r = await http.post(f"{server.url}/emit", params={"room": room, "n": 1, **payload})
            r.raise_for_status()

    async with LoadGen(server.url, clients=clients, rooms=[room], kind=kind, auth=auth, id_key="version" if django else "seq") as gen:
        limits = httpx.Limits(max_connections=writers, max_keepalive_connections=writers)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            # CPU from here: the server's and the load generator's until wait_for has seen every delivery (it asks every
            # 50 ms), this process's until the last response.
            loadgen_before = (await gen.command("collect"))["cpuMs"]
            server_before, driver_before = cpu_seconds(server.proc.pid), time.process_time()  # type: ignore[union-attr]
            start = time.time() * 1000
            if django and batch:
                assert len(django.batch_tasks) == broadcasts, "seed(batch_tasks=) the number of broadcasts"
                r = await http.post(f"{server.url}/api/projects/{room}/tasks/reorder/", json={"task_ids": django.batch_order()},
                                    headers={"Authorization": f"Bearer {django.token}"})  # fmt: skip
                r.raise_for_status()
            elif django:
                tasks = django.batch_tasks[:writers] if writers > 1 else django.tasks[:1]
                await asyncio.gather(*(writer(http, task) for task in tasks))
            elif per_request or writers > 1:
                await asyncio.gather(*(writer(http, None) for _ in range(writers)))
            else:
                (await http.post(f"{server.url}/emit", params={"room": room, "n": broadcasts, **payload})).raise_for_status()
            driver_cpu = time.process_time() - driver_before  # sending the requests (waiting for deliveries is not its work)
            result = await gen.wait_for(clients * broadcasts, timeout=120)
            server_cpu = cpu_seconds(server.proc.pid) - server_before  # type: ignore[union-attr]
    last = max(v[2] for v in result["perId"].values())
    ms_per_1k_per_cpu_s = 1e6 / max(result["received"], 1)  # seconds of CPU -> ms per 1,000 deliveries
    return {"clients": clients, "broadcasts": broadcasts, "writers": writers, "received": result["received"], "expected": clients * broadcasts,
            "seconds": (last - start) / 1000, "deliveries_per_s": result["received"] / max((last - start) / 1000, 1e-9),
            "loadgen_cpu_s": result["cpuMs"] / 1000,  # since the load generator started: connecting the clients too
            "server_cpu_ms_per_1k": server_cpu * ms_per_1k_per_cpu_s, "driver_cpu_ms_per_1k": driver_cpu * ms_per_1k_per_cpu_s,
            "loadgen_cpu_ms_per_1k": (result["cpuMs"] - loadgen_before) / 1000 * ms_per_1k_per_cpu_s}  # fmt: skip


async def save_to_screen(server: Server, django: Django, clients: int, rate: float, seconds: float) -> dict:
    """N watchers while saves go through REST at `rate`/s: from request sent to the last client receiving it."""
    headers = {"Authorization": f"Bearer {django.token}"}
    async with LoadGen(server.url, clients=clients, rooms=[django.projects[0]], auth={"token": django.token}, id_key="title") as gen:
        async with httpx.AsyncClient(timeout=30, headers=headers) as http:
            for _ in range(3):  # the client's own first requests (its connection), before the clock: a read
                (await http.get(f"{server.url}/api/tasks/{django.tasks[0]}/")).raise_for_status()
            return await to_screen(gen, clients, rate, seconds, lambda title: http.patch(f"{server.url}/api/tasks/{django.tasks[0]}/",
                                                                                         json={"title": title}))  # fmt: skip


async def emit_to_screen(server: Server, clients: int, rate: float, seconds: float) -> dict:
    """The reference's counterpart of save-to-screen: a POST /emit (carrying the title) instead of each save."""
    async with LoadGen(server.url, clients=clients, rooms=["room-0"], id_key="title") as gen:
        async with httpx.AsyncClient(timeout=30) as http:
            for _ in range(3):  # as save_to_screen: the client's connection opened before the clock (a 404 here)
                await http.get(f"{server.url}/")
            return await to_screen(gen, clients, rate, seconds,
                                   lambda title: http.post(f"{server.url}/emit", params={"room": "room-0", "n": 1, "title": title}))  # fmt: skip


async def to_screen(gen: LoadGen, clients: int, rate: float, seconds: float, request) -> dict:  # type: ignore[no-untyped-def]
    """`request(title)` at `rate`/s for `seconds`, each not awaiting the last: latency from just before it is sent to
    the moment the last of `clients` has the broadcast carrying its title."""
    sent: dict[str, float] = {}

    async def one(i: int) -> None:
        title = f"s{i}"
        sent[title] = time.time() * 1000
        (await request(title)).raise_for_status()

    tasks, begin, began_at = [], time.monotonic(), time.time()
    for i in range(int(rate * seconds)):
        await asyncio.sleep(max(0.0, begin + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    result = await gen.wait_for(clients * len(sent), timeout=60)
    ordered = [result["perId"][t][2] - sent[t] if t in result["perId"] else None for t in sent]  # in the order sent
    complete = sum(1 for t in sent if result["perId"].get(t, [0])[0] == clients)
    return {"clients": clients, "saves": len(sent), "complete": complete, "began_at": began_at, "loadgen_cpu_s": result["cpuMs"] / 1000,
            **latency_figures(ordered, int(rate * WARMUP_SECONDS))}  # fmt: skip


def latency_figures(ordered: list[float | None], warmup_saves: int) -> dict:
    """p50 / p99 / max of every delivered save, and ``steady_*`` of those after the first `warmup_saves` (see WARMUP_SECONDS).

    `ordered`: each save's latency in the order sent, None for one never delivered (``complete`` counts those that were).
    """
    everything = [x for x in ordered if x is not None]
    steady = [x for x in ordered[warmup_saves:] if x is not None]
    return {"p50_ms": percentile(everything, 50), "p99_ms": percentile(everything, 99), "max_ms": max(everything, default=None),
            "warmup_saves": warmup_saves, "steady_p50_ms": percentile(steady, 50), "steady_p99_ms": percentile(steady, 99),
            "steady_max_ms": max(steady, default=None)}  # fmt: skip


async def many_rooms(server: Server, django: Django | None, clients: int, rooms: int, updates: int) -> dict:
    names = django.projects[:rooms] if django else [f"room-{i}" for i in range(rooms)]
    auth = {"token": django.token} if django else None
    async with LoadGen(server.url, clients=clients, rooms=names, auth=auth, id_key="version" if django else "seq") as gen:
        async with httpx.AsyncClient(timeout=60) as http:
            start = time.time() * 1000
            for i in range(updates):
                if django:
                    r = await http.patch(f"{server.url}/api/tasks/{django.tasks[i % rooms]}/", json={"title": f"u{i}"},
                                         headers={"Authorization": f"Bearer {django.token}"})  # fmt: skip
                else:
                    r = await http.post(f"{server.url}/emit", params={"room": names[i % rooms], "n": 1})
                r.raise_for_status()
            expected = updates * (clients // rooms)
            result = await gen.wait_for(expected, timeout=120)
    last = max(v[2] for v in result["perId"].values())
    return {"clients": clients, "rooms": rooms, "updates": updates, "received": result["received"], "expected": expected,
            "deliveries_per_s": result["received"] / max((last - start) / 1000, 1e-9)}  # fmt: skip


async def connections(server: Server, django: Django | None, clients: int) -> dict:
    """Memory per idle connection (server RSS delta / connections) and connections per second."""
    before = server.rss()
    auth = {"token": django.token} if django else None
    async with LoadGen(server.url, clients=clients, rooms=[], auth=auth, join=False) as gen:
        await asyncio.sleep(1.0)
        after = server.rss()
        alive = server.proc.poll() is None
        seconds = gen.ready["connectSeconds"]
    return {"clients": clients, "rss_before_mb": before, "rss_after_mb": after, "kb_per_connection": (after - before) * 1024 / clients,
            "connections_per_s": clients / seconds, "errors": 0 if alive else 1}  # fmt: skip


async def cross_process(server: Server, django: Django, path: str, messages: int) -> dict:
    """A separate process's emit reaching a client: embedded (signed HTTP) or Redis."""
    async with LoadGen(
        server.url, clients=1, rooms=[django.projects[0]], auth={"token": django.token}, event="bench_ping", id_key="seq"
    ) as gen:
        code = (
            "import json, time, realtime; sent = {}\n"
            f"for i in range({messages}):\n"
            "    sent[i] = time.time() * 1000\n"
            f"    realtime.emit_now_ignoring_transaction('bench_ping', {{'seq': i}}, room='{django.projects[0]}')\n"
            "    time.sleep(0.01)\n"
            "realtime.flush(10); print(json.dumps(sent))"
        )
        env = {"REDIS_URL": django.redis_url} if path == "redis" else {"REALTIME_SERVER_URL": server.url}
        sent = json.loads(await asyncio.to_thread(lambda: django.manage("shell", "-c", code, **env).strip().splitlines()[-1]))
        result = await gen.wait_for(messages, timeout=30)
    latencies = [result["perId"][str(i)][2] - t for i, t in ((int(k), v) for k, v in sent.items()) if str(i) in result["perId"]]
    return {
        "path": path,
        "messages": messages,
        "received": result["received"],
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


async def main(quick: bool, only: frozenset[str] = SECTIONS) -> dict:
    # `runs`: the save-to-screen and 1,000-client fan-out of django-uvicorn and the reference, and the second harness,
    # run that many times in a row (issue 14: min / median / max, not one lucky or unlucky run).
    sizes = {"fanout": [100, 1000] if quick else [100, 1000, 5000], "broadcasts": 20 if quick else 50, "save_seconds": 5 if quick else 30,
             "runs": 2 if quick else 3, "screen_seconds": 5 if quick else 30,
             "rooms_clients": 400 if quick else 2000, "rooms": 40 if quick else 200, "idle": 1000 if quick else 10000, "cross": 100 if quick else 500, "storm": 500 if quick else 5000}  # fmt: skip
    redis = RedisServer().start()
    redis_url = redis.url
    django = Django(redis_url)
    django.seed(projects=sizes["rooms"], batch_tasks=sizes["broadcasts"])
    results: dict = {"sizes": sizes}

    async def with_server(name: str, work, **extra_env: str):  # type: ignore[no-untyped-def]
        server = make(name, django_env={**django.env, **extra_env}, redis_url=redis_url).start()
        try:
            return await work(server)
        finally:
            server.stop()

    if "fanout" in only:
        print("fan-out…", flush=True)
        for name in ("node", "django-uvicorn", "django-granian", "bare-uvicorn", "bare-uvicorn-stock", "bare-granian", "channels"):
            for clients in sizes["fanout"]:
                if clients == REPEATED_FANOUT and name in ("node", "django-uvicorn"):
                    continue  # below, several runs in a row
                broadcasts = sizes["broadcasts"] if clients <= 1000 else max(10, sizes["broadcasts"] // 5)
                dj = django if name.startswith("django") else None
                key = f"fanout/{clients}/{name}"
                try:
                    results[key] = await with_server(name, lambda s, c=clients, b=broadcasts, d=dj: fanout(s, d, c, b))
                except Exception as error:  # a server that cannot take the load is a result too
                    results[key] = {"error": f"{type(error).__name__}: {error}"}
                print(f"  {key}: {results[key]}", flush=True)

    if "fanout" in only or "fanout1000" in only:
        print(f"fan-out, {REPEATED_FANOUT} clients, {sizes['runs']} runs of the reference and django-uvicorn back to back…", flush=True)
        # Two shapes, each on both sides: every broadcast from one request ("node"; "django-uvicorn-batch", a REST
        # reorder of `broadcasts` tasks), and one awaited request per broadcast ("node-per-request"; "django-uvicorn",
        # one REST save after another). Each ratio is to "node", and for the per-request shape also to its like.
        # "node-task" is node's first shape sending what the Django path sends (a stamped task), to measure what the
        # payload adds. The order of the shapes turns by one each run: none is always first on a fresh machine.
        shapes = (("node", "node", None), ("node-task", "node", None), ("node-per-request", "node", None),
                  ("django-uvicorn", "django-uvicorn", django), ("django-uvicorn-batch", "django-uvicorn", django))  # fmt: skip
        runs: dict[str, list[dict]] = {key: [] for key, _, _ in shapes}
        for run in range(sizes["runs"]):
            for key, name, dj in shapes[run % len(shapes) :] + shapes[: run % len(shapes)]:
                runs[key].append(
                    await with_server(
                        name,
                        lambda s, d=dj, k=key: fanout(
                            s,
                            d,
                            REPEATED_FANOUT,
                            sizes["broadcasts"],
                            per_request=k == "node-per-request",
                            batch=k == "django-uvicorn-batch",
                            task_payload=k == "node-task",
                        ),
                    )
                )
            runs["django-uvicorn-batch"][-1]["ratio"] = (
                runs["django-uvicorn-batch"][-1]["deliveries_per_s"] / runs["node"][-1]["deliveries_per_s"]
            )
            django_run = runs["django-uvicorn"][-1]
            django_run["ratio"] = django_run["deliveries_per_s"] / runs["node"][-1]["deliveries_per_s"]
            django_run["ratio_per_request"] = django_run["deliveries_per_s"] / runs["node-per-request"][-1]["deliveries_per_s"]
            for key in ("node-per-request", "node-task"):
                runs[key][-1]["ratio"] = runs[key][-1]["deliveries_per_s"] / runs["node"][-1]["deliveries_per_s"]
            print(f"  run {run + 1}: node {runs['node'][-1]['deliveries_per_s']:,.0f} (stamped tasks {runs['node-task'][-1]['deliveries_per_s']:,.0f}; one request per broadcast "
                  f"{runs['node-per-request'][-1]['deliveries_per_s']:,.0f}), django-uvicorn {django_run['deliveries_per_s']:,.0f} "
                  f"deliveries/s ({django_run['ratio']:.2f}×, {django_run['ratio_per_request']:.2f}×), in one request "
                  f"{runs['django-uvicorn-batch'][-1]['deliveries_per_s']:,.0f} ({runs['django-uvicorn-batch'][-1]['ratio']:.2f}×)", flush=True)  # fmt: skip
        for name in runs:
            results[f"fanout/{REPEATED_FANOUT}/{name}"] = repeated(
                runs[name], "deliveries_per_s", "ratio", "ratio_per_request", "loadgen_cpu_s", *CPU_PER_1K
            )

    if "save" in only:
        print(f"save-to-screen ({sizes['runs']} runs of django-uvicorn and the reference)…", flush=True)
        runs = {"django-uvicorn": [], "node": []}
        for run in range(sizes["runs"]):
            runs["django-uvicorn"].append(
                await with_server("django-uvicorn", lambda s: save_to_screen(s, django, 1000, 20, sizes["save_seconds"]))
            )
            runs["node"].append(await with_server("node", lambda s: emit_to_screen(s, 1000, 20, sizes["save_seconds"])))
            print(f"  run {run + 1}: " + ", ".join(f"{n} p99 {r[-1]['p99_ms']:.1f} ms (steady {r[-1]['steady_p99_ms']:.1f})" for n, r in runs.items()),
                  flush=True)  # fmt: skip
        for name in runs:
            results[f"save/{name}"] = repeated(runs[name], "p50_ms", "p99_ms", "max_ms", "steady_p50_ms", "steady_p99_ms", "steady_max_ms")
        results["save/django-granian"] = await with_server(
            "django-granian", lambda s: save_to_screen(s, django, 1000, 20, sizes["save_seconds"])
        )
        print(f"  save/django-granian: {results['save/django-granian']}", flush=True)

    if "screen" in only:
        print(f"second harness, official socket.io-client ({sizes['runs']} runs)…", flush=True)
        # "save-node": the same harness against the reference (a POST /emit per save): the floor this harness measures.
        # Fan-out in both shapes on both sides, as in make bench: "fanout" (one REST save per request) against
        # "fanout-node" (every broadcast from one request) and "fanout-node-per-request"; "fanout-batch" (a reorder).
        runs = {"save": [], "save-node": [], "fanout": [], "fanout-batch": [], "fanout-node": [], "fanout-node-per-request": []}
        b = sizes["broadcasts"]
        for run in range(sizes["runs"]):

            async def django_side(s: Server, run: int = run) -> None:
                runs["save"].append(await screen(s, django, mode="save", clients=1000, seconds=sizes["screen_seconds"], tag=f"r{run}"))
                runs["fanout"].append(await screen(s, django, mode="fanout", clients=1000, broadcasts=b, tag=f"r{run}"))
                runs["fanout-batch"].append(
                    await screen(s, django, mode="fanout", clients=1000, broadcasts=b, shape="one-request", tag=f"r{run}")
                )

            async def node_side(s: Server, run: int = run) -> None:
                runs["save-node"].append(await screen(s, None, mode="save", clients=1000, seconds=sizes["screen_seconds"], tag=f"n{run}"))
                runs["fanout-node"].append(
                    await screen(s, None, mode="fanout", clients=1000, broadcasts=b, shape="one-request", tag=f"n{run}")
                )
                runs["fanout-node-per-request"].append(await screen(s, None, mode="fanout", clients=1000, broadcasts=b, tag=f"n{run}"))

            await with_server("django-uvicorn", django_side)
            await with_server("node", node_side)
            node, node_per_request = runs["fanout-node"][-1]["deliveries_per_s"], runs["fanout-node-per-request"][-1]["deliveries_per_s"]
            runs["fanout"][-1].update(
                ratio=runs["fanout"][-1]["deliveries_per_s"] / node,
                ratio_per_request=runs["fanout"][-1]["deliveries_per_s"] / node_per_request,
            )
            runs["fanout-batch"][-1]["ratio"] = runs["fanout-batch"][-1]["deliveries_per_s"] / node
            runs["fanout-node-per-request"][-1]["ratio"] = node_per_request / node
            save, save_node = runs["save"][-1], runs["save-node"][-1]
            print(f"  run {run + 1}: save p50 {save['p50_ms']:.1f} / p99 {save['p99_ms']:.1f} / max {save['max_ms']:.1f} ms "
                  f"(steady p99 {save['steady_p99_ms']:.1f}; reference p99 {save_node['p99_ms']:.1f}, steady {save_node['steady_p99_ms']:.1f} ms); "
                  f"fan-out {runs['fanout'][-1]['deliveries_per_s']:,.0f} against {node:,.0f} deliveries/s ({runs['fanout'][-1]['ratio']:.2f}×; "
                  f"one request per broadcast {node_per_request:,.0f}, {runs['fanout'][-1]['ratio_per_request']:.2f}×), in one request "
                  f"{runs['fanout-batch'][-1]['deliveries_per_s']:,.0f} ({runs['fanout-batch'][-1]['ratio']:.2f}×)", flush=True)  # fmt: skip
        for key in ("save", "save-node"):
            results[f"screen/{key}"] = repeated(
                runs[key], "p50_ms", "p99_ms", "max_ms", "steady_p50_ms", "steady_p99_ms", "steady_max_ms", "loadgen_cpu_s"
            )
        for key in ("fanout", "fanout-batch", "fanout-node", "fanout-node-per-request"):
            results[f"screen/{key}"] = repeated(runs[key], "deliveries_per_s", "ratio", "ratio_per_request", "loadgen_cpu_s")

    if "rooms" in only:
        print("many rooms…", flush=True)
        for name in ("node", "django-uvicorn", "django-granian", "bare-uvicorn"):
            dj = django if name.startswith("django") else None
            results[f"rooms/{name}"] = await with_server(
                name, lambda s, d=dj: many_rooms(s, d, sizes["rooms_clients"], sizes["rooms"], sizes["rooms"] * 5)
            )
            print(f"  rooms/{name}: {results[f'rooms/{name}']}", flush=True)

    if "idle" in only:
        print("connections…", flush=True)
        for name in ("node", "django-uvicorn", "django-granian"):
            dj = django if name.startswith("django") else None
            try:
                results[f"idle/{name}"] = await with_server(name, lambda s, d=dj: connections(s, d, sizes["idle"]))
            except Exception as error:
                results[f"idle/{name}"] = {"error": f"{type(error).__name__}: {error}"}
            print(f"  idle/{name}: {results[f'idle/{name}']}", flush=True)

    if "cross" in only:
        print("cross-process…", flush=True)
        results["cross/embedded"] = await with_server("django-uvicorn", lambda s: cross_process(s, django, "embedded", sizes["cross"]))
        results["cross/redis"] = await with_server(
            "django-uvicorn", lambda s: cross_process(s, django, "redis", sizes["cross"]), REDIS_URL=redis_url
        )
        print(f"  cross: {results['cross/embedded']} {results['cross/redis']}", flush=True)

    redis.stop()

    if "workers" in only:
        print("several workers over Redis and PostgreSQL…", flush=True)  # issue 14: bench/workers.py (its own Redis and PostgreSQL)
        from bench import workers  # noqa: PLC0415 — it imports this module

        results["workers"] = await workers.main(quick)

    if "storm" in only:
        print("reconnect storm…", flush=True)  # issue 13: bench/storm.py (its own Redis, two nodes and database)
        from bench import storm  # noqa: PLC0415 — it imports this module

        results["storm"] = await storm.main(storm.arguments(["--clients", str(sizes["storm"])]))

    return results


def mmm(figure: dict, fmt: str) -> str:
    """A repeated figure as "min / median / max"."""
    return " / ".join(format(figure[k], fmt) for k in ("min", "median", "max"))


def steady_note(r: dict) -> str:
    """A save-to-screen figure's ``steady_*`` (after WARMUP_SECONDS), for the table; "" for a result from before them."""
    if "steady_p99_ms" not in r:
        return ""
    if isinstance(r["steady_p99_ms"], dict):
        return (f"; after the first {WARMUP_SECONDS:g} s: p99 {mmm(r['steady_p99_ms'], '.1f')} ms, p50 {mmm(r['steady_p50_ms'], '.1f')} ms, "
                f"max {mmm(r['steady_max_ms'], '.1f')} ms")  # fmt: skip
    return f"; after the first {WARMUP_SECONDS:g} s: p50 {r['steady_p50_ms']:.1f} / p99 {r['steady_p99_ms']:.1f} / max {r['steady_max_ms']:.1f} ms"


def table(results: dict) -> str:
    def ratio(value: float, reference: float, higher_is_better: bool = True) -> str:
        if not reference or value != value:
            return "—"
        return f"{(value / reference if higher_is_better else reference / value):.2f}×"

    def median(value: float | dict) -> float:
        return value["median"] if isinstance(value, dict) else value

    rows = ["| scenario | server | figure | ratio to reference |", "|---|---|---|---|"]
    fanout_sizes = (
        results["sizes"]["fanout"]
        if "fanout/100/node" in results
        else [REPEATED_FANOUT]
        if f"fanout/{REPEATED_FANOUT}/node" in results
        else []
    )
    for clients in fanout_sizes:
        ref = median(results.get(f"fanout/{clients}/node", {}).get("deliveries_per_s", 0))
        for name in (
            "node",
            "node-task",
            "node-per-request",
            "django-uvicorn",
            "django-uvicorn-batch",
            "django-granian",
            "bare-uvicorn",
            "bare-uvicorn-stock",
            "bare-granian",
            "channels",
        ):
            r = results.get(f"fanout/{clients}/{name}", {})
            if not r and ("fanout/100/node" not in results or name in ("node-task", "node-per-request", "django-uvicorn-batch")):
                continue  # the repeated runs alone ("fanout1000"); the rows beside node's first run at 1,000 clients only
            if "runs" in r:  # run several times in a row, each django-uvicorn run against the references' runs just before it
                figure = f"{mmm(r['deliveries_per_s'], ',.0f')} deliveries/s (min / median / max, {len(r['runs'])} runs)"
                if r.get("server_cpu_ms_per_1k"):
                    figure += (f"; CPU time per 1,000 deliveries: server {mmm(r['server_cpu_ms_per_1k'], '.1f')} ms, load generator "
                               f"{mmm(r['loadgen_cpu_ms_per_1k'], '.1f')} ms, bench driver (sends the requests) "
                               f"{mmm(r['driver_cpu_ms_per_1k'], '.1f')} ms")  # fmt: skip
                against = f"{mmm(r['ratio'], '.2f')}× (per run: min / median / max)" if r.get("ratio") else "1.00×"
                if r.get("ratio_per_request"):  # context; the target is against "node" (every broadcast from one request)
                    against += f"; against node one request per broadcast {mmm(r['ratio_per_request'], '.2f')}×"
                server = {"node-task": "node, every broadcast from one request, each a stamped task (the Django path's payload)",
                          "node-per-request": "node, one awaited request per broadcast",
                          "django-uvicorn": "django-uvicorn, one REST save per request, each awaited" if "fanout/1000/node-per-request" in results else name,
                          "django-uvicorn-batch": f"django-uvicorn, every broadcast from one request (a REST reorder of {r['runs'][0]['broadcasts']} tasks)"}.get(name, name)  # fmt: skip
                rows.append(f"| fan-out, {clients} clients | {server} | {figure} | {against} |")
                continue
            figure = f"{r['deliveries_per_s']:,.0f} deliveries/s" if "deliveries_per_s" in r else r.get("error", "—")
            rows.append(f"| fan-out, {clients} clients | {name} | {figure} | {ratio(r.get('deliveries_per_s', float('nan')), ref)} |")
    for name in ("node", "django-uvicorn", "django-granian") if "save/node" in results else []:
        ref_p99 = median(results["save/node"]["p99_ms"])
        r = results[f"save/{name}"]
        if "runs" in r:
            figure = (f"p99 {mmm(r['p99_ms'], '.1f')} ms (min / median / max, {len(r['runs'])} runs); "
                      f"p50 {mmm(r['p50_ms'], '.1f')} ms; max {mmm(r['max_ms'], '.1f')} ms{steady_note(r)}")  # fmt: skip
        else:
            figure = f"p50 {r['p50_ms']:.1f} / p99 {r['p99_ms']:.1f} / max {r['max_ms']:.1f} ms{steady_note(r)}"
        rows.append(
            f"| save-to-screen, 1000 watchers, 20/s | {name} | {figure} | {ratio(median(r['p99_ms']), ref_p99, higher_is_better=False)} (median p99) |"
        )
    if "screen/save" in results:
        n = len(results["screen/save"]["runs"])
        for name, key in (("node (a POST /emit per save)", "screen/save-node"), ("django-uvicorn", "screen/save")):
            if key not in results:
                continue  # a run from before the reference's row
            r = results[key]
            against = (ratio(median(r["p99_ms"]), median(results["screen/save-node"]["p99_ms"]), higher_is_better=False) + " (median p99)"
                       if "screen/save-node" in results else "—")  # fmt: skip
            rows.append(f"| save-to-screen, second harness (official socket.io-client; the requests sent from the same Node process), 1000 watchers, 20/s "
                        f"| {name} | p99 {mmm(r['p99_ms'], '.1f')} ms (min / median / max, {n} runs); p50 {mmm(r['p50_ms'], '.1f')} ms; "
                        f"max {mmm(r['max_ms'], '.1f')} ms{steady_note(r)}; harness CPU {mmm(r['loadgen_cpu_s'], '.1f')} s | {against} |")  # fmt: skip
        shapes = (("node", "screen/fanout-node"), ("node, one awaited request per broadcast", "screen/fanout-node-per-request"),
                  ("django-uvicorn, one REST save per request, each awaited", "screen/fanout"),
                  ("django-uvicorn, every broadcast from one request (a REST reorder)", "screen/fanout-batch"))  # fmt: skip
        for name, key in shapes:
            if key not in results:
                continue  # a run from before the two shapes
            r = results[key]
            against = f"{mmm(r['ratio'], '.2f')}× (per run: min / median / max)" if r.get("ratio") else "1.00×"
            if r.get("ratio_per_request"):  # context; the target is against "node" (every broadcast from one request)
                against += f"; against node one request per broadcast {mmm(r['ratio_per_request'], '.2f')}×"
            rows.append(f"| fan-out, second harness, 1000 clients | {name} | {mmm(r['deliveries_per_s'], ',.0f')} deliveries/s "
                        f"(min / median / max, {n} runs); harness CPU {mmm(r['loadgen_cpu_s'], '.1f')} s | {against} |")  # fmt: skip
    for name in ("node", "django-uvicorn", "django-granian", "bare-uvicorn") if "rooms/node" in results else []:
        ref = results["rooms/node"]["deliveries_per_s"]
        r = results[f"rooms/{name}"]
        rows.append(
            f"| many rooms ({r['clients']} clients, {r['rooms']} rooms) | {name} | {r['deliveries_per_s']:,.0f} deliveries/s | {ratio(r['deliveries_per_s'], ref)} |"
        )
    ref_idle = results.get("idle/node", {})
    for name in ("node", "django-uvicorn", "django-granian") if "idle/node" in results else []:
        r = results.get(f"idle/{name}", {})
        if "kb_per_connection" in r:
            rows.append(f"| idle connections ({r['clients']}) | {name} | {r['kb_per_connection']:.1f} KB each, {r['connections_per_s']:,.0f} conn/s | "
                        f"{ratio(r['kb_per_connection'], ref_idle.get('kb_per_connection', 0), higher_is_better=False)} (memory) |")  # fmt: skip
        else:
            rows.append(f"| idle connections | {name} | {r.get('error', '—')} | — |")
    for path in ("embedded", "redis") if "cross/redis" in results else []:
        r = results[f"cross/{path}"]
        rows.append(f"| cross-process emit ({path}) | django-uvicorn | p50 {r['p50_ms']:.2f} / p99 {r['p99_ms']:.2f} ms | — |")
    if "workers" in results:
        from bench import workers  # noqa: PLC0415 — it imports this module

        rows.extend(workers.rows(results["workers"]))
    if "storm" in results:
        r = results["storm"]
        seconds = {m: results["storm"].get(m, {}).get("all_current_s") for m in ("recovery", "snapshot")}
        figure = " / ".join(f"{m} {'—' if v is None else f'{v:.2f} s'}" for m, v in seconds.items())
        rows.append(f"| reconnect storm ({r['clients']} clients, node restart): every client current | django-uvicorn ×2 + Redis | {figure} | "
                    f"{r['ratio']:.2f}× (snapshots / recovery) |")  # fmt: skip
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", default=",".join(sorted(SECTIONS)), help=f"comma-separated sections, of: {', '.join(sorted(SECTIONS))}")
    args = parser.parse_args()
    only = frozenset(args.only.split(","))
    if only - SECTIONS:
        parser.error(f"unknown sections: {', '.join(sorted(only - SECTIONS))}")
    results = asyncio.run(main(args.quick, only))
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
               "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
               "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A quick or partial run never replaces the full run's files.
    suffix = ("-quick" if args.quick else "") + ("" if only == SECTIONS else "-only-" + "-".join(sorted(only)))
    out = RESULTS / f"{time.strftime('%Y-%m-%d')}{suffix}.json"
    out.write_text(
        json.dumps({"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine, "results": results}, indent=2)
    )
    text = table(results)
    (RESULTS / f"latest{suffix}.md").write_text(text + "\n")
    print(text)
    print(f"\nwritten: {out}")
