"""P3: the console at 1,000 shards, and what it costs the consumer.

    python -m bench.ui [--shards 1000] [--seconds 10] [--records 100000] [--runs 3]

1. Refresh: 1,000 shards whose lag changes every 250 ms (every row's version moves), the
   console polling at 4 Hz in Textual's headless driver (it lays out and renders frames, it
   only skips writing them to a terminal). Reported: our tick (diff the snapshot, refresh the
   changed visible rows, header, events) and the whole process CPU per 250 ms cycle, which
   includes Textual composing and rendering. Target: median refresh <= 50 ms.
2. Throughput: drain the same kinesalite backlog headless and with the console on, alternating,
   medians of --runs. Target: with the UI >= 0.9x headless.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time

from bench.drain import fill
from bench.kinesalite import kinesalite
from bench.report import result
from console.engine.changes.plan import ControlRequest, Plan, plan_change
from console.engine.events import EventLog
from console.engine.lineage import Lineage
from console.engine.state import EngineState, LeaseInfo
from console.model import HistoryEntry, Position, Shard, ShardStatus


class SyntheticEngine:
    """1,000 shards in a real EngineState, their lag moving like a busy stream's."""

    def __init__(self, shards: int, workers: int = 0) -> None:
        self.read_only = False
        self.failure = None
        self.stopped = asyncio.Event()
        self.events = EventLog()
        self.state = EngineState("big", "kinesis", "eu-west-1")
        roots = shards // 2
        listing = [Shard(f"shardId-{i:012d}", ending_sequence_number="9") for i in range(roots)]
        listing += [
            Shard(f"shardId-{roots + i:012d}", parent_id=f"shardId-{i:012d}")
            for i in range(shards - roots)
        ]
        self.lineage = Lineage.build(listing)
        self.state.set_lineage(self.lineage)
        for shard in listing:
            self.state.update(
                shard.shard_id,
                parents=shard.parents,
                status=ShardStatus.DONE if shard.is_closed else ShardStatus.ACTIVE,
                checkpoint=Position.after_sequence("49" + "0" * 50),
                checkpoint_at=time.time(),
            )
        if workers:  # fleet mode: the open shards' leases spread over the workers
            self.state.set_watch(worker_id="worker-0")
            active = [v for v in self.state.shards.values() if v.status is ShardStatus.ACTIVE]
            for i, view in enumerate(active):
                self.state.update(view.shard_id, lease=LeaseInfo(f"worker-{i % workers}", i))

    async def churn(self, period: float) -> None:
        rng = random.Random(1)
        ids = [v.shard_id for v in self.state.shards.values() if v.status is ShardStatus.ACTIVE]
        update = self.state.update
        while True:
            for sid in ids:
                update(sid, lag_ms=rng.randrange(0, 5000), rate=rng.uniform(0, 500))
            await asyncio.sleep(period)

    async def control(self, request: ControlRequest) -> object:
        raise RuntimeError("not in a benchmark")

    async def preview(self, request: ControlRequest) -> Plan:
        return plan_change(
            request,
            checkpoints={},
            lineage=self.lineage,
            default_position=lambda sid: Position.trim_horizon(),
            now=time.time(),
        )

    async def history(self, shard_id: str | None = None, limit: int = 50) -> list[HistoryEntry]:
        return []

    def request_stop(self, reason: str | None = None) -> None:
        self.stopped.set()

    async def run(self, duration: float | None = None) -> None:
        await self.stopped.wait()


