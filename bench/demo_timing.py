"""P7: time from ``shard-console demo`` to its first record, and from SIGTERM to exit.

    python -m bench.demo_timing [--runs 5]

Measured from outside, as a user sees it: process spawn to the first record printed by
``--processor print`` (interpreter start and imports included), and SIGTERM to process exit,
with the exit code and the final checkpoint flush checked. Targets: <= 3 s and <= 5 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.kinesalite import ROOT
from bench.report import result


def one_run(run_for: float) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "console",
                "demo",
                "--no-ui",
                "--processor",
                "print",
                "--db",
                str(db),
                "--flush-interval",
                "60",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
        )
        assert proc.stdout is not None
        proc.stdout.readline()
        first = time.perf_counter() - t0
        time.sleep(run_for)
        t1 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        for _ in proc.stdout:  # drain, so a full pipe never blocks the shutdown
            pass
        rc = proc.wait(30)
        stop = time.perf_counter() - t1
        # The flush interval was 60 s: only the shutdown flush wrote these checkpoints.
        flushed = (
            sqlite3.connect(db)
            .execute("SELECT count(*) FROM checkpoints WHERE position LIKE 'after_sequence:%'")
            .fetchone()[0]
        )
        assert rc == 0, rc
        return first, stop, flushed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--run-for", type=float, default=3.0, help="seconds before SIGTERM")
    args = parser.parse_args()
    firsts, stops = [], []
    for i in range(args.runs):
        first, stop, flushed = one_run(args.run_for)
        firsts.append(first)
        stops.append(stop)
        print(
            f"run {i + 1}: first record {first:.2f} s, SIGTERM to exit {stop:.2f} s, "
            f"{flushed} shard checkpoints flushed at exit"
        )
    print()
    print(f"command: python -m bench.demo_timing {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"time to first record: median {statistics.median(firsts):.2f} s, max {max(firsts):.2f} s (target <= 3 s)"
    )
    print(
        f"SIGTERM to exit:      median {statistics.median(stops):.2f} s, max {max(stops):.2f} s (target <= 5 s)"
    )
    first, stop = statistics.median(firsts), statistics.median(stops)
    result("P7", "demo: start to first record", f"{first:.2f} s", "<= 3 s", max(firsts) <= 3)
    result(
        "P7",
        "demo: SIGTERM to exit, checkpoints flushed",
        f"{stop:.2f} s",
        "<= 5 s",
        max(stops) <= 5,
    )


if __name__ == "__main__":
    main()
