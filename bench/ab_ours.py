"""P1's ``ours`` alone, two checkouts alternating on one kinesalite backlog: the CPU and the
wall time of our drain, compared without the other contenders' noise in the ratio.

    python -m bench.ab_ours BEFORE_DIR AFTER_DIR [--pairs 5] [--records 100000]

Each directory is a checkout with its own ``.venv`` (e.g. a git worktree of an older commit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess

from bench.drain import fill
from bench.kinesalite import kinesalite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    sides = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
    figures: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
    with kinesalite() as url:
        asyncio.run(fill(url, "ab", 4, args.records, 100))
        for _ in range(args.pairs):
            for side, root in sides.items():
                out = subprocess.run(
                    [
                        f"{root}/.venv/bin/python",
                        "-m",
                        "bench.contenders",
                        "ours",
                        url,
                        "ab",
                        str(args.records),
                    ],
                    cwd=root,
                    env={**os.environ, "PYTHONPATH": root},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                f = json.loads(out.stdout.strip().splitlines()[-1])
                figures[side].append((f["cpu"], f["wall"]))
                print(f"{side:6} cpu {f['cpu']:.3f} s  wall {f['wall']:.2f} s", flush=True)
    for side, runs in figures.items():
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        print(f"{side:6} median: cpu {cpu:.3f} s, wall {wall:.2f} s per {args.records:,} records")


if __name__ == "__main__":
    main()