async def refresh_bench(shards: int, seconds: float, workers: int = 0) -> dict[str, float]:
    """``workers``: fleet mode, the leases spread over that many workers (an owner column)."""
    from console.ui.app import ShardConsoleApp

    engine = SyntheticEngine(shards, workers)
    app = ShardConsoleApp(engine, refresh_rate=4, run_engine=False, sample_every=1.0)
    cycles: list[float] = []
    async with app.run_test(size=(160, 50)) as pilot:
        churn = asyncio.create_task(engine.churn(0.25))
        await pilot.pause(1.0)
        app.tick_seconds.clear()
        renders0 = app.dashboard.table.renders
        end = time.monotonic() + seconds
        last = time.process_time()
        while time.monotonic() < end:
            await asyncio.sleep(0.25)
            now = time.process_time()
            cycles.append(now - last)
            last = now
        churn.cancel()
        renders = app.dashboard.table.renders - renders0
        ticks = list(app.tick_seconds)
    return {
        "tick_median_ms": statistics.median(ticks) * 1000,
        "tick_p95_ms": sorted(ticks)[int(len(ticks) * 0.95)] * 1000,
        "cycle_cpu_median_ms": statistics.median(cycles) * 1000,
        "cycle_cpu_p95_ms": sorted(cycles)[int(len(cycles) * 0.95)] * 1000,
        "ticks": len(ticks),
        "rows_rendered_per_tick": renders / max(1, len(ticks)),
    }


async def drain_once(url: str, stream: str, records: int, with_ui: bool) -> float:
    from console.checkpoints.sqlite import SqliteStore
    from console.engine.consume.consumer import Consumer, ConsumerOptions
    from console.processors.builtin import NullProcessor
    from console.sources.aws import AwsSettings
    from console.sources.kinesis import KinesisSource
    from console.ui.app import ShardConsoleApp

    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(os.path.join(tmp, "c.db"))
        settings = AwsSettings(region="us-east-1", endpoint_url=url)
        async with KinesisSource(stream, settings) as source:
            consumer = Consumer(
                source, store, NullProcessor(), ConsumerOptions(max_records=records)
            )
            t0 = time.perf_counter()
            await consumer.start()
            if with_ui:
                app = ShardConsoleApp(consumer, refresh_rate=4)
                await app.run_async(headless=True, size=(160, 50))
            else:
                await consumer.run()
            wall = time.perf_counter() - t0
            await consumer.stop()
        await store.close()
    assert consumer.state.records_total == records, consumer.state.records_total
    return wall


def main() -> None:
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"command: python -m bench.ui {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    r = asyncio.run(refresh_bench(args.shards, args.seconds))
    print(
        f"refresh at {args.shards} shards, lag changing every 250 ms, 4 Hz, {r['ticks']} ticks: "
        f"tick median {r['tick_median_ms']:.2f} ms (p95 {r['tick_p95_ms']:.2f}); whole process "
        f"CPU per 250 ms cycle median {r['cycle_cpu_median_ms']:.1f} ms (p95 "
        f"{r['cycle_cpu_p95_ms']:.1f}); {r['rows_rendered_per_tick']:.0f} rows rendered per tick "
        "(target: median refresh <= 50 ms)"
    )
    with kinesalite() as url:
        asyncio.run(fill(url, "uibench", 4, args.records, 100))
        plain, ui = [], []
        for _ in range(args.runs):
            plain.append(asyncio.run(drain_once(url, "uibench", args.records, False)))
            ui.append(asyncio.run(drain_once(url, "uibench", args.records, True)))
            print(f"  headless {plain[-1]:.2f} s, with the console {ui[-1]:.2f} s")
    p, u = statistics.median(plain), statistics.median(ui)
    print(
        f"drain {args.records} x 100 B, 4 shards: headless {args.records / p:.0f} rec/s, with the "
        f"console {args.records / u:.0f} rec/s: {p / u:.2f}x (target >= 0.9)"
    )
    tick = r["tick_median_ms"]
    result(
        "P3",
        f"console refresh at {args.shards} shards, every row changing (median tick; "
        f"whole-process CPU per cycle {r['cycle_cpu_median_ms']:.1f} ms)",
        f"{tick:.1f} ms",
        "<= 50 ms",
        tick <= 50,
    )
    result(
        "P3",
        f"drain {args.records:,} x 100 B with the console vs headless",
        f"{p / u:.2f}x",
        ">= 0.9x",
        p / u >= 0.9,
    )


if __name__ == "__main__":
    main()
