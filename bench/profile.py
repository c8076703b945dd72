"""Where each microsecond per record goes: the P1 drain of ``ours`` under cProfile.

    python -m bench.profile [--records 100000] [--size 100] [--kpl] [--read-path fast|botocore]
                            [--top 25]

Fills a kinesalite stream as P1 does, then runs the ``ours`` contender (the real headless
program, SQLite checkpoints on) in a process of its own under cProfile, and prints the
functions with the most time of their own, as microseconds per record drained. Profiling
slows everything by about half as much again; the shares, not the totals, are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import subprocess
import sys
import tempfile

from bench.drain import fill
from bench.kinesalite import ROOT, kinesalite


def main() -> None:
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--kpl", action="store_true")
    parser.add_argument("--read-path", default=None, help="passed to ours as --read-path")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    with kinesalite() as url, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(fill(url, "bench", args.shards, args.records, args.size, args.kpl))
        out = os.path.join(tmp, "drain.prof")
        env = dict(os.environ)
        if args.read_path:
            env["SHARD_CONSOLE_READ_PATH"] = args.read_path
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.contenders",
                "ours",
                url,
                "bench",
                str(args.records),
                *(["--kpl"] if args.kpl else []),
                "--profile",
                out,
            ],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=600,
        )
        stats = pstats.Stats(out)
    total = stats.total_tt  # type: ignore[attr-defined]
    per = 1e6 / args.records
    print(f"command: python -m bench.profile {' '.join(sys.argv[1:])}")
    print(f"profiled: {total:.2f} s, {total * per:.2f} us per record")
    print(f"{'us/rec':>7} {'share':>6}  function")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
    for (path, line, func), (_cc, _nc, tt, _ct, _callers) in rows[: args.top]:
        where = f"{os.path.basename(path)}:{line}" if line else path
        print(f"{tt * per:7.2f} {tt / total:6.1%}  {func} ({where})")


if __name__ == "__main__":
    main()
