"""Django settings, all read through one django-environ ``env``.

Production is the default: ``DEBUG`` is off and ``SECRET_KEY`` is required (the
process refuses to start without one). Development is asked for explicitly with
``DEBUG=true`` (``make run`` and the tests do), which also supplies a development key.
"""

import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG: bool = env.bool("DEBUG", default=False)
# A public development key only in development: with it, anyone could sign bus requests.
SECRET_KEY: str = env.str("SECRET_KEY", default="dev-insecure-key-change-me-0123456789abcdef" if DEBUG else "")
if not SECRET_KEY:
    sys.exit("SECRET_KEY is not set: set SECRET_KEY (production), or DEBUG=true for development (make run does)")
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",  # login throttling (django-axes): see AXES_* under "Abuse limits"
    "projects",
    "realtime",
    "crawls",
    "chat",
]

MIDDLEWARE = [
    # First: a write is answered once its broadcasts have left this process (a server dying then loses none).
    "realtime.middleware.BroadcastsSentMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: turns a login refused by axes into the 429 lockout answer.
    "axes.middleware.AxesMiddleware",
]

# AxesStandaloneBackend first: a locked-out username or address is refused before any password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

ROOT_URLCONF = "archon_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "archon_site" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "archon_site.asgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several threads and processes write at once (server, commands, tests):
    # WAL lets readers run beside a writer, IMMEDIATE takes the write lock up
    # front so transactions queue instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Kept by the reused request threads (archon_site/request_threads.py): opening one costs ~1.5 ms.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=600)
    # A file, not memory: tests share the database with servers in other threads and
    # processes. One per test run, so two runs on one machine never share it.
    DATABASES["default"]["TEST"] = {
        "NAME": env.str("TEST_DATABASE_PATH", default=str(Path(tempfile.gettempdir()) / f"archon-test-{os.getpid()}.sqlite3"))
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's own pool (psycopg_pool), one per process: a request borrows a connection instead of opening one.
    # A request's thread holds one while the request runs and gives it back at its end; database work outside
    # requests (Socket.IO handlers, jobs: channels' database_sync_to_async) holds one for each call. So MAX_SIZE
    # bounds a process's connections (mind the server's max_connections times the number of processes); a thread
    # waits up to TIMEOUT seconds for one, then the request fails. DATABASE_POOL=false for an external pooler
    # (PgBouncer): then DATABASE_CONN_MAX_AGE (default 0) says how long a thread keeps its own connection.
    # Each connection is checked before use (with the pool: as it is lent, one round trip): after a PostgreSQL
    # restart or failover a dead one is replaced instead of failing its request.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if env.bool("DATABASE_POOL", default=True):
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
            "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=20),
            "timeout": env.float("DATABASE_POOL_TIMEOUT", default=10.0),
        }
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps connections; Django refuses persistent ones with it
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=DATABASES["default"].get("CONN_MAX_AGE", 0))

# Idle threads kept for the sync part of requests (archon_site/request_threads.py); with SQLite each keeps its
# connection, with PostgreSQL's pool a request borrows one from the pool.
REQUEST_IDLE_THREADS: int = env.int("REQUEST_IDLE_THREADS", default=8)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# socket.io-client's browser build, installed from npm (package.json), served as a static file; never committed.
STATICFILES_DIRS = [("vendor/socket.io", BASE_DIR / "node_modules" / "socket.io-client" / "dist")]
# WhiteNoise serves static files under uvicorn/granian; from the finders in development, no collectstatic needed.
WHITENOISE_USE_FINDERS = env.bool("WHITENOISE_USE_FINDERS", default=True)
WHITENOISE_AUTOREFRESH = DEBUG

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

# --- Realtime (Socket.IO) ---------------------------------------------------
# Empty means same origin only; never "*" by default. A listed origin must
# include the site's own origin if it should still be accepted.
REALTIME_CORS_ORIGINS: list[str] = env.list("REALTIME_CORS_ORIGINS", default=[])
REALTIME_PING_INTERVAL: int = env.int("REALTIME_PING_INTERVAL", default=25)
REALTIME_PING_TIMEOUT: int = env.int("REALTIME_PING_TIMEOUT", default=60)
# One incoming Socket.IO message (and one long-polling POST). Client events are small (REALTIME_MAX_EVENT_PAYLOAD_BYTES):
# a larger cap only lets one connection make the server decode megabytes per message.
REALTIME_MAX_MESSAGE_BYTES: int = env.int("REALTIME_MAX_MESSAGE_BYTES", default=65_536)
# Any other request body (the REST API, forms): refused with 413 as it arrives (archon_site/body_limit.py).
REQUEST_MAX_BYTES: int = env.int("REQUEST_MAX_BYTES", default=10_000_000)
# Client -> server control events are small; anything bigger is refused with a reason.
REALTIME_MAX_EVENT_PAYLOAD_BYTES: int = env.int("REALTIME_MAX_EVENT_PAYLOAD_BYTES", default=16_384)
# A serving process freezes its startup objects out of garbage collection (see realtime.lifecycle).
REALTIME_GC_TUNING: bool = env.bool("REALTIME_GC_TUNING", default=True)

