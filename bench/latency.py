"""P12: put-to-processor latency, polling against enhanced fan-out, on the same emulator.

    python -m bench.latency [--seconds 30] [--rate 100] [--shards 4] [--runs 2]

kinesis-mock (npm kinesis-local 0.6.2, the one local emulator with SubscribeToShard) behind the
test suite's shim (tests/efo_shim.py: it adds the initial-response event botocore needs). A
producer puts ``--rate`` records a second, one PutRecord each, spread over the shards; each
record carries the wall time its put was sent. The real engine (Consumer, SQLite checkpoints)
reads them, and its processor notes, per record, the time it was handed the record. Latency is
the difference: put sent to processor called.

Contenders, alternating within each run:
* ``polling``: GetRecords, the default idle interval (1 s between calls once caught up);
* ``polling-0.2``: GetRecords at the Kinesis limit (5 calls a second, ``--idle-interval 0.2``),
  the best a polling consumer can do;
* ``fan-out``: SubscribeToShard (``--fan-out``).

The emulator decides much: kinesis-mock pushes an event once a second (measured), where AWS
pushes within about 70 ms of the put, and its GetRecords answers at once. So on it fan-out's
latency is its one-second tick, not AWS's. Read the figures with that in mind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from bench.drain import create_active
from bench.report import result
from console.checkpoints.sqlite import SqliteStore
from console.engine.consume.consumer import Consumer, ConsumerOptions
from console.model import Record, ShardContext
from console.processors.base import Processor
from console.sources.aws import AwsSettings
from console.sources.kinesis import KinesisSource
from tests.conftest import KINESIS_MOCK, _install
from tests.efo_shim import EfoShim
from tests.servers import node_server

CONTENDERS = ("polling", "polling-0.2", "fan-out")


class Stamps(Processor):
    name = "latency"

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.handed: dict[str, float] = {}  # sequence number: when the processor had it

    async def process(self, records: list[Record], ctx: ShardContext) -> None:
        now = time.time()
        self.latencies.extend(now - float(r.data) for r in records)
        for r in records:
            self.handed[r.sequence_number] = now


def options(name: str) -> ConsumerOptions:
    base = ConsumerOptions(initial_position=ConsumerOptions().initial_position)
    if name == "polling-0.2":
        return dataclasses.replace(base, idle_interval=0.2)
    if name == "fan-out":
        return dataclasses.replace(base, fan_out="bench-latency")
    return base


async def produce(url: str, stream: str, rate: float, seconds: float) -> int:
    import aioboto3

    sent = 0
    async with aioboto3.Session(region_name="us-east-1").client("kinesis", endpoint_url=url) as k:
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            due = start + sent / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await k.put_record(
                StreamName=stream,
                PartitionKey=f"k{random.randrange(1_000_000)}",
                Data=repr(time.time()).encode(),
            )
            sent += 1
    return sent


async def one(
    shim: EfoShim, name: str, shards: int, rate: float, seconds: float
) -> tuple[list[float], list[float]]:
    """The latencies, and (fan-out) the part of each from its event leaving the shim to the
    processor: ours alone, without the emulator's tick."""
    url = shim.url
    import aioboto3

    stream = f"latency-{name}-{random.randrange(10**9)}"
    async with aioboto3.Session(region_name="us-east-1").client("kinesis", endpoint_url=url) as k:
        await create_active(k, stream, shards)
    processor = Stamps()
    before = len(shim.subscribed)
    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(os.path.join(tmp, "c.db"))
        settings = AwsSettings(region="us-east-1", endpoint_url=url)
        try:
            async with (
                KinesisSource(stream, settings) as source,
                Consumer(source, store, processor, options(name)) as consumer,
            ):
                # Every shard read once (polling) or subscribed (fan-out) before the first put.
                def reading() -> bool:
                    if name == "fan-out":
                        return len(shim.subscribed) - before >= shards
                    return consumer.state.get_records_calls >= shards

                while not reading():
                    await asyncio.sleep(0.05)
                sent = await produce(url, stream, rate, seconds)
                deadline = time.monotonic() + 30
                while len(processor.latencies) < sent and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
        finally:
            await store.close()
    if len(processor.latencies) != sent:
        raise SystemExit(f"{name}: processed {len(processor.latencies)} of {sent} records")
    ours = [t - shim.sent_at[seq] for seq, t in processor.handed.items() if seq in shim.sent_at]
    if name == "fan-out" and len(ours) != sent:
        raise SystemExit(f"fan-out: {len(ours)} of {sent} records seen passing the shim")
    return processor.latencies, ours


@contextlib.contextmanager
def endpoint() -> Iterator[EfoShim]:
    _install(KINESIS_MOCK, "kinesis-local")
    with node_server(KINESIS_MOCK / "start.js", "0") as upstream:
        shim = EfoShim(upstream)
        shim.start()
        try:
            yield shim
        finally:
            shim.stop()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    found: dict[str, list[float]] = {c: [] for c in CONTENDERS}
    ours: list[float] = []
    with endpoint() as shim:
        for run in range(args.runs):
            order = CONTENDERS[run % 3 :] + CONTENDERS[: run % 3]
            for name in order:
                got, mine = asyncio.run(one(shim, name, args.shards, args.rate, args.seconds))
                found[name] += got
                if name == "fan-out":
                    ours += mine
                print(
                    f"run {run + 1} {name:<12} {len(got):6d} records  median "
                    f"{statistics.median(got) * 1000:7.1f} ms  p99 {pct(got, 0.99) * 1000:7.1f} ms"
                )
    print(f"\ncommand: python -m bench.latency --seconds {args.seconds:g} --rate {args.rate:g} "
          f"--shards {args.shards} --runs {args.runs}")  # fmt: skip
    what = f"put-to-processor latency at {args.rate:g} records/s on {args.shards} shards"
    for name in CONTENDERS:
        values: Any = found[name]
        med, p99 = statistics.median(values) * 1000, pct(values, 0.99) * 1000
        print(f"{name:<12} {len(values):6d} records  median {med:7.1f} ms  p99 {p99:7.1f} ms")
        result("P12", f"{what}, {name} (kinesis-mock; median, p99)", f"{med:.0f} ms, {p99:.0f} ms",
               "", True)  # fmt: skip
    med, p99 = statistics.median(ours) * 1000, pct(ours, 0.99) * 1000
    print(f"fan-out, from the event leaving the shim to the processor: median {med:.1f} ms, "
          f"p99 {p99:.1f} ms")  # fmt: skip
    result("P12", f"{what}, fan-out: event passed on to processor called (ours alone; median, p99)",
           f"{med:.1f} ms, {p99:.1f} ms", "", True)  # fmt: skip


if __name__ == "__main__":
    main()
