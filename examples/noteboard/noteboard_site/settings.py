"""The note board's settings: a minimal Django project with realtime installed, nothing else of the main site.

Read from the environment so that tests (and a second terminal) can point every process at one database
and one server: ``NOTEBOARD_DB``, ``SECRET_KEY``, ``DEBUG`` and, optionally, ``REALTIME_SERVER_URL``.
No other realtime setting is set here: realtime's own defaults apply.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = os.environ.get("DEBUG", "true").lower() == "true"
# Commands sign what they publish with SECRET_KEY: every process of one board must share it.
SECRET_KEY = os.environ.get("SECRET_KEY") or ("noteboard-dev-insecure-key" if DEBUG else "")
if not SECRET_KEY:
    raise RuntimeError("SECRET_KEY is not set (or set DEBUG=true for development)")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "realtime",
    "notes",
]

MIDDLEWARE = [
    "realtime.middleware.BroadcastsSentMiddleware",  # first: an answered write has sent its broadcasts
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "noteboard_site.urls"
ASGI_APPLICATION = "noteboard_site.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("NOTEBOARD_DB", str(BASE_DIR / "noteboard.sqlite3")),
        # The server and commands write at once: WAL lets readers run beside a writer, IMMEDIATE queues writers.
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# Where this machine's commands publish live events (realtime's default is http://127.0.0.1:8000).
if os.environ.get("REALTIME_SERVER_URL"):
    REALTIME_SERVER_URL = os.environ["REALTIME_SERVER_URL"]