# --- Abuse limits (README: "Limits and security") ------------------------------
# Client events per connection: a token bucket of REALTIME_EVENT_BURST refilled at
# REALTIME_EVENT_RATE per second; over it: {ok: false, error: "rate limited"}. A connection
# refused this way REALTIME_EVENT_ABUSE_DISCONNECT times in a row is disconnected.
REALTIME_EVENT_RATE: float = env.float("REALTIME_EVENT_RATE", default=20.0)
REALTIME_EVENT_BURST: int = env.int("REALTIME_EVENT_BURST", default=40)
REALTIME_EVENT_ABUSE_DISCONNECT: int = env.int("REALTIME_EVENT_ABUSE_DISCONNECT", default=100)
REALTIME_MAX_ROOMS_PER_CONNECTION: int = env.int("REALTIME_MAX_ROOMS_PER_CONNECTION", default=100)
REALTIME_MAX_CONNECTIONS_PER_USER: int = env.int("REALTIME_MAX_CONNECTIONS_PER_USER", default=50)  # per server process
# Failed-authentication connects per client address per minute; beyond, refused without checking.
REALTIME_AUTH_FAILURES_PER_MINUTE: int = env.int("REALTIME_AUTH_FAILURES_PER_MINUTE", default=30)
# An engine.io connection that has not connected Socket.IO (authenticated) within this many seconds is closed;
# at most REALTIME_MAX_PENDING_PER_ADDRESS such connections per client address (beyond, the handshake gets a 401).
REALTIME_CONNECT_TIMEOUT: float = env.float("REALTIME_CONNECT_TIMEOUT", default=10.0)
REALTIME_MAX_PENDING_PER_ADDRESS: int = env.int("REALTIME_MAX_PENDING_PER_ADDRESS", default=20)
# Connections being set up (handshake to authenticated) at once, from all addresses; beyond, handshakes are refused
# and clients retry after their backoff: a reconnect storm is admitted at the pace the server can set them up.
REALTIME_MAX_PENDING: int = env.int("REALTIME_MAX_PENDING", default=200)
# Client events of one connection being handled at once; beyond: {ok: false, error: "busy: too many requests in flight"}.
REALTIME_MAX_EVENTS_IN_FLIGHT: int = env.int("REALTIME_MAX_EVENTS_IN_FLIGHT", default=4)
# Bytes sent to a connection but not yet written out (a watcher that stopped reading): over this a
# connection has REALTIME_BUFFER_GRACE_SECONDS to drain, else it is closed with a logged reason, so it
# cannot hold the server's memory (over 4x, limits.HARD_CEILING_FACTOR, it is closed at once).
REALTIME_MAX_BUFFERED_BYTES: int = env.int("REALTIME_MAX_BUFFERED_BYTES", default=4_000_000)
# A connection may stay over that bound this long (a burst to a reader that is keeping up) before it is
# closed; over 4x the bound it is closed at once (realtime/limits.py: HARD_CEILING_FACTOR).
REALTIME_BUFFER_GRACE_SECONDS: float = env.float("REALTIME_BUFFER_GRACE_SECONDS", default=5.0)
# A snapshot (initial_tasks, projects_update) is sent in frames of about this many bytes at most.
REALTIME_SNAPSHOT_FRAME_BYTES: int = env.int("REALTIME_SNAPSHOT_FRAME_BYTES", default=256_000)
# Signed bus requests (/_realtime/publish): body size cap.
REALTIME_PUBLISH_MAX_BYTES: int = env.int("REALTIME_PUBLISH_MAX_BYTES", default=4_000_000)
# Recovery: the last REALTIME_HISTORY_SIZE broadcasts of each recoverable room (for at most REALTIME_HISTORY_ROOMS
# rooms in one process; with REDIS_URL in Redis, for REALTIME_HISTORY_TTL seconds after a room's last broadcast), so a
# client that reconnects gets what it missed instead of a snapshot.
REALTIME_HISTORY_SIZE: int = env.int("REALTIME_HISTORY_SIZE", default=500)
REALTIME_HISTORY_ROOMS: int = env.int("REALTIME_HISTORY_ROOMS", default=10_000)
REALTIME_HISTORY_BYTES: int = env.int("REALTIME_HISTORY_BYTES", default=32_000_000)
REALTIME_HISTORY_TTL: int = env.int("REALTIME_HISTORY_TTL", default=86_400)
# A command that gives up delivering a broadcast records it in the database; servers look every this many seconds.
REALTIME_LOST_POLL_SECONDS: float = env.float("REALTIME_LOST_POLL_SECONDS", default=2.0)
# A write's answer (and a client event's ack) waits at most this long for its broadcasts to leave the process.
REALTIME_RESPONSE_WAIT_SECONDS: float = env.float("REALTIME_RESPONSE_WAIT_SECONDS", default=10.0)
# Failed logins per username and per client address within the window; then refused until it passes.
LOGIN_FAILURE_LIMIT: int = env.int("LOGIN_FAILURE_LIMIT", default=10)
LOGIN_FAILURE_WINDOW: int = env.int("LOGIN_FAILURE_WINDOW", default=900)  # seconds
# Login throttling by django-axes, for every login through django.contrib.auth (/accounts/login/, /admin/login/):
# failures are counted per username and, separately, per client address (stored in the database, so
# every process shares them); at LOGIN_FAILURE_LIMIT the answer is 429 with AXES_COOLOFF_MESSAGE, even for
# a correct password, until LOGIN_FAILURE_WINDOW has passed since the last failure.
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=LOGIN_FAILURE_WINDOW)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own, not the pair
AXES_COOLOFF_MESSAGE = "Too many failed login attempts: try again later."
AXES_HTTP_RESPONSE_CODE = 429
AXES_VERBOSE = False  # no banner at startup; lockouts are still logged at warning

