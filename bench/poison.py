"""P14: poison records parked instead of blocking (issue 27).

    python -m bench.poison [--records 100000] [--every 10000] [--shards 4] [--runs 3]
                           [--retries 3] [--records-per-call N]

One kinesalite stream of N x 100 B records in which every ``--every``-th is a poison record
(its data says so). Two contenders drain it in processes of their own, alternating, each the
real headless program with ``--on-failure park --retries R``:

* ``clean``: a processor that looks at every record it is handed for the poison mark and fails
  on nothing (the same drain with no poison record: the baseline);
* ``poison``: the same processor, failing every batch that holds a poison record (not naming
  it: the worst case, bisection finds it).

Figures: records per CPU-second, poison against clean (target >= 0.95x); and, for each poison
record, the time from the first failure of a batch holding it to the next record of its shard
processed (target <= the retries' backoff + 1 s: R attempts wait R - 1 times, each a random
fraction of 0.2 s x 2^k, full jitter; the bound printed is the sum of those ceilings + 1 s).
Each contender is stopped (SIGTERM, as an operator stops it) once its processor has processed
every record it can: N, or N minus the poison ones; the clock stops when the program exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.drain import create_active
from bench.kinesalite import ROOT, kinesalite
from bench.report import result

MARK = b"POISON"
# What the contender's processor saw (it is imported as bench.poison by the loader).
SEEN = {"records": 0, "poison_failures": 0}
FIRST_FAILED: dict[str, tuple[int, float]] = {}  # shard -> (poison sequence, first failure)
DELAYS: list[float] = []


async def process(records: list[Any], ctx: Any) -> None:
    """Both contenders look at every record (the poison one fails a batch holding a marked
    one), so they differ only in what a failure costs."""
    now = time.perf_counter()
    fails = os.environ.get("BENCH_POISON") == "1"
    for r in records:
        if r.data.startswith(MARK) and fails:
            SEEN["poison_failures"] += 1
            seq = int(r.sequence_number)
            if FIRST_FAILED.get(ctx.shard_id, (0, 0.0))[0] != seq:
                FIRST_FAILED[ctx.shard_id] = (seq, now)
            raise ValueError("poison record")
    pending = FIRST_FAILED.get(ctx.shard_id)
    if pending is not None and int(records[-1].sequence_number) > pending[0]:
        DELAYS.append(now - pending[1])  # (in order: the last is past it if any is)
        del FIRST_FAILED[ctx.shard_id]
    SEEN["records"] += len(records)
    if SEEN["records"] >= int(os.environ["BENCH_TARGET"]) and not SEEN.get("told"):
        SEEN["told"] = 1  # every record processed: stop as an operator would (SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)


async def fill(url: str, stream: str, shards: int, n: int, every: int) -> None:
    import aioboto3

    async with aioboto3.Session(region_name="us-east-1").client("kinesis", endpoint_url=url) as k:
        await create_active(k, stream, shards)
        sem = asyncio.Semaphore(8)

        def body(i: int) -> bytes:
            head = MARK if i % every == every // 2 else b"{"  # mid-stream: records follow
            return (head + f'"i": {i}'.encode()).ljust(100, b" ")

        async def put(batch: list[dict[str, object]]) -> None:
            async with sem:
                resp = await k.put_records(StreamName=stream, Records=batch)
            assert resp.get("FailedRecordCount", 0) == 0

        # 997 keys: the poison records (every --every-th) land on different shards.
        entries = [{"PartitionKey": f"key-{i % 997}", "Data": body(i)} for i in range(n)]
        await asyncio.gather(*(put(entries[i : i + 500]) for i in range(0, n, 500)))


def contender(
    mode: str, url: str, stream: str, n: int, retries: int, target: int, per_call: int
) -> None:
    """In a process of its own: the real program, timed, stopped (SIGTERM) once ``target``
    records are processed; figures as JSON on stdout."""
    os.environ["BENCH_POISON"] = "1" if mode == "poison" else "0"
    os.environ["BENCH_TARGET"] = str(target)
    import console.cli.commands as cli
    import console.cli.wiring
    import console.engine.consume.consumer  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        rc = cli.main([
            "run", stream, "--endpoint-url", url, "--db", os.path.join(tmp, "c.db"),
            "--processor", "bench.poison:process", "--no-ui",
            "--status-interval", "3600", "--on-failure", "park", "--retries", str(retries),
            *(["--records-per-call", str(per_call)] if per_call else []),
        ])  # fmt: skip
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    mine = sys.modules["bench.poison"]
    print(json.dumps({
        "rc": rc, "wall": wall, "cpu": cpu, "records": mine.SEEN["records"],
        "failures": mine.SEEN["poison_failures"], "delays": mine.DELAYS,
    }))  # fmt: skip


def run_one(
    mode: str, url: str, stream: str, n: int, retries: int, target: int, per_call: int
) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.poison", "--contender", mode, url, stream, str(n),
         str(retries), str(target), str(per_call)],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=900,
        env={**os.environ, "SHARD_CONSOLE_LOG_FORMAT": "text"},
    )  # fmt: skip
    figures = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {}
    if out.returncode != 0 or figures.get("rc") != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    return dict(figures)


def backoff_bound(retries: int, base: float = 0.2, cap: float = 30.0) -> float:
    """The longest ``retries`` attempts can wait: the ceilings of the waits between them
    (console.engine.retry.Backoff); bisection's deliveries that follow do not wait."""
    return sum(min(cap, base * 2**i) for i in range(max(0, retries - 1)))


