"""Production is the default: without DEBUG=true and without SECRET_KEY, nothing starts."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import ROOT


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "DJANGO_SETTINGS_MODULE")}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60)


def test_no_secret_key_outside_development_refuses_to_start_with_one_line() -> None:
    done = _manage("check")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "SECRET_KEY is not set: set SECRET_KEY (production), or DEBUG=true for development (make run does)"
    ]


def test_debug_is_off_unless_asked_for() -> None:
    code = "from django.conf import settings; print(settings.DEBUG)"
    assert _manage("shell", "-c", code, SECRET_KEY="x" * 50).stdout.split()[-1] == "False"
    assert _manage("shell", "-c", code, DEBUG="true").stdout.split()[-1] == "True"
