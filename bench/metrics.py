"""P10: what ``--metrics-port`` costs.

    python -m bench.metrics [--records 200000] [--shards 4] [--runs 5] [--render-runs 21]

* Drain: the P1 drain (the real headless program, bench/contenders.py ``ours``) with
  ``--metrics-port`` on and scraped every second by another process (``ours-metrics``; the
  scraper parses each answer with prometheus_client, as Prometheus would), against the same
  program with it off, alternating, on the same stream. Target: throughput >= 0.97x of off.
* Render: ``/metrics`` of a consumer with 1,000 reading shards (each with records, bytes, lag,
  a checkpoint, processor-time buckets and an error count), made by prometheus_client's
  ``generate_latest`` from the snapshot, median of the runs. Target: <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time

from bench.drain import fill, run_one
from bench.kinesalite import kinesalite
from bench.report import result


def render_ms(shards: int, runs: int) -> tuple[float, int, int]:
    """Median milliseconds to render /metrics at ``shards`` reading shards; bytes and series."""
    from prometheus_client import generate_latest

    from console.engine.events import EventLog
    from console.engine.state import EngineState
    from console.model import ShardStatus
    from console.observe.metrics import registry_for

    class Watched:
        def __init__(self) -> None:
            self.state = EngineState("bench", "kinesis", "loopback")
            self.events = EventLog()
            self.failure = None
            self.ready = True

    watched = Watched()
    now = time.time()
    for i in range(shards):
        sid = f"shardId-{i:012d}"
        watched.state.update(
            sid,
            status=ShardStatus.ACTIVE,
            records=1000 + i,
            bytes=100_000 + i,
            lag_ms=i % 50,
            checkpoint_at=now - i % 5,
            errors={"throttled": i % 3},
        )
        for k in range(20):
            watched.state.processor_time(sid, 0.0005 * (k + 1) * (1 + i % 7))
    registry = registry_for(watched)
    body = generate_latest(registry)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        generate_latest(registry)
        times.append((time.perf_counter() - t0) * 1000)
    series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
    return statistics.median(times), len(body), series


def main() -> None:
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--render-shards", type=int, default=1000)
    parser.add_argument("--render-runs", type=int, default=21)
    args = parser.parse_args()
    print(f"command: python -m bench.metrics {' '.join(sys.argv[1:])}")

    ms, size, series = render_ms(args.render_shards, args.render_runs)
    print(
        f"/metrics at {args.render_shards} shards: {ms:.1f} ms median, {size:,} B, {series:,} series"
    )
    result(
        "P10",
        f"/metrics rendered at {args.render_shards:,} reading shards ({series:,} series)",
        f"{ms:.0f} ms",
        "<= 50 ms",
        ms <= 50,
    )

    with kinesalite() as url:
        stream = "bench-metrics"
        asyncio.run(fill(url, stream, args.shards, args.records, args.size))
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "ours-metrics": []}
        for run in range(args.runs):
            order = ("ours", "ours-metrics") if run % 2 == 0 else ("ours-metrics", "ours")
            for name in order:
                r = run_one(name, url, stream, args.records, False)
                runs[name].append(r)
                extra = f"  {r['scrapes']:.0f} scrapes" if "scrapes" in r else ""
                print(
                    f"run {run + 1} {name:<13} wall {r['wall']:6.2f} s  cpu {r['cpu']:6.2f} s  "
                    f"{args.records / r['wall']:8.0f} rec/s{extra}"
                )
    off = statistics.median(r["wall"] for r in runs["ours"])
    on = statistics.median(r["wall"] for r in runs["ours-metrics"])
    cpu_off = statistics.median(r["cpu"] for r in runs["ours"])
    cpu_on = statistics.median(r["cpu"] for r in runs["ours-metrics"])
    scrapes = min(r["scrapes"] for r in runs["ours-metrics"])
    ratio = off / on
    print(
        f"throughput with metrics scraped every second vs without: {ratio:.3f}x "
        f"(CPU {cpu_off / cpu_on:.3f}x); at least {scrapes:.0f} scrapes per run"
    )
    result(
        "P10",
        f"drain {args.records:,} x {args.size} B from {args.shards} kinesalite shards with "
        "--metrics-port scraped every second: throughput vs without",
        f"{ratio:.2f}x",
        ">= 0.97x",
        ratio >= 0.97,
    )


if __name__ == "__main__":
    main()
