"""P11: ``shard-console tail --from trim_horizon`` of a backlog to /dev/null, against the P1
drain (the real headless consumer, bench/contenders.py ``ours``) on the same stream, in one run,
alternating; and with ``--grep`` against without.

    python -m bench.tail [--records 100000] [--shards 4] [--runs 3]

Targets (issue: look inside the stream): tail's records per second >= the drain's; with
``--grep`` >= 0.8x of tail without. Each run's whole command is timed (start-up included, as
for the drain), and the lines it printed are counted: any other count than N fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

from bench.drain import fill, run_one
from bench.kinesalite import ROOT, kinesalite
from bench.report import result


def run_tail(url: str, stream: str, records: int, *extra: str) -> float:
    cmd = [
        sys.executable, "-m", "console", "tail", stream, "--endpoint-url", url,
        "--region", "us-east-1", "--from", "trim_horizon", "--no-follow", *extra,
    ]  # fmt: skip
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, check=False, timeout=600)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"tail failed: {out.stderr.decode()[-2000:]}")
    lines = out.stdout.count(b"\n")
    if lines != records:
        raise SystemExit(f"tail printed {lines} records, not {records}")
    return wall


def main() -> None:
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"command: python -m bench.tail {' '.join(sys.argv[1:])}")
    n = args.records
    walls: dict[str, list[float]] = {"drain": [], "tail": [], "tail --grep": []}
    with kinesalite() as url:
        stream = "bench-tail"
        asyncio.run(fill(url, stream, args.shards, n, args.size))
        for run in range(args.runs):
            names = list(walls)
            k = run % len(names)
            for name in names[k:] + names[:k]:
                if name == "drain":
                    wall = run_one("ours", url, stream, n, False)["wall"]
                elif name == "tail":
                    wall = run_tail(url, stream, n)
                else:  # every record matches: the pattern is searched in each, none dropped
                    wall = run_tail(url, stream, n, "--grep", r'"i": \d+')
                walls[name].append(wall)
                print(f"run {run + 1} {name:<12} wall {wall:6.2f} s  {n / wall:8.0f} rec/s")
    med = {name: statistics.median(w) for name, w in walls.items()}
    tail_vs_drain = med["drain"] / med["tail"]
    grep_vs_tail = med["tail"] / med["tail --grep"]
    print(
        f"tail {n / med['tail']:.0f} rec/s, drain {n / med['drain']:.0f} rec/s, "
        f"tail --grep {n / med['tail --grep']:.0f} rec/s"
    )
    what = f"tail --from trim_horizon of {n:,} x {args.size} B from {args.shards} kinesalite shards"
    result("P11", f"{what}: records per second vs the P1 drain", f"{tail_vs_drain:.2f}x",
           ">= 1.0x", tail_vs_drain >= 1.0)  # fmt: skip
    result("P11", f"{what}: with --grep vs without", f"{grep_vs_tail:.2f}x", ">= 0.8x",
           grep_vs_tail >= 0.8)  # fmt: skip


if __name__ == "__main__":
    main()
