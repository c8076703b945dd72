"""One contender drains N records in a process of its own and prints its figures as JSON.

    python -m bench.contenders ours|ours-botocore|ours-metrics|bare|bare-raw|async-kinesis
                               URL STREAM N [--kpl]
                               [--profile FILE]

* ``bare``: what a person writes first with aioboto3: one task per shard, GetRecords until
  caught up.
* ``bare-raw``: the same loop with one more line, botocore's timestamp parser turned off
  (ApproximateArrivalTimestamp left a number). That one setting is most of what separates a
  bare loop from ours in CPU; this contender keeps the comparison honest.
* ``async-kinesis``: async-kinesis 3.0.1's consumer, at the Kinesis fetch limit.
* ``ours``: the real headless program: argument parsing, probe, SQLite checkpoints, a
  processor that counts what it is handed.
* ``ours-botocore``: the same with ``--read-path botocore`` (GetRecords through botocore's
  parser, as before issue 16).
* ``ours-metrics``: the same with ``--metrics-port``, scraped every second by another process
  (bench/scrape.py, Prometheus' part).

With ``--kpl`` the stream holds KPL-aggregated records: the bare loops deaggregate with
aws-kinesis-agg's ``iter_deaggregate_records`` (its documented path for boto3 records),
async-kinesis with its KPLStringProcessor, ours as it always does. N counts user records.

Imports happen before the clock starts, the same for every contender; the clock stops when N
records have been handed to the processing. CPU is the whole process (all threads). Each
contender reports the records it actually saw; the harness fails on any other count than N.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

# ours' processor adds to this (it is imported as bench.contenders by the loader).
COUNTED = 0


async def count(records: list[Any], ctx: Any) -> None:
    global COUNTED  # noqa: PLW0603 - the one number this process reports
    COUNTED += len(records)


def _session(raw_timestamps: bool) -> Any:
    import aioboto3

    if not raw_timestamps:
        return aioboto3.Session(region_name="us-east-1")
    from aiobotocore.session import AioSession

    core = AioSession()
    # The one line: ApproximateArrivalTimestamp stays the number the JSON carries.
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=float)
    return aioboto3.Session(botocore_session=core, region_name="us-east-1")


async def bare(url: str, stream: str, n: int, *, raw: bool, kpl: bool) -> int:
    """One task per shard, GetRecords until caught up."""
    if kpl:
        from aws_kinesis_agg.deaggregator import iter_deaggregate_records
    async with _session(raw).client("kinesis", endpoint_url=url) as k:
        shards = (await k.list_shards(StreamName=stream))["Shards"]

        async def drain(shard_id: str) -> int:
            it = (
                await k.get_shard_iterator(
                    StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )
            )["ShardIterator"]
            count = 0
            while it:
                resp = await k.get_records(ShardIterator=it, Limit=10000)
                records = resp["Records"]
                if kpl:
                    for user in iter_deaggregate_records(records, data_format="Boto3"):
                        user["kinesis"]["data"]
                        count += 1
                else:
                    for record in records:
                        record["Data"]
                    count += len(records)
                if not records and not resp.get("MillisBehindLatest"):
                    break
                it = resp.get("NextShardIterator")
            return count

        counts = await asyncio.gather(*(drain(s["ShardId"]) for s in shards))
    return sum(counts)


async def async_kinesis(url: str, stream: str, n: int, *, kpl: bool) -> int:
    from kinesis import Consumer
    from kinesis.processors import KPLStringProcessor, StringProcessor

    count = 0
    async with Consumer(
        stream,
        endpoint_url=url,
        region_name="us-east-1",
        processor=KPLStringProcessor() if kpl else StringProcessor(),
        shard_fetch_rate=5,  # the Kinesis limit; its default of 1 would handicap it
        iterator_type="TRIM_HORIZON",
    ) as consumer:
        # Its iteration ends after idle_timeout without records; its README loops around it.
        deadline = time.monotonic() + 300
        while count < n and time.monotonic() < deadline:
            async for _ in consumer:
                count += 1
                if count >= n:
                    break
    return count


def ours(url: str, stream: str, n: int, extra: tuple[str, ...] = ()) -> int:
    """The real headless program; its processor counts what it is handed."""
    from console.cli import commands as cli

    with tempfile.TemporaryDirectory() as tmp:
        rc = cli.main(
            [
                "run",
                stream,
                "--endpoint-url",
                url,
                "--db",
                os.path.join(tmp, "c.db"),
                "--max-records",
                str(n),
                "--processor",
                "bench.contenders:count",
                "--no-ui",
                "--status-interval",
                "3600",
                *extra,
            ]
        )
    assert rc == 0, rc
    return int(sys.modules["bench.contenders"].COUNTED)


def main() -> None:
    name, url, stream, n_text = sys.argv[1:5]
    kpl = "--kpl" in sys.argv[5:]
    n = int(n_text)
    # Warm the imports outside the clock, for everyone alike.
    import aioboto3  # noqa: F401
    import aiosqlite  # noqa: F401

    if kpl:
        import aws_kinesis_agg.deaggregator  # noqa: F401
    if name in ("ours", "ours-botocore", "ours-metrics"):
        import console.checkpoints.sqlite
        import console.cli.commands
        import console.cli.launch
        import console.cli.wiring
        import console.engine.consume.consumer
        import console.headless
        import console.sources.kinesis  # noqa: F401
    elif name == "async-kinesis":
        import kinesis  # noqa: F401
    wall0, cpu0 = time.perf_counter(), time.process_time()
    scraper = None
    if name == "ours" and "--profile" in sys.argv:
        import cProfile

        profiler = cProfile.Profile()
        count = profiler.runcall(ours, url, stream, n)
        profiler.dump_stats(sys.argv[sys.argv.index("--profile") + 1])
    elif name == "ours":
        count = ours(url, stream, n)
    elif name == "ours-botocore":
        count = ours(url, stream, n, ("--read-path", "botocore"))
    elif name == "ours-metrics":
        port = _free_port()
        # Prometheus' part, in a process of its own: GET /metrics every second, parsed there.
        scraper = subprocess.Popen(
            [sys.executable, "-m", "bench.scrape", f"http://127.0.0.1:{port}/metrics", "1.0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            count = ours(url, stream, n, ("--metrics-port", str(port)))
        except BaseException:
            scraper.kill()
            raise
    elif name in ("bare", "bare-raw"):
        count = asyncio.run(bare(url, stream, n, raw=name == "bare-raw", kpl=kpl))
    elif name == "async-kinesis":
        count = asyncio.run(async_kinesis(url, stream, n, kpl=kpl))
    else:
        raise SystemExit(f"unknown contender {name}")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    figures: dict[str, Any] = {"contender": name, "records": count, "wall": wall, "cpu": cpu}
    if scraper is not None:
        scraper.terminate()
        out, _ = scraper.communicate(timeout=30)
        figures["scrapes"] = int(out.split()[-1])
    print(json.dumps(figures))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
