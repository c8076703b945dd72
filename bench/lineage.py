"""P4: lineage and discovery of 10,000 shards (a DynamoDB table's day of roll-overs).

    python -m bench.lineage [--shards 10000] [--runs 7]

One discovery round, as the engine does it, timed in parts:
1. list: DynamoDBSource.list_shards on the default read path (sources/wire.py), 100
   DescribeStream pages (endpoint, signing, the JSON decode, our parse; ``--read-path botocore``
   for botocore's client methods). The pages are answered at the client boundary (the
   before-send event), pre-encoded, so the time is the client's and ours, not an emulator's.
   The heap is settled first, as the program does once started (launch.settle_heap);
2. lineage: Lineage.build over the listing, and which shards are ready when all but the live
   end of each partition is finished;
3. rows: the console's tree rows (finished lines folded).
Target: list + lineage <= 50 ms (median of --runs; issue 16, was 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time

from bench.report import result
from console.cli.launch import settle_heap
from console.engine.lineage import Lineage
from console.engine.state import ShardView
from console.model import ShardStatus
from console.sources.aws import AwsSettings
from console.sources.dynamodb import DynamoDBSource
from console.ui.widgets.shard_table import build_rows
from tests.dynamo_pages import ARN, GeneratedStream


async def one_round(shards: int, read_path: str) -> dict[str, float]:
    generated = GeneratedStream(ARN, shards, partitions=max(1, shards // 250))
    settings = AwsSettings(
        region="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        access_key_id="bench",
        secret_access_key="bench",
        read_path=read_path,
    )
    async with DynamoDBSource(
        ARN, settings, [("before-send.dynamodbstreams", generated.hook)]
    ) as s:
        await s.list_shards()  # warm: the client's first call loads its models
        generated.pages.clear()
        settle_heap()  # as the program does once started
        t0 = time.perf_counter()
        listing = await s.list_shards()
        t1 = time.perf_counter()
    t1 = time.perf_counter()  # the client's close is not discovery's
    lineage = Lineage.build(listing)
    live = {sid for sid in lineage.shards if not lineage.children.get(sid)}
    finished = set(lineage.shards) - live
    ready = lineage.ready(finished)
    t2 = time.perf_counter()
    views = {
        sid: ShardView(sid, status=ShardStatus.ACTIVE if sid in live else ShardStatus.DONE)
        for sid in lineage.shards
    }
    t3 = time.perf_counter()
    rows = build_rows(lineage, views)
    t4 = time.perf_counter()
    assert len(listing) == shards and len(generated.pages) == -(-shards // 100)
    assert set(ready) == live, "the live ends are ready, nothing else"
    assert len(rows) == 2 * len(live)
    return {"list": t1 - t0, "lineage": t2 - t1, "rows": t4 - t3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--read-path", choices=("fast", "botocore"), default="fast")
    args = parser.parse_args()
    runs = [asyncio.run(one_round(args.shards, args.read_path)) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) * 1000 for k in runs[0]}
    total = med["list"] + med["lineage"]
    print(f"P4 lineage and discovery, {args.shards} shards, {args.runs} runs")
    print(f"python {sys.version.split()[0]} on {platform.platform()}")
    print(f"  list (100 a page, {args.read_path} read path): median {med['list']:.1f} ms")
    print(f"  lineage + readiness:                   median {med['lineage']:.1f} ms")
    print(f"  list + lineage:                        {total:.1f} ms (target <= 50 ms)")
    print(f"  console rows (folded):                 median {med['rows']:.1f} ms")
    result(
        "P4",
        f"lineage and discovery of {args.shards:,} DynamoDB shards ({med['list']:.0f} ms of it "
        f"100 DescribeStream pages, {args.read_path} read path)",
        f"{total:.0f} ms",
        "<= 50 ms",
        total <= 50,
    )


if __name__ == "__main__":
    main()
