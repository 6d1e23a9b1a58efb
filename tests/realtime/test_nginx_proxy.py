"""docs/nginx.conf works as written: two Redis-backed server processes behind nginx, polling and websocket clients."""

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import db
from tests.support import factories as f
from tests.support.live_server import free_port
from tests.support.processes import ROOT, wait_for_port
from tests.support.py_client import PyClient

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture
def proxy(spawn, redis_server, tmp_path: Path):
    # engine.io holds a client's last long-poll open for ping interval + timeout after it closes:
    # short pings keep the polling client's close (and this test) quick.
    a, b = (spawn(REDIS_URL=redis_server.url, REALTIME_PING_INTERVAL="2", REALTIME_PING_TIMEOUT="3") for _ in range(2))
    port = free_port()
    conf = (ROOT / "docs" / "nginx.conf").read_text()
    conf = conf.replace("127.0.0.1:8001", f"127.0.0.1:{a.port}").replace("127.0.0.1:8002", f"127.0.0.1:{b.port}")
    conf = conf.replace("listen 127.0.0.1:8080", f"listen 127.0.0.1:{port}").replace("/tmp/archon-nginx", str(tmp_path / "nginx"))
    (tmp_path / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(
        [NGINX, "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    wait_for_port(port, proc=proc)
    yield f"http://127.0.0.1:{port}", a, b
    proc.terminate()
    proc.wait(10)


@pytest.mark.parametrize("transports", [["polling"], ["websocket"]])
async def test_clients_through_the_sample_proxy_see_writes_from_either_node(proxy, transports):
    url, a, b = proxy
    alice = await db(f.make_user)("alice")
    project = await db(f.make_project)(alice)
    task = await db(f.make_task)(project, title="before")
    token = await db(f.token_for)(alice)
    client = PyClient()
    try:
        await client.connect(url, auth={"token": token}, transports=transports)
        assert (await client.call("join_project", {"project_id": str(project.pk)}))["ok"]
        assert [t["id"] for t in (await client.wait_for("initial_tasks"))["tasks"]] == [str(task.pk)]
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as rest:
            for node, title in ((a, "from A"), (b, "from B")):
                response = await rest.patch(f"{node.url}/api/tasks/{task.pk}/", json={"title": title})
                assert response.status_code == 200
                assert (await client.wait_for("task_updated"))["title"] == title
    finally:
        await client.close()
