"""Fan-out with several writers at once (issue 14): does concurrency lift the Django path's per-save figure?

1,000 watchers in one room; W writers make awaited requests one after another, all at the same time, 50 in all.
On the Django path each writer PATCHes its own task (as several users do); on the reference (node) each POSTs
/emit?n=1. Node's one-request figure (every broadcast from one request) is measured in the same round: the
yardstick of issue 14's ≥ 0.6× target. Not part of ``make bench``:

    .venv/bin/python -m bench.fanout_writers [--rounds 2] [--writers 1,2,4,8]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json

from bench.run import RESULTS, Django, fanout
from bench.servers import make
from tests.support.processes import RedisServer

CLIENTS, BROADCASTS = 1000, 50


async def main(rounds: int, writers: list[int]) -> dict:
    redis = RedisServer().start()
    django = Django(redis.url)
    django.seed(projects=2, batch_tasks=BROADCASTS)
    results: dict = {"clients": CLIENTS, "broadcasts": BROADCASTS, "rounds": []}
    try:
        for round_ in range(rounds):
            row: dict = {}
            for name in ("node", "django-uvicorn"):
                for w in writers:
                    server = make(name, django_env=django.env, redis_url=redis.url).start()
                    try:
                        dj = django if name.startswith("django") else None
                        row[f"{name}/{w}"] = (await fanout(server, dj, CLIENTS, BROADCASTS, per_request=True, writers=w))[
                            "deliveries_per_s"
                        ]
                    finally:
                        server.stop()
            server = make("node", django_env=django.env, redis_url=redis.url).start()
            try:
                row["node/one-request"] = (await fanout(server, None, CLIENTS, BROADCASTS))["deliveries_per_s"]
            finally:
                server.stop()
            results["rounds"].append(row)
            print(f"round {round_ + 1}: node one request {row['node/one-request']:,.0f} deliveries/s; "
                  + "; ".join(f"{w} writers: django {row[f'django-uvicorn/{w}']:,.0f} ({row[f'django-uvicorn/{w}'] / row['node/one-request']:.2f}×), "
                              f"node {row[f'node/{w}']:,.0f}" for w in writers), flush=True)  # fmt: skip
    finally:
        redis.stop()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--writers", default="1,2,4,8")
    args = parser.parse_args()
    out = asyncio.run(main(args.rounds, [int(w) for w in args.writers.split(",")]))
    path = RESULTS / f"{datetime.date.today().isoformat()}-fanout-writers.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written: {path}")
