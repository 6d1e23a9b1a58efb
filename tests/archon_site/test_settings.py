"""Production is the default: without DEBUG=true and without SECRET_KEY, nothing starts."""

from __future__ import annotations

import json
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


def test_postgresql_gets_django_s_pool_sized_by_the_environment_and_sqlite_none() -> None:
    code = (
        "import json; from django.conf import settings as s; d = s.DATABASES['default']; "
        "print(json.dumps([d['OPTIONS'], d['CONN_MAX_AGE']]))"
    )
    postgres = {"DEBUG": "true", "DATABASE_URL": "postgres://u:p@127.0.0.1:5432/site?conn_max_age=60"}  # settings only: no connection
    pooled = _manage("shell", "-c", code, **postgres, DATABASE_POOL_MIN_SIZE="3", DATABASE_POOL_MAX_SIZE="7", DATABASE_POOL_TIMEOUT="2.5")
    assert json.loads(pooled.stdout.splitlines()[-1]) == [{"pool": {"min_size": 3, "max_size": 7, "timeout": 2.5}}, 0], pooled.stderr
    unpooled = _manage("shell", "-c", code, **postgres, DATABASE_POOL="false")
    assert json.loads(unpooled.stdout.splitlines()[-1]) == [{}, 60], unpooled.stderr
    kept = _manage("shell", "-c", code, **postgres, DATABASE_POOL="false", DATABASE_CONN_MAX_AGE="30")
    assert json.loads(kept.stdout.splitlines()[-1]) == [{}, 30], kept.stderr
    sqlite = _manage("shell", "-c", code, DEBUG="true", DATABASE_URL="sqlite:////tmp/unused.sqlite3")
    assert "pool" not in json.loads(sqlite.stdout.splitlines()[-1])[0], sqlite.stderr