def main() -> None:
    if sys.argv[1:2] == ["--contender"]:
        mode, url, stream, n, retries, target, per_call = sys.argv[2:9]
        contender(mode, url, stream, int(n), int(retries), int(target), int(per_call))
        return
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--records-per-call", type=int, default=0,
                        help="GetRecords' limit (default: the service's 10,000)")  # fmt: skip
    args = parser.parse_args()
    n, poisons = args.records, args.records // args.every
    with kinesalite() as url:
        stream = "poison"
        asyncio.run(fill(url, stream, args.shards, n, args.every))
        print(f"filled {n} x 100 B into {args.shards} shards, {poisons} poison records")
        runs: dict[str, list[dict[str, Any]]] = {"clean": [], "poison": []}
        for run in range(args.runs):
            for mode in ("clean", "poison") if run % 2 == 0 else ("poison", "clean"):
                target = n - poisons if mode == "poison" else n
                r = run_one(mode, url, stream, n, args.retries, target, args.records_per_call)
                runs[mode].append(r)
                worst = max(r["delays"], default=0.0)
                print(f"run {run + 1} {mode:<6} wall {r['wall']:6.2f} s  cpu {r['cpu']:6.2f} s  "
                      f"{n / r['cpu']:8.0f} rec/cpu-s  processed {r['records']}  "
                      f"poison failures {r['failures']}  worst delay {worst:.2f} s")  # fmt: skip
    for r in runs["poison"]:
        if r["records"] != n - poisons or len(r["delays"]) != poisons:
            raise SystemExit(f"poison run processed {r['records']} ({len(r['delays'])} delays)")
    for r in runs["clean"]:
        if r["records"] != n:
            raise SystemExit(f"clean run processed {r['records']}, not {n}")
    cpu = {m: statistics.median(r["cpu"] for r in rs) for m, rs in runs.items()}
    ratio = cpu["clean"] / cpu["poison"]
    delays = sorted(d for r in runs["poison"] for d in r["delays"])
    worst, median = delays[-1], statistics.median(delays)
    bound = backoff_bound(args.retries) + 1.0
    print(f"\ncommand: python -m bench.poison {' '.join(sys.argv[1:])}")
    print(f"records per CPU-second, poison vs clean: {ratio:.3f}x (medians of {args.runs})")
    print(f"poison to its shard's next record: median {median:.2f} s, worst {worst:.2f} s "
          f"(bound {bound:.2f} s)")  # fmt: skip
    what = f"drain {n:,} x 100 B, 1 poison record in every {args.every:,}, --retries {args.retries}"
    if args.records_per_call:
        what += f", --records-per-call {args.records_per_call:,}"
    result("P14", f"{what}: records per CPU-second vs the same drain with none", f"{ratio:.2f}x",
           ">= 0.95x", ratio >= 0.95)  # fmt: skip
    result("P14", f"{what}: a poison record to its shard's next record processed (worst; "
           f"median {median:.2f} s)", f"{worst:.2f} s", f"<= {bound:.1f} s", worst <= bound)  # fmt: skip


if __name__ == "__main__":
    main()
