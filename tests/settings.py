"""The test run's settings: the site's own, in development mode, asked for explicitly.

Crawls in the tests fetch a local site on 127.0.0.1, so private addresses are allowed here;
the SSRF tests turn the guard back on with ``override_settings``.

The database is the site's: SQLite unless ``DATABASE_URL`` says otherwise (a PostgreSQL server you run;
Django makes and drops ``test_<name>`` on it). ``TEST_DATABASE=postgres`` (``make test DB=postgres``) without a
PostgreSQL ``DATABASE_URL`` starts a throwaway server for the run and removes it at exit. Here, not in
conftest: pytest-django reads the settings before any conftest is imported.
"""

import atexit
import os

os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("CRAWL_ALLOW_PRIVATE_NETWORKS", "true")

_test_database = os.environ.get("TEST_DATABASE") or "sqlite"
if _test_database not in ("sqlite", "postgres"):
    raise ValueError(f"TEST_DATABASE={_test_database!r}: sqlite or postgres")
if _test_database == "postgres" and not os.environ.get("DATABASE_URL", "").startswith(("postgres", "pgsql")):
    from tests.support.postgres import PostgresServer

    _postgres = PostgresServer()
    atexit.register(_postgres.stop)  # runs after pytest-django has dropped the test database
    _postgres.start()
    os.environ["DATABASE_URL"] = _postgres.url

from archon_site.settings import *  # noqa: E402,F403

# The in-process server's watcher for lost broadcasts (realtime.lost.watch) would poll the database at any
# moment, also between tests, when pytest-django blocks it, and log that as an error in whichever test runs
# next. Off here; the test of the watcher runs it in a server process of its own (test_recovery).
REALTIME_LOST_POLL_SECONDS = 3600.0