# --- The bus between processes (see realtime/remote.py) -----------------------
# Set: every server node uses python-socketio's Redis manager, and every other
# process publishes through Redis. Unset: one machine; commands reach the server
# at REALTIME_SERVER_URL with requests signed by SECRET_KEY.
REDIS_URL: str | None = env.str("REDIS_URL", default=None) or None
REALTIME_REDIS_CHANNEL: str = env.str("REALTIME_REDIS_CHANNEL", default="archon-realtime")
# A server process's Redis connections at most: a burst of joins waits for one rather than failing.
REALTIME_REDIS_CONNECTIONS: int = env.int("REALTIME_REDIS_CONNECTIONS", default=64)
REALTIME_SERVER_URL: str = env.str("REALTIME_SERVER_URL", default=f"http://127.0.0.1:{env.int('PORT', default=8000)}")
# Optional Channels interop: group_send to a group named after a room reaches that room.
CHANNEL_LAYER_REDIS_URL: str | None = env.str("CHANNEL_LAYER_REDIS_URL", default=None) or None
if CHANNEL_LAYER_REDIS_URL:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [CHANNEL_LAYER_REDIS_URL]}}}

# --- Crawls -------------------------------------------------------------------
CRAWL_MAX_CONCURRENT: int = env.int("CRAWL_MAX_CONCURRENT", default=2)  # crawls at once per server process
CRAWL_CONCURRENCY: int = env.int("CRAWL_CONCURRENCY", default=4)  # requests at once per crawl
CRAWL_TIMEOUT: float = env.float("CRAWL_TIMEOUT", default=10.0)  # seconds per request
CRAWL_DELAY: float = env.float("CRAWL_DELAY", default=0.0)  # seconds between requests to one host
CRAWL_MAX_BYTES: int = env.int("CRAWL_MAX_BYTES", default=2_000_000)  # per page
CRAWL_ROBOTS_MAX_BYTES: int = env.int("CRAWL_ROBOTS_MAX_BYTES", default=500_000)  # robots.txt
CRAWL_FETCH_DEADLINE: float = env.float("CRAWL_FETCH_DEADLINE", default=30.0)  # seconds per page in all (slow drip included)
CRAWL_DEADLINE: float = env.float("CRAWL_DEADLINE", default=1800.0)  # seconds per crawl; then it ends as failed
CRAWL_MAX_PER_USER: int = env.int("CRAWL_MAX_PER_USER", default=3)  # queued or running crawls per user
# Loopback, private (RFC 1918, unique-local), link-local and other non-public addresses are
# refused by default (SSRF); tests and intranet deployments turn this on.
CRAWL_ALLOW_PRIVATE_NETWORKS: bool = env.bool("CRAWL_ALLOW_PRIVATE_NETWORKS", default=False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "realtime": {"level": env.str("REALTIME_LOG_LEVEL", default="INFO")},
        "projects": {"level": "INFO"},
        "crawls": {"level": "INFO"},
    },
}
