"""A server whose database connections were cut (PostgreSQL restarted, a pooler or an idle timeout closed them)
serves the next Socket.IO connect, join and REST save on fresh database connections, instead of failing on the
dead ones until it restarts.

PostgreSQL only: the test cuts the server process's connections with ``pg_terminate_backend``, found by the
application name the process gives libpq (``PGAPPNAME``).
"""

import httpx
import pytest
from django.db import connection

from tests.conftest import db
from tests.support import factories as f

from .test_remote import setup_project, watcher

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="cuts PostgreSQL connections")

APPLICATION = "archon-test-cut-off"


def _cut_off() -> int:
    """Terminate every connection of the server process; how many there were."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", [APPLICATION])
        return cursor.fetchone()[0]


async def test_after_its_database_connections_are_cut_the_next_join_and_save_work(spawn) -> None:  # type: ignore[no-untyped-def]
    server = spawn(PGAPPNAME=APPLICATION)
    alice, project, task = await setup_project()
    first = await watcher(server, alice, project)  # the Socket.IO side has used the database: a token, a join, a snapshot
    token = await db(f.token_for)(alice)
    second = None
    try:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as rest:
            assert (await rest.patch(f"/api/tasks/{task.pk}/", json={"title": "before the cut"})).status_code == 200
            assert await db(_cut_off)() > 0

            second = await watcher(server, alice, project)  # authenticated, allowed and sent its snapshot on fresh connections
            response = await rest.patch(f"/api/tasks/{task.pk}/", json={"title": "after the cut"})
            assert response.status_code == 200, response.text
        for client in (first, second):
            await client.wait_for("task_updated", lambda t: t["title"] == "after the cut", timeout=10)
    finally:
        await first.close()
        if second is not None:
            await second.close()
