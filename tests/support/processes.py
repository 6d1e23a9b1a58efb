"""Real processes for cross-process tests: redis-server, uvicorn servers, manage.py commands."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from .live_server import free_port

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-key-shared-by-every-process-of-one-run"


def wait_for_port(port: int, timeout: float = 20, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


def interrupt(proc: subprocess.Popen | None) -> None:
    """Stop a process as Ctrl-C would (a clean shutdown); kill it if it is not gone within 10 s."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def database_url_for(settings_dict: dict) -> str:
    """``DATABASE_URL`` for a database's Django settings (``connection.settings_dict``): SQLite's file or PostgreSQL's."""
    engine, name = settings_dict["ENGINE"], settings_dict["NAME"]
    if engine == "django.db.backends.sqlite3":
        return f"sqlite:///{name}"
    if engine == "django.db.backends.postgresql":
        user = quote(settings_dict.get("USER") or "", safe="")
        password = quote(settings_dict.get("PASSWORD") or "", safe="")
        login = f"{user}:{password}@" if password else f"{user}@" if user else ""
        host = settings_dict.get("HOST") or "127.0.0.1"
        host = f"[{host}]" if ":" in host else host  # an IPv6 address
        port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
        return f"postgres://{login}{host}{port}/{quote(name, safe='')}"
    raise ValueError(f"no DATABASE_URL spelling for {engine}")


def django_env(database_url: str, **extra: str | None) -> dict[str, str]:
    """The environment of a project process sharing this test run's database (``database_url``: the fixture's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "CHANNEL_LAYER", "REALTIME_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="archon_site.settings",
        DATABASE_URL=database_url,
        SECRET_KEY=SECRET,
        DEBUG="true",
        CRAWL_ALLOW_PRIVATE_NETWORKS="true",  # the test site is on 127.0.0.1
        PYTHONUNBUFFERED="1",
    )
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


class RedisServer:
    def __init__(self, *, replica_of: int | None = None) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.replica_of = replica_of  # the port of the master this one replicates (on 127.0.0.1), if any
        # A directory of its own: a replica's full sync writes dump.rdb (whatever --save says), and Redis loads a
        # dump.rdb it finds at start; left in the working directory, the next server would start with its keys.
        self.dir = tempfile.TemporaryDirectory(prefix="archon-redis-")
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        replica = ["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir.name, *replica],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class SentinelServer(RedisServer):
    """A Redis Sentinel (``redis-server --sentinel``) watching ``master`` as service ``service``; ``url`` is the
    ``REDIS_URL`` a server is given to find the master through it. Stopped as a ``RedisServer`` is."""

    def __init__(self, master: RedisServer, service: str = "archon") -> None:
        super().__init__()
        self.service = service
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/0/{service}"
        self.master = master

    def start(self) -> SentinelServer:
        config = Path(self.dir.name) / "sentinel.conf"  # a Sentinel rewrites its own configuration: a file of its own
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir.name}\nsentinel monitor {self.service} 127.0.0.1 {self.master.port} 1\n"
        )
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)
        return self


class ServerProcess:
    """``uvicorn archon_site.asgi:application`` in its own process."""

    def __init__(self, database_url: str, **env: str | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = django_env(database_url, REALTIME_SERVER_URL=self.url, **env)
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServerProcess:
        self.log_path = Path(tempfile.gettempdir()) / f"archon-test-server-{self.port}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "archon_site.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                # As served (README): engine.io pings (uvicorn's own ping costs memory), no compression. Not the
                # README's --ws-max-size: the tests send oversized frames to the project's own refusals.
                "--ws-ping-interval",
                "0",
                "--ws-per-message-deflate",
                "false",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, proc=self.proc)
        return self

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        interrupt(self.proc)
        self.log.close()
        self.log_path.unlink(missing_ok=True)


def manage(database_url: str, *args: str, timeout: float = 60, **env: str | None) -> subprocess.CompletedProcess:
    """Run ``manage.py`` with ``args`` to completion in its own process."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=django_env(database_url, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
