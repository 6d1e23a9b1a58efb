"""The servers the bench compares, each started as its own process on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.live_server import free_port
from tests.support.processes import interrupt, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (granian runs workers in children)."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pids.extend(int(c) for c in children)
        except FileNotFoundError:
            continue
    return total / 1024


def uvicorn(app: str, port: int) -> list[str]:
    return [PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
            "--ws-per-message-deflate", "false", "--ws-ping-interval", "0", "--lifespan", "auto"]  # fmt: skip


def granian(app: str, port: int) -> list[str]:
    return [PY, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--ws", app]  # fmt: skip


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen | None = None
    start_timeout: float = 20.0  # seconds until it listens (tracing allocations from the start takes longer)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for_port(self.port, proc=self.proc, timeout=self.start_timeout)
        time.sleep(0.3)  # let workers finish starting before measuring memory
        return self

    def rss(self) -> float:
        return rss_mb(self.proc.pid) if self.proc else 0.0

    def stop(self) -> None:
        interrupt(self.proc)


def make(name: str, *, django_env: dict[str, str], redis_url: str) -> Server:
    port = free_port()
    django_app = "archon_site.asgi:application"
    servers = {
        "django-uvicorn": lambda: Server(name, uvicorn(django_app, port), django_env),
        "django-granian": lambda: Server(name, granian(django_app, port), django_env),
        "bare-uvicorn": lambda: Server(name, uvicorn("bench.bare_sio:app", port)),
        "bare-uvicorn-stock": lambda: Server(name, uvicorn("bench.bare_sio:app", port), {"BENCH_MANAGER": "stock"}),
        "bare-granian": lambda: Server(name, granian("bench.bare_sio:app", port)),
        "node": lambda: Server(name, ["node", "bench/node_server.mjs", str(port)]),
        "channels": lambda: Server(name, uvicorn("bench.channels_ref.asgi:application", port), {"BENCH_REDIS_URL": redis_url}),
    }
    server = servers[name]()
    server.port = port
    return server


# --- several workers (issue 14): a process tree's CPU and each worker's connections, read from /proc -------------


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (uvicorn --workers: the supervisor and its workers; postgres: its backends)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process tree so far, including children already gone (cutime/cstime):
    PostgreSQL's backends end with their connections, and their time is then in the postmaster's cutime."""
    ticks = 0
    for current in descendants(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def established(port: int) -> dict[int, int]:
    """Socket inode -> 1 for every established TCP connection whose local port is `port` (the server's side)."""
    inodes: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes[int(cols[9])] = 1
    return inodes


def connections_per_process(pid: int, port: int) -> dict[int, int]:
    """How the server's established connections on `port` are spread over the processes of its tree."""
    mine = established(port)
    spread: dict[int, int] = {}
    for current in descendants(pid):
        count = 0
        try:
            for fd in Path(f"/proc/{current}/fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:[") and int(target[8:-1]) in mine:
                    count += 1
        except (FileNotFoundError, PermissionError):
            continue
        if count:
            spread[current] = count
    return spread


def uvicorn_workers(app: str, port: int, workers: int) -> list[str]:
    """uvicorn with `workers` processes sharing one listening socket (the kernel hands each accept to one of them)."""
    return [*uvicorn(app, port), "--workers", str(workers)]
