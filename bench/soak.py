"""``make soak``: 1,000 watchers for 10 minutes under steady writes: does memory stay flat, is nothing lost?

The storm's setup (``bench/storm.py``): a real redis-server, node A taking REST writes (creates, updates,
deletes), node B serving the watchers (``bench/watchers.mjs``, following the recovery protocol). Both nodes'
resident memory is sampled after a warm-up and at the end (growth must stay under 5 %); then the writes
pause and every watcher's tasks are compared with the database, with the gaps, resyncs and snapshots seen.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time

from bench.servers import rss_mb
from bench.storm import Fleet, Site, Writer


def rss(pid: int) -> float:
    """Resident MB: psutil when installed, else /proc (bench.servers)."""
    try:
        import psutil  # noqa: PLC0415 — optional
    except ImportError:
        return rss_mb(pid)
    return psutil.Process(pid).memory_info().rss / 2**20


def redis_memory_mb(site: Site) -> float:
    """Redis's own memory (the shared history lives there): from INFO, through the CLI if present."""
    try:
        out = subprocess.run(["redis-cli", "-p", str(site.redis.port), "info", "memory"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return float("nan")
    for line in out.splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1]) / 2**20
    return float("nan")


async def main(args: argparse.Namespace) -> dict:
    warmup = args.warmup if args.warmup is not None else min(60.0, args.seconds / 5)
    print(f"soak: {args.clients} watchers, {args.seconds:g} s (warm-up {warmup:g} s), {args.rate:g} writes/s…", flush=True)
    site = Site(args.projects, args.tasks, args.redis_pool)
    writer = Writer(site, args.rate, args.tasks)
    writer.resume()
    running = asyncio.create_task(writer.run())
    nodes = {"node A (writes)": site.writer_node, "node B (watchers)": site.watcher_node}
    try:
        async with Fleet(site.watcher_node.url, site.token, site.projects, args.clients, args.processes, since=not args.no_since) as fleet:
            print(f"  {args.clients} watchers joined in {fleet.connect_seconds:.1f} s", flush=True)
            started = time.monotonic()
            await asyncio.sleep(warmup)
            first = {name: rss(n.proc.pid) for name, n in nodes.items()}
            redis_first = redis_memory_mb(site)
            samples = [(0.0, first)]
            print(f"  after warm-up: {', '.join(f'{k} {v:.1f} MB' for k, v in first.items())}, redis {redis_first:.1f} MB", flush=True)
            while (left := args.seconds - (time.monotonic() - started)) > 0:
                await asyncio.sleep(min(args.every, left))
                sample = {name: rss(n.proc.pid) for name, n in nodes.items()}
                samples.append((time.monotonic() - started - warmup, sample))
                print(f"  t={time.monotonic() - started:5.0f} s: {', '.join(f'{k} {v:.1f} MB' for k, v in sample.items())}, "
                      f"{writer.writes} writes", flush=True)  # fmt: skip
            last = samples[-1][1]
            redis_last = redis_memory_mb(site)
            check = await fleet.verify(site, writer)
    finally:
        running.cancel()
        await writer.pause()
        site.stop()
    growth = {name: (last[name] - first[name]) / first[name] * 100 for name in nodes}
    c = check["counters"]
    result = {"clients": args.clients, "seconds": args.seconds, "warmup": warmup, "rate": args.rate, "writes": writer.writes,
              "write_errors": len(writer.errors), "rss_first_mb": first, "rss_last_mb": last, "rss_growth_pct": growth,
              "redis_mb": [redis_first, redis_last], "divergent": check["divergent"], "counters": c, "samples": samples}  # fmt: skip
    verdict = "OK" if all(g < 5 for g in growth.values()) and check["divergent"] == 0 else "FAILED"
    print(f"\nSOAK {verdict}: {args.clients} clients, {args.seconds:g} s, {writer.writes} writes ({len(writer.errors)} errors); RSS growth "
          f"{', '.join(f'{k} {first[k]:.1f} -> {last[k]:.1f} MB ({growth[k]:+.2f} %)' for k in nodes)}; redis {redis_first:.1f} -> "
          f"{redis_last:.1f} MB; divergent from the database at the end {check['divergent']}/{args.clients}; gaps {c.get('gaps', 0)}, "
          f"resyncs {c.get('resyncs', 0)}, epoch changes {c.get('epochChanges', 0)}, disconnects {c.get('disconnects', 0)}, "
          f"snapshots {c.get('snapshots', 0)}, recoveries {c.get('recoveries', 0)}, joins without a marker {c.get('unmarked', 0)}", flush=True)  # fmt: skip
    if check["sample"]:
        print(f"  divergent sample: {check['sample']}", flush=True)
    if writer.errors:
        print(f"  write errors (first 5): {writer.errors[:5]}", flush=True)
    return result


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600, help="how long the soak runs, warm-up included")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the first sample (default: a fifth, at most 60)")
    parser.add_argument("--every", type=float, default=30, help="seconds between samples")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20, help="REST writes per second")
    parser.add_argument("--processes", type=int, default=1, help="Node processes sharing the watchers")
    parser.add_argument("--redis-pool", type=int, default=0, help="the nodes' Redis pool size (0: redis-py's default)")
    parser.add_argument("--no-since", action="store_true", help="basic watchers: never send since (snapshots on every rejoin)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(arguments()))
