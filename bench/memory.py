"""P6: the consumer's peak memory (RSS) draining a 1,000,000-record backlog, and at 1,000 shards.

    python -m bench.memory [--records 1000000] [--shards-many 1000] [--runs 3]

The endpoint (the embedded one, which holds a million records without trimming and serves a
thousand shards) runs in its own process; the consumer is ``shard-console run --no-ui`` with
the null processor, as in a container, and its peak RSS is what the kernel reports for it at
exit (``wait4``'s ru_maxrss). Targets: <= 200 MB for the backlog, <= 300 MB at 1,000 shards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import result

ENV = {
    **os.environ,
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "SHARD_CONSOLE_NO_UI": "1",
}


def serve(shards: int, records: int, size: int) -> None:
    """The endpoint process: fill a stream, print its URL, serve until stdin closes."""
    from console.demo import EmbeddedEndpoint

    endpoint = EmbeddedEndpoint(keep_records_per_shard=records + 1)
    endpoint.start()

    def fill() -> None:
        endpoint.kinesis.create_stream("mem", shards)
        for i in range(records):
            key = f"key-{i % 10_000}"
            endpoint.kinesis.put("mem", key, f"{key}:{i}:".encode().ljust(size, b"."))

    endpoint.call(fill)
    print(f"URL {endpoint.url}", flush=True)
    sys.stdin.read()
    endpoint.stop()


def consume(url: str, records: int) -> tuple[float, float]:
    """Peak RSS in MB and wall seconds of one consumer draining ``records``."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "console",
                "run",
                "mem",
                "--endpoint-url",
                url,
                "--db",
                str(Path(tmp) / "c.db"),
                "--no-ui",
                "--processor",
                "null",
                "--max-records",
                str(records),
                "--status-interval",
                "3600",
            ],
            env=ENV,
            stderr=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0, proc.returncode
        return usage.ru_maxrss / 1024, time.monotonic() - t0


def case(shards: int, records: int, runs: int) -> list[tuple[float, float]]:
    endpoint = subprocess.Popen(
        [sys.executable, "-m", "bench.memory", "--serve", str(shards), str(records), "100"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert endpoint.stdout is not None
        line = endpoint.stdout.readline()
        assert line.startswith("URL "), line
        url = line.split()[1]
        out = []
        for i in range(runs):
            rss, wall = consume(url, records)
            out.append((rss, wall))
            print(
                f"  {shards} shards, {records:,} records, run {i + 1}: peak RSS {rss:.0f} MB, "
                f"{records / wall:,.0f} rec/s"
            )
        return out
    finally:
        assert endpoint.stdin is not None
        endpoint.stdin.close()
        endpoint.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--shards-many", type=int, default=1000)
    parser.add_argument("--records-many", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    print(f"command: python -m bench.memory {' '.join(sys.argv[1:])}".rstrip())
    backlog = case(4, args.records, args.runs)
    many = case(args.shards_many, args.records_many, args.runs)
    b = statistics.median(r for r, _ in backlog)
    m = statistics.median(r for r, _ in many)
    print(f"backlog: median peak RSS {b:.0f} MB (target <= 200 MB)")
    print(f"{args.shards_many} shards: median peak RSS {m:.0f} MB (target <= 300 MB)")
    result(
        "P6",
        f"peak RSS draining a {args.records:,}-record backlog (4 shards, null processor)",
        f"{b:.0f} MB",
        "<= 200 MB",
        b <= 200,
    )
    result(
        "P6",
        f"peak RSS at {args.shards_many:,} shards ({args.records_many:,} records)",
        f"{m:.0f} MB",
        "<= 300 MB",
        m <= 300,
    )


if __name__ == "__main__":
    main()
