"""The chaos test (issue 13): no watcher that follows the documented protocol diverges from the database.

Real redis-server, two real uvicorn nodes joined by it, the official socket.io-client under Node (36 watchers, most
on node B, some on node A), random creates, updates, deletes and moves (REST through node A, and commands
publishing from their own process), each round with a random fault: a node restarted (cleanly or killed), Redis
killed for a few seconds (a fresh one comes back: history lost), paused (a partition), restarted, watchers'
connections dropped, a command publishing while node B is down. After each round every watcher must come to
equal the database (a deadline, not a speed assertion).

``CHAOS_ROUNDS`` (200 here; ``make chaos`` runs 1000), ``CHAOS_SEED`` (random, printed) replays a run,
``CHAOS_VERBOSE=1`` prints every round, ``CHAOS_PROTOCOL=basic`` makes every watcher a basic-protocol one (for a
server without recovery), ``=recovery`` none (five of 36 by default), ``CHAOS_MAX_DIVERGENT_ROUNDS`` (3) stops a
failing run early, ``CHAOS_FAULTS=redis-pause,…`` runs only the faults named (see ``tests/support/chaos.py``).
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import db
from tests.support import factories as f
from tests.support.chaos import Chaos, Cluster, Watchers, Writer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.chaos]

USERS = 6
PROJECTS = 6
WATCHERS = 36  # two in three on node B


def _setup(rng: random.Random) -> tuple[str, list[str], list[tuple[str, str, list[str]]]]:
    """The writer's token, the project ids, and per watcher (its user's token, on node "a"/"b", its projects)."""
    admin = f.make_user("chaos_admin", superuser=True)
    projects = [f.make_project(admin, title=f"chaos {n}") for n in range(PROJECTS)]
    tokens, visible = [], []
    for n in range(USERS):
        user = f.make_user(f"watcher{n}")
        mine = [projects[(n + k) % PROJECTS] for k in range(4)]  # a member of four projects, kept out of two
        for project in mine:
            project.members.add(user)
        tokens.append(f.token_for(user))
        visible.append([str(p.pk) for p in mine])
    watchers = []
    for n in range(WATCHERS):
        user = n % USERS
        watchers.append((tokens[user], "a" if n % 3 == 0 else "b", rng.sample(visible[user], rng.randint(2, 3))))
    return f.token_for(admin), [str(p.pk) for p in projects], watchers


async def test_every_watcher_converges_to_the_database_through_random_faults(database_url: str) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(2**32))
    rounds = int(os.environ.get("CHAOS_ROUNDS", "200"))
    protocol = os.environ.get("CHAOS_PROTOCOL", "mixed")  # "basic": a server without recovery; "recovery": no basic clients
    assert protocol in ("mixed", "basic", "recovery"), protocol
    print(f"chaos: seed={seed} rounds={rounds}", flush=True)
    rng = random.Random(seed)
    writer_token, projects, specs = await db(_setup)(rng)

    cluster = Cluster(database_url)
    watchers = Watchers()
    chaos: Chaos | None = None
    passed = False  # else the nodes' output is kept
    try:
        await asyncio.to_thread(cluster.start)
        await watchers.start()
        for n, (token, node, watched) in enumerate(specs):
            transports: Any = ["websocket"] if n % 4 else None  # one in four starts on long-polling and upgrades
            # Five (two on A, three on B) follow only the basic protocol: they never send since.
            basic = protocol == "basic" or (protocol == "mixed" and n % 7 == 6)
            await watchers.add(f"w{n}", cluster.node(node).url, token, watched, transports, basic)
        writer = Writer(rng, cluster, writer_token, projects)
        await writer.rest(24)  # tasks to start with, watched arriving
        only = [name for name in os.environ.get("CHAOS_FAULTS", "").split(",") if name]
        chaos = Chaos(cluster, watchers, writer, seed, verbose=os.environ.get("CHAOS_VERBOSE") == "1", only=only)
        report = await chaos.run(rounds, max_divergent_rounds=int(os.environ.get("CHAOS_MAX_DIVERGENT_ROUNDS", "3")))
        passed = not report.divergences
    finally:
        if chaos is not None:
            chaos.print_figures()
            print(chaos.report.summary(), flush=True)
        await watchers.stop()
        logs = None if passed else Path(tempfile.gettempdir()) / f"chaos-{seed}"
        await asyncio.to_thread(cluster.stop, logs)
        if logs is not None:
            print(f"chaos: the nodes' output is in {logs}", flush=True)
    assert report.divergences == [], f"{report.summary()}: " + "; ".join(
        f"round {d.round} ({d.fault}) {d.watcher} on {d.node}: {d.details[:3]}" for d in report.divergences[:10]
    )
