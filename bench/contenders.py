"""One contender drains N records in a process of its own and prints its figures as JSON.

    python -m bench.contenders ours|bare|async-kinesis URL STREAM N

Imports happen before the clock starts, the same for every contender; the clock stops when N
records have been handed to the (null) processing. CPU is the whole process (all threads).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time


async def bare(url: str, stream: str, n: int) -> int:
    """What a person writes first: one task per shard, GetRecords until caught up."""
    import aioboto3

    session = aioboto3.Session(region_name="us-east-1")
    async with session.client("kinesis", endpoint_url=url) as k:
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
                for record in records:
                    record["Data"]
                count += len(records)
                if not records and not resp.get("MillisBehindLatest"):
                    break
                it = resp.get("NextShardIterator")
            return count

        counts = await asyncio.gather(*(drain(s["ShardId"]) for s in shards))
    return sum(counts)


async def async_kinesis(url: str, stream: str, n: int) -> int:
    from kinesis import Consumer
    from kinesis.processors import StringProcessor

    count = 0
    async with Consumer(
        stream,
        endpoint_url=url,
        region_name="us-east-1",
        processor=StringProcessor(),
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


def ours(url: str, stream: str, n: int) -> int:
    """The real headless program: argument parsing, probe, SQLite checkpoints, null processor."""
    from console import cli

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
                "--no-ui",
                "--status-interval",
                "3600",
            ]
        )
    assert rc == 0, rc
    return n


def main() -> None:
    name, url, stream, n_text = sys.argv[1:5]
    n = int(n_text)
    # Warm the imports outside the clock, for everyone alike.
    import aioboto3  # noqa: F401
    import aiosqlite  # noqa: F401

    if name == "ours":
        import console.checkpoints.sqlite
        import console.cli
        import console.engine.consumer
        import console.headless
        import console.sources.kinesis  # noqa: F401
    elif name == "async-kinesis":
        import kinesis  # noqa: F401
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if name == "ours":
        count = ours(url, stream, n)
    elif name == "bare":
        count = asyncio.run(bare(url, stream, n))
    elif name == "async-kinesis":
        count = asyncio.run(async_kinesis(url, stream, n))
    else:
        raise SystemExit(f"unknown contender {name}")
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(json.dumps({"contender": name, "records": count, "wall": wall, "cpu": cpu}))


if __name__ == "__main__":
    main()
