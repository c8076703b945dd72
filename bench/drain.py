"""P1: drain a backlog from a kinesalite stream; ours against a bare aioboto3 loop and
async-kinesis 3.0.1, in the same run, on the same data.

    python -m bench.drain [--records 100000] [--size 100] [--shards 4] [--runs 3]

Targets (issue: foundation): wall-clock throughput >= 1.0x the bare loop; records per consumer
CPU-second >= 0.9x the bare loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.kinesalite import ROOT, kinesalite
from bench.report import result

CONTENDERS = ("ours", "bare", "async-kinesis")


async def fill(url: str, stream: str, shards: int, records: int, size: int) -> float:
    import aioboto3

    t0 = time.perf_counter()
    async with aioboto3.Session(region_name="us-east-1").client("kinesis", endpoint_url=url) as k:
        await k.create_stream(StreamName=stream, ShardCount=shards)
        while (await k.describe_stream_summary(StreamName=stream))["StreamDescriptionSummary"][
            "StreamStatus"
        ] != "ACTIVE":
            await asyncio.sleep(0.05)
        sem = asyncio.Semaphore(8)

        async def put(start: int) -> None:
            batch = []
            for i in range(start, min(start + 500, records)):
                body = json.dumps({"i": i, "pad": ""}).encode()
                body = body[:-2] + b"x" * (size - len(body)) + b'"}'
                batch.append({"PartitionKey": f"key-{i % 1000}", "Data": body})
            async with sem:
                resp = await k.put_records(StreamName=stream, Records=batch)
            assert resp.get("FailedRecordCount", 0) == 0

        await asyncio.gather(*(put(s) for s in range(0, records, 500)))
    return time.perf_counter() - t0


def run_one(name: str, url: str, stream: str, records: int) -> dict[str, float]:
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, "-m", "bench.contenders", name, url, stream, str(records)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["records"] < records:
        raise SystemExit(f"{name} read {result['records']} of {records} records")
    return result


def main() -> None:
    # Dummy credentials for the loopback emulator; never a user's real ones.
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    command = "python -m bench.drain " + " ".join(sys.argv[1:])
    with kinesalite() as url:
        stream = "bench"
        fill_s = asyncio.run(fill(url, stream, args.shards, args.records, args.size))
        print(f"filled {args.records} x {args.size} B into {args.shards} shards in {fill_s:.1f} s")
        results: dict[str, list[dict[str, float]]] = {c: [] for c in CONTENDERS}
        for run in range(args.runs):
            order = (
                CONTENDERS[run % 3 :] + CONTENDERS[: run % 3]
            )  # rotate: no contender always first
            for name in order:
                r = run_one(name, url, stream, args.records)
                results[name].append(r)
                print(
                    f"run {run + 1} {name:<14} wall {r['wall']:6.2f} s  cpu {r['cpu']:6.2f} s  "
                    f"{args.records / r['wall']:8.0f} rec/s  {args.records / r['cpu']:8.0f} rec/cpu-s"
                )
    med = {
        c: {
            "wall": statistics.median(r["wall"] for r in rs),
            "cpu": statistics.median(r["cpu"] for r in rs),
        }
        for c, rs in results.items()
    }
    n = args.records
    print()
    print(f"command: {command}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"{'contender':<14} {'wall s':>7} {'cpu s':>7} {'rec/s':>9} {'rec/cpu-s':>10}   (medians of {args.runs})"
    )
    for c in CONTENDERS:
        m = med[c]
        print(f"{c:<14} {m['wall']:7.2f} {m['cpu']:7.2f} {n / m['wall']:9.0f} {n / m['cpu']:10.0f}")
    bare = med["bare"]
    ak = med["async-kinesis"]
    ours = med["ours"]
    print(
        f"ours / bare: throughput {bare['wall'] / ours['wall']:.2f}x (target >= 1.0), "
        f"records per CPU-second {bare['cpu'] / ours['cpu']:.2f}x (target >= 0.9)"
    )
    print(
        f"ours / async-kinesis: throughput {ak['wall'] / ours['wall']:.2f}x, "
        f"records per CPU-second {ak['cpu'] / ours['cpu']:.2f}x"
    )
    what = f"drain {n:,} x {args.size} B from {args.shards} kinesalite shards"
    wall, cpu = bare["wall"] / ours["wall"], bare["cpu"] / ours["cpu"]
    result("P1", f"{what}: throughput vs bare aioboto3", f"{wall:.2f}x", ">= 1.0x", wall >= 1.0)
    result("P1", f"{what}: records per CPU-second vs bare", f"{cpu:.2f}x", ">= 0.9x", cpu >= 0.9)
    vs_ak = ak["cpu"] / ours["cpu"]
    result(
        "P1",
        f"{what}: records per CPU-second vs async-kinesis 3.0.1",
        f"{vs_ak:.2f}x",
        ">= 1.5x",
        vs_ak >= 1.5,
    )
    Path(ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "drain.json").write_text(
        json.dumps({"command": command, "results": results}, indent=1)
    )


if __name__ == "__main__":
    main()
