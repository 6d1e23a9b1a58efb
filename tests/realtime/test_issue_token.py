"""``manage.py issue_token``, run as a real subprocess against the test database, and revoking what it issued."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from realtime.models import ApiToken, hash_token
from tests.conftest import CLIENT_KINDS, db
from tests.support import factories as f
from tests.support.clients import ConnectionRefused
from tests.support.processes import database_url_for, django_env

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = REPO_ROOT / ".venv" / "bin" / "python"


async def manage(*args: str) -> tuple[int, str, str]:
    """Run ``manage.py`` on the test database; (exit code, stdout, stderr)."""
    env = django_env(database_url_for(connection.settings_dict))
    proc = await asyncio.create_subprocess_exec(
        str(PYTHON if PYTHON.exists() else sys.executable),
        "manage.py",
        *args,
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


async def wait_disconnected(client: Any, seconds: float = 5.0) -> None:
    # Neither client wrapper exposes a disconnect event to await: poll, bounded.
    async with asyncio.timeout(seconds):
        while client.connected:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_issue_token_prints_only_a_working_token(server, http, connect):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice, title="Apollo")

    code, out, err = await manage("issue_token", "alice", "--name", "ci bot")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == 1 and out.endswith("\n"), out
    token = lines[0]
    assert token == token.strip() and len(token) >= 32

    row = await db(lambda: ApiToken.objects.select_related("user").get())()
    assert (row.user.username, row.name, row.prefix, row.key_hash) == ("alice", "ci bot", token[:8], hash_token(token))
    assert token not in (row.key_hash, row.name)  # only the hash is stored

    listed = await http.get("/api/projects/", headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200 and [p["title"] for p in listed.json()] == ["Apollo"]

    client = await connect(auth={"token": token})
    assert await client.call("join_project", {"project_id": str(project.pk)}) == {"ok": True, "project_id": str(project.pk)}


async def test_issue_token_default_name_and_fresh_tokens(server):
    await db(f.make_user)("alice")
    first = await manage("issue_token", "alice")
    second = await manage("issue_token", "alice")
    assert first[0] == second[0] == 0
    assert first[1] != second[1]  # a new token each time, the old one still valid
    assert await db(lambda: sorted(ApiToken.objects.values_list("name", flat=True)))() == ["issue_token", "issue_token"]


@pytest.mark.parametrize("username", ["ghost", "", "ALICE"])
async def test_unknown_user_is_a_clear_error(server, username):
    await db(f.make_user)("alice")
    code, out, err = await manage("issue_token", username)
    assert code != 0
    assert out == ""
    assert f"no such user: {username}" in err, err
    assert "Traceback" not in err
    assert await db(ApiToken.objects.count)() == 0


async def test_missing_username_is_a_usage_error(server):
    code, out, err = await manage("issue_token")
    assert code != 0 and out == ""
    assert "username" in err and "Traceback" not in err


async def test_revoking_the_token_locks_out_rest_and_disconnects_sockets(server, http, client_kind):
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    code, out, err = await manage("issue_token", "alice")
    assert code == 0, err
    token = out.strip()
    other_token = await db(f.token_for)(alice)  # a second token of the same user is not affected

    revoked_client, other_client = CLIENT_KINDS[client_kind](), CLIENT_KINDS[client_kind]()
    try:
        await revoked_client.connect(server.url, auth={"token": token})
        await other_client.connect(server.url, auth={"token": other_token})
        for client in (revoked_client, other_client):
            assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"] is True
        assert (await http.get("/api/projects/", headers={"Authorization": f"Bearer {token}"})).status_code == 200

        deleted, _ = await db(lambda: ApiToken.objects.filter(key_hash=hash_token(token)).delete())()
        assert deleted == 1

        assert (await http.get("/api/projects/", headers={"Authorization": f"Bearer {token}"})).status_code == 401
        await wait_disconnected(revoked_client)

        # The other token's connection is still served and still gets the project's events.
        assert other_client.connected
        assert (await other_client.call("join_project", {"project_id": str(project.pk)}))["ok"] is True
        await db(f.make_task)(project, title="after revocation")
        assert (await other_client.wait_for("task_created"))["title"] == "after revocation"
        assert (await http.get("/api/projects/", headers={"Authorization": f"Bearer {other_token}"})).status_code == 200

        # And the revoked token cannot come back.
        again = CLIENT_KINDS[client_kind]()
        try:
            with pytest.raises(ConnectionRefused) as refusal:
                await again.connect(server.url, auth={"token": token})
            assert refusal.value.message.startswith("invalid token")
        finally:
            await again.close()
    finally:
        await revoked_client.close()
        await other_client.close()
