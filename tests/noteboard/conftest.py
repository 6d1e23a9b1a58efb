"""The note board (examples/noteboard) served by its own uvicorn process, one per test module.

pytest-django runs one settings module per process (the main site's), so the note board runs where it
would in production: in subprocesses, on its own SQLite file, reached over loopback only.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.live_server import free_port
from tests.support.processes import interrupt, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "examples" / "noteboard"
SECRET = "noteboard-test-secret-shared-by-its-processes"


@dataclass
class NoteBoard:
    """One running note board: its URL, database and the tokens of its users."""

    url: str
    env: dict[str, str]
    log_path: Path
    tokens: dict[str, str] = field(default_factory=dict)

    def manage_sync(self, *args: str) -> str:
        """``manage.py args`` in the note board project (a separate process); its stdout, stripped."""
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout.strip()

    async def manage(self, *args: str) -> str:
        """As ``manage_sync``, off the event loop (the clients keep reading meanwhile)."""
        return await asyncio.to_thread(self.manage_sync, *args)

    async def shell(self, code: str) -> object:
        """Run ``code`` in ``manage.py shell``; the JSON it prints last (None if it prints nothing)."""
        out = await self.manage("shell", "-v", "0", "-c", code)
        return json.loads(out.splitlines()[-1]) if out else None

    def server_output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def _env(database: Path, url: str) -> dict[str, str]:
    # The test run's own settings (the main site's) must not leak into the note board's processes.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REALTIME_", "REDIS_URL", "CHANNEL_LAYER", "DATABASE_URL", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="noteboard_site.settings",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),  # so `realtime` imports
        NOTEBOARD_DB=str(database),
        SECRET_KEY=SECRET,
        DEBUG="true",
        REALTIME_SERVER_URL=url,  # where its commands publish: the server below
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


@pytest.fixture(scope="module")
def noteboard() -> Iterator[NoteBoard]:
    """A migrated note board database, users ``alice`` and ``bob`` with tokens, and its server running."""
    with tempfile.TemporaryDirectory(prefix="noteboard-") as tmp:
        port = free_port()
        board = NoteBoard(f"http://127.0.0.1:{port}", _env(Path(tmp) / "db.sqlite3", f"http://127.0.0.1:{port}"), Path(tmp) / "server.log")
        board.manage_sync("migrate", "-v", "0")
        board.manage_sync(
            "shell", "-v", "0", "-c", "from django.contrib.auth.models import User; [User.objects.create_user(n) for n in ('alice', 'bob')]"
        )
        board.tokens = {name: board.manage_sync("issue_token", name) for name in ("alice", "bob")}  # realtime's own command
        with open(board.log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "noteboard_site.asgi:application", "--host", "127.0.0.1", "--port", str(port)],
                cwd=PROJECT,
                env=board.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_for_port(port, proc=proc)
                yield board
            finally:
                interrupt(proc)
                if proc.returncode not in (0, -2):
                    print(f"note board server exited with {proc.returncode}:\n{board.server_output()}")
