"""P2: how soon a running consumer applies a command written by another process.

    python -m bench.command_latency [--commands 10]

As an operator does it: ``shard-console demo --no-ui`` runs headless; ``shard-console pause`` and
``resume`` come from separate processes, one after another, each waiting for its result. The
figure is what the commands table records: from the row's ``requested_at`` (written by the CLI)
to its ``applied_at`` (written by the consumer, in the transaction that applies it). Target:
within 2 s.
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


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "demo.db"
        demo = subprocess.Popen(
            [sys.executable, "-m", "console", "demo", "--no-ui", "--processor", "null",
             "--db", str(db), "--duration", "120"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not (db.exists() and sqlite3.connect(db).execute(
                "SELECT count(*) FROM checkpoints").fetchone()[0]):  # fmt: skip
                assert time.monotonic() < deadline and demo.poll() is None, "demo did not start"
                time.sleep(0.2)
            for i in range(args.commands):
                action = "pause" if i % 2 == 0 else "resume"
                done = cli(action, "shardId-000000000000", "--db", str(db), "--yes")
                assert done.returncode == 0, done.stderr
                assert "applied by the running consumer" in done.stdout, done.stdout
            rows = (
                sqlite3.connect(db)
                .execute(
                    "SELECT action, state, applied_at - requested_at FROM commands ORDER BY id"
                )
                .fetchall()
            )
        finally:
            demo.send_signal(signal.SIGTERM)
            demo.wait(30)
    latencies = [float(r[2]) for r in rows if r[1] == "applied"]
    assert len(latencies) == args.commands, rows
    for action, _, took in rows:
        print(f"{action:7} applied {took * 1000:6.0f} ms after it was written")
    median = statistics.median(latencies)
    print()
    print(f"command: python -m bench.command_latency {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"written to applied: median {median * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    result(
        "P2",
        f"a running consumer applies a command from another process (max {max(latencies):.2f} s)",
        f"{median:.2f} s",
        "<= 2 s",
        max(latencies) <= 2,
    )


if __name__ == "__main__":
    main()
