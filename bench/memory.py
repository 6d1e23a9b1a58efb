"""Memory per idle connection, alone: ``make bench``'s ``connections`` scenario, repeated (issue 14, item 4).

``python -m bench.memory [--clients 10000] [--runs 3] [--extra-args "--ws wsproto"] [--env KEY=VALUE ...]``
serves the Django app under uvicorn (``bench.servers.uvicorn``'s command, plus ``--extra-args`` to try
another server option), opens ``--clients`` idle authenticated Socket.IO connections with the
bench's load generator and prints the server's RSS delta per connection, once per run, then the
min / median / max. ``--heap`` also prints the Python heap per connection by package (``make profile``'s
memory section: tracemalloc, after a full collection).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shlex
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench import profile, run
from bench.servers import PY, ROOT, Server, free_port, uvicorn
from tests.support.processes import wait_for_port


def django_uvicorn(django: run.Django, extra_args: list[str], env: dict[str, str]) -> Server:
    port = free_port()
    server = Server("django-uvicorn", uvicorn("archon_site.asgi:application", port) + extra_args, {**django.env, **env})
    server.port = port
    return server


async def main(args: argparse.Namespace) -> None:
    django = run.Django(redis_url="")
    django.seed(projects=1)
    env = dict(pair.split("=", 1) for pair in args.env)
    figures = []
    for i in range(args.runs):
        server = django_uvicorn(django, shlex.split(args.extra_args), env)
        try:
            start(server)
            result = await run.connections(server, django, args.clients)
        finally:
            server.stop()
        figures.append(result["kb_per_connection"])
        print(f"run {i + 1}: {result['kb_per_connection']:.1f} KB per connection "
              f"(RSS {result['rss_before_mb']:.1f} -> {result['rss_after_mb']:.1f} MB, {result['connections_per_s']:,.0f} conn/s)", flush=True)  # fmt: skip
    if figures:
        print(f"KB per connection, {args.clients:,} connections, {len(figures)} runs: "
              f"min {min(figures):.1f} / median {statistics.median(figures):.1f} / max {max(figures):.1f}")  # fmt: skip
    if args.heap:
        await heap(django, args.heap, env, args.lines)


def start(server: Server, timeout: float = 180) -> Server:
    """``Server.start`` with a longer wait: a traced server imports Django slowly on a busy machine."""
    server.proc = subprocess.Popen(server.command, cwd=ROOT, env={**os.environ, **server.env, "PYTHONPATH": str(ROOT)},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    wait_for_port(server.port, timeout=timeout, proc=server.proc)
    time.sleep(0.3)
    return server


async def heap(django: run.Django, clients: int, env: dict[str, str], lines: int) -> None:
    """Print the Python heap per idle connection by package (as ``make profile``), and the top allocation sites."""
    directory = Path(tempfile.mkdtemp(prefix="archon-mem-"))
    port = free_port()
    server = Server("traced", [PY, "-m", "bench.traced_server", str(port), "archon_site.asgi:application", str(directory)],
                    {**django.env, "TRACE_MEMORY": "20", **env}, port)  # fmt: skip
    auth = {"token": django.token}
    try:
        start(server)
        async with run.LoadGen(server.url, clients=50, rooms=[], auth=auth, join=False):  # warm caches and lazy imports
            pass
        await asyncio.sleep(1)
        await profile.report(server, directory)
        async with run.LoadGen(server.url, clients=clients, rooms=[], auth=auth, join=False):
            await asyncio.sleep(1)
            await profile.report(server, directory)
    finally:
        server.stop()
    before, after = (tracemalloc.Snapshot.load(str(directory / f"snapshot-{n}.bin")) for n in (1, 2))
    owners: collections.Counter[str] = collections.Counter()
    sites: collections.Counter[str] = collections.Counter()
    for stat in after.compare_to(before, "traceback"):
        frames = list(stat.traceback)[::-1]  # innermost first
        owner = next((f for f in frames if profile._package(f.filename) != "stdlib"), frames[0])
        owners[profile._package(owner.filename)] += stat.size_diff
        sites[
            f"{owner.filename.split('site-packages/')[-1]}:{owner.lineno} <- {frames[0].filename.rsplit('/', 1)[-1]}:{frames[0].lineno}"
        ] += stat.size_diff
    print(f"Python heap per connection ({clients:,} connections): {sum(owners.values()) / clients / 1024:.1f} KB")
    for name, size in owners.most_common():
        if abs(size) / clients >= 50:
            print(f"  {name:<24} {size / clients / 1024:6.2f} KB")
    for site, size in sites.most_common(lines):
        print(f"    {size / clients:7.0f} B  {site}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--extra-args", default="", help="more uvicorn options, e.g. '--ws wsproto'")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server's environment")
    parser.add_argument("--heap", type=int, default=0, help="also trace the heap with this many connections")
    parser.add_argument("--lines", type=int, default=25, help="allocation sites to list with --heap")
    asyncio.run(main(parser.parse_args()))
