"""A throwaway PostgreSQL server for a test or bench run, started and removed like ``RedisServer``.

``initdb`` into a temporary folder, ``postgres`` on 127.0.0.1 and a free port with password
authentication (a random password: another local user cannot log in to this superuser), durability
off (``fsync``, ``synchronous_commit``): the data is thrown away at ``stop()``. PostgreSQL refuses
to run as root, so as root (CI) the server runs as the ``postgres`` user that Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .live_server import free_port

USER = "archon"
DATABASE = "archon"


def bindir() -> Path:
    """The newest installed server's binaries (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    if on_path := shutil.which("postgres"):
        return Path(on_path).parent
    raise RuntimeError("no PostgreSQL server installed: run `scripts/bootstrap.sh postgres`")


class PostgresServer:
    def __init__(self, *, max_connections: int = 300) -> None:
        self.port = free_port()
        self.password = secrets.token_urlsafe(24)
        self.url = f"postgres://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"
        self.max_connections = max_connections
        self.dir = Path(tempfile.mkdtemp(prefix="archon-pg-"))
        self.proc: subprocess.Popen | None = None

    def _as_owner(self) -> dict:
        # Popen's own user switch (no su/runuser in between), so a signal reaches the server itself.
        return {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}

    def start(self) -> PostgresServer:
        from .processes import wait_for_port  # noqa: PLC0415 — processes imports nothing of ours but live_server

        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        data, binaries = self.dir / "data", bindir()
        password_file = self.dir / "password"
        password_file.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(password_file, "postgres", "postgres")
        password_file.chmod(0o600)
        subprocess.run([str(binaries / "initdb"), "-D", str(data), "-U", USER, "--auth=scram-sha-256",
                        f"--pwfile={password_file}", "--no-sync",
                        "-E", "UTF8", "--locale=C"], check=True, capture_output=True, **self._as_owner())  # fmt: skip
        self.proc = subprocess.Popen(
            [str(binaries / "postgres"), "-D", str(data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.dir), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", f"max_connections={self.max_connections}"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "server.log", "w"), **self._as_owner(),  # noqa: SIM115
        )  # fmt: skip
        wait_for_port(self.port, timeout=60, proc=self.proc)
        import psycopg  # noqa: PLC0415 — only runs that start a server need the driver

        for attempt in range(100):  # the port opens a moment before the server accepts logins
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=self.port, user=USER, password=self.password, dbname="postgres", autocommit=True
                ) as conn:
                    conn.execute(f"CREATE DATABASE {DATABASE}")
                break
            except psycopg.OperationalError:
                if attempt == 99:
                    self.stop()
                    raise
                time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, no checkpoint wait
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
