"""P1: drain a backlog from a kinesalite stream; ours against a bare aioboto3 loop (as written
first, and with botocore's timestamp parser off) and async-kinesis 3.0.1, in the same run, on
the same data (bench/contenders.py says what each is).

    python -m bench.drain [--records 100000] [--size 100] [--shards 4] [--runs 3] [--kpl]

``--kpl`` fills the stream with KPL-aggregated records (about 200 user records in each), so
deaggregation is measured too; N counts user records.

Targets: against the bare loop (issue: foundation), wall-clock throughput >= 1.0x and records
per consumer CPU-second >= 0.9x; against the tuned bare loop, botocore with raw timestamps
(issue 16, the read path past botocore), throughput >= 1.0x and records per CPU-second >= 2x.
``ours-botocore`` is ours with ``--read-path botocore``: what the read path alone changed. Every
ratio is printed against each contender. A contender that reads any other number of records
than N fails the benchmark.
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
from typing import Any

from bench.kinesalite import ROOT, kinesalite
from bench.report import result

CONTENDERS = ("ours", "ours-botocore", "bare", "bare-raw", "async-kinesis")
KPL_RECORD_BYTES = 25_000  # the aggregated records' size: about 200 user records of 100 B


async def create_active(k: Any, stream: str, shards: int) -> None:
    """Create ``stream`` with ``shards`` shards through client ``k``; return once ACTIVE."""
    await k.create_stream(StreamName=stream, ShardCount=shards)
    while (await k.describe_stream_summary(StreamName=stream))["StreamDescriptionSummary"][
        "StreamStatus"
    ] != "ACTIVE":
        await asyncio.sleep(0.05)


async def fill(
    url: str, stream: str, shards: int, records: int, size: int, kpl: bool = False
) -> float:
    import aioboto3

    t0 = time.perf_counter()
    async with aioboto3.Session(region_name="us-east-1").client("kinesis", endpoint_url=url) as k:
        await create_active(k, stream, shards)
        sem = asyncio.Semaphore(8)

        def body(i: int) -> bytes:
            raw = json.dumps({"i": i, "pad": ""}).encode()
            return raw[:-2] + b"x" * (size - len(raw)) + b'"}'

        async def put(batch: list[dict[str, object]]) -> None:
            async with sem:
                resp = await k.put_records(StreamName=stream, Records=batch)
            assert resp.get("FailedRecordCount", 0) == 0

        if kpl:
            from aws_kinesis_agg.aggregator import RecordAggregator

            aggregates = []
            agg = RecordAggregator(max_size=KPL_RECORD_BYTES)
            for i in range(records):
                full = agg.add_user_record(f"key-{i % 1000}", body(i))
                if full is not None:
                    aggregates.append(full.get_contents())
            if agg.get_num_user_records():
                aggregates.append(agg.clear_and_get().get_contents())
            entries = [
                {"PartitionKey": pk, "Data": data, **({"ExplicitHashKey": ehk} if ehk else {})}
                for pk, ehk, data in aggregates
            ]
            print(f"{records} user records in {len(entries)} aggregated records")
            step = 100  # a PutRecords request stays under 5 MB
        else:
            entries = [{"PartitionKey": f"key-{i % 1000}", "Data": body(i)} for i in range(records)]
            step = 500
        await asyncio.gather(*(put(entries[i : i + step]) for i in range(0, len(entries), step)))
    return time.perf_counter() - t0


def run_one(name: str, url: str, stream: str, records: int, kpl: bool) -> dict[str, float]:
    env = dict(os.environ)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.contenders",
            name,
            url,
            stream,
            str(records),
            *(["--kpl"] if kpl else []),
        ],
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
    if result["records"] != records:
        raise SystemExit(f"{name} counted {result['records']} records, not {records}")
    return result


def main() -> None:
    # Dummy credentials for the loopback emulator; never a user's real ones.
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kpl", action="store_true", help="KPL-aggregated records")
    args = parser.parse_args()
    command = "python -m bench.drain " + " ".join(sys.argv[1:])
    with kinesalite() as url:
        stream = "bench"
        fill_s = asyncio.run(fill(url, stream, args.shards, args.records, args.size, args.kpl))
        print(f"filled {args.records} x {args.size} B into {args.shards} shards in {fill_s:.1f} s")
        results: dict[str, list[dict[str, float]]] = {c: [] for c in CONTENDERS}
        for run in range(args.runs):
            k = run % len(CONTENDERS)
            order = CONTENDERS[k:] + CONTENDERS[:k]  # rotate: no contender always first
            for name in order:
                r = run_one(name, url, stream, args.records, args.kpl)
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
    ours = med["ours"]
    ratios = {
        c: (med[c]["wall"] / ours["wall"], med[c]["cpu"] / ours["cpu"])
        for c in CONTENDERS
        if c != "ours"
    }
    for c, (wall, cpu) in ratios.items():
        print(f"ours vs {c:<14} throughput {wall:.2f}x, records per CPU-second {cpu:.2f}x")
    kind = "KPL-aggregated " if args.kpl else ""
    what = f"drain {n:,} {kind}x {args.size} B from {args.shards} kinesalite shards"
    pid = "P1k" if args.kpl else ("P1" if args.size == 100 else f"P1-{args.size}B")
    for c, label, cpu_target in (
        ("bare", "bare aioboto3", 0.9),
        ("bare-raw", "bare aioboto3 + raw timestamps", 2.0),
        ("ours-botocore", "ours --read-path botocore", None),
    ):
        wall, cpu = ratios[c]
        if cpu_target is None:  # no target: what the read path alone changed
            result(pid, f"{what}: throughput vs {label}", f"{wall:.2f}x", "", True)
            result(pid, f"{what}: records per CPU-second vs {label}", f"{cpu:.2f}x", "", True)
            continue
        result(pid, f"{what}: throughput vs {label}", f"{wall:.2f}x", ">= 1.0x", wall >= 1.0)
        result(
            pid,
            f"{what}: records per CPU-second vs {label}",
            f"{cpu:.2f}x",
            f">= {cpu_target}x",
            cpu >= cpu_target,
        )
    wall, cpu = ratios["async-kinesis"]
    result(
        pid,
        f"{what}: records per CPU-second vs async-kinesis 3.0.1",
        f"{cpu:.2f}x",
        ">= 1.5x",
        cpu >= 1.5,
    )
    Path(ROOT / "bench" / "out").mkdir(exist_ok=True)
    name = (
        "drain-kpl.json"
        if args.kpl
        else ("drain.json" if args.size == 100 else f"drain-{args.size}.json")
    )
    (ROOT / "bench" / "out" / name).write_text(
        json.dumps({"command": command, "results": results}, indent=1)
    )


if __name__ == "__main__":
    main()
