"""start() and stop() against each other. A stop at any await point of start gives back all
that start took: the stream's lock, the processor, every task; and start returns, stopped.

The store and the source are the real ones on the embedded endpoint, observed: each awaited
call first passes a gate that, at the chosen call, stops the consumer (stop() from another
task, or request_stop() as a signal handler does) and then yields to it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from console.checkpoints.sqlite import SqliteStore
from console.engine.consumer import Consumer, ConsumerStatus
from console.model import Record, ShardContext
from console.processors.base import Processor
from console.sources.kinesis import KinesisSource
from tests.conftest import FAST, aws, wait_for

STREAM = "s"
ARN = f"arn:aws:kinesis:us-east-1:000000000000:stream/{STREAM}"
LOOPS = {"discovery", "checkpoint flush", "rates", "operator commands", "consumer start"}


class Gate:
    """At its ``stop_at``-th passage, stops the consumer; every passage is an await point."""

    def __init__(self, stop_at: int, how: str) -> None:
        self.stop_at = stop_at
        self.how = how
        self.passed: list[str] = []
        self.consumer: Consumer | None = None
        self.stopper: asyncio.Task[None] | None = None

    async def __call__(self, name: str) -> None:
        if len(self.passed) == self.stop_at and self.consumer is not None:
            if self.how == "stop":
                self.stopper = asyncio.create_task(self.consumer.stop())
            else:
                self.consumer.request_stop("a signal")
        self.passed.append(name)
        await asyncio.sleep(0)


class GatedStore(SqliteStore):
    gate: Gate

    async def acquire(self, stream: str) -> None:
        await self.gate("store.acquire")
        await super().acquire(stream)

    async def stream_record(self, stream: str) -> Any:
        await self.gate("store.stream_record")
        return await super().stream_record(stream)

    async def load(self, stream: str) -> Any:
        await self.gate("store.load")
        return await super().load(stream)

    async def save_shards(self, stream: str, shards: Any) -> None:
        await self.gate("store.save_shards")
        await super().save_shards(stream, shards)

    async def save(self, stream: str, changes: Any, finish: Any = None) -> None:
        await self.gate("store.save")
        await super().save(stream, changes, finish)

    async def register_stream(self, record: Any) -> None:
        await self.gate("store.register_stream")
        await super().register_stream(record)

    async def pending_commands(self, stream: str) -> Any:
        await self.gate("store.pending_commands")
        return await super().pending_commands(stream)


class GatedSource(KinesisSource):
    gate: Gate

    async def describe(self) -> Any:
        await self.gate("source.describe")
        return await super().describe()

    async def list_shards(self) -> Any:
        await self.gate("source.list_shards")
        return await super().list_shards()


class Counted(Processor):
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.opened = 0
        self.closed = 0

    async def open(self) -> None:
        self.opened += 1  # an open that was interrupted is closed too: close() cleans up
        await self.gate("processor.open")

    async def process(self, records: list[Record], ctx: ShardContext) -> None:
        return None

    async def close(self) -> None:
        self.closed += 1


def leftover_tasks() -> list[str]:
    return sorted(
        t.get_name()
        for t in asyncio.all_tasks()
        if not t.done() and (t.get_name() in LOOPS or t.get_name().startswith("shard "))
    )


@pytest.mark.parametrize("how", ["stop", "request_stop"])
async def test_a_stop_at_every_await_point_of_start_gives_everything_back(
    demo_endpoint: Any, tmp_path: Any, how: str
) -> None:
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, STREAM, 2)
    for i in range(6):
        demo_endpoint.call(demo_endpoint.kinesis.put, STREAM, f"k{i}", b"x")
    points: list[str] = []
    stop_at = 0
    while True:
        gate = Gate(stop_at, how)
        db = str(tmp_path / f"{how}-{stop_at}.db")
        store = await GatedStore.open(db)
        store.gate = gate
        processor = Counted(gate)
        try:
            async with GatedSource(STREAM, aws(demo_endpoint.url)) as source:
                source.gate = gate
                consumer = Consumer(source, store, processor, FAST)
                gate.consumer = consumer
                await asyncio.wait_for(consumer.start(), 10)  # returns, stopped, or runs
                if gate.stopper is not None:
                    await asyncio.wait_for(gate.stopper, 10)
                if len(gate.passed) <= stop_at:  # start finished before the chosen point
                    assert consumer.status is ConsumerStatus.RUNNING
                    points = gate.passed
                    await consumer.stop()
                    break
                where = f"stopped at {gate.passed[stop_at]} (#{stop_at})"
                assert consumer.status is ConsumerStatus.STOPPED, where
                assert consumer.stopped.is_set(), where
                assert leftover_tasks() == [], where
                assert processor.closed == processor.opened <= 1, where
                assert not store.holds(ARN), where
                await asyncio.wait_for(consumer.stop(), 5)  # idempotent, returns at once
                await consumer.run()  # a stopped consumer's run returns at once
        finally:
            await store.close()
        # The lock is free for the next consumer, whatever the stop interrupted.
        other = await SqliteStore.open(db)
        try:
            await other.acquire(ARN)
        finally:
            await other.close()
        stop_at += 1
    # Every await point of a first start was tried (describe ... pending commands).
    assert points[0] == "source.describe" and points[-1] == "store.pending_commands", points
    assert stop_at == len(points) >= 9, points


async def test_a_consumer_asked_to_stop_before_it_starts_never_starts(
    demo_endpoint: Any, db: str
) -> None:
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, STREAM, 1)
    gate = Gate(-1, "stop")
    store = await SqliteStore.open(db)
    try:
        async with KinesisSource(STREAM, aws(demo_endpoint.url)) as source:
            processor = Counted(gate)
            consumer = Consumer(source, store, processor, FAST)
            consumer.request_stop("SIGTERM before start")
            await consumer.start()
            assert consumer.status is ConsumerStatus.STOPPED
            assert processor.opened == 0 and gate.passed == []
            assert await store.streams() == []  # nothing written
    finally:
        await store.close()


async def test_stop_while_running_waits_for_the_batch_in_hand(demo_endpoint: Any, db: str) -> None:
    """A stop in the middle of a processor call lets it finish, then checkpoints it."""
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, STREAM, 1)
    demo_endpoint.call(demo_endpoint.kinesis.put, STREAM, "k", b"x")
    entered = asyncio.Event()
    release = asyncio.Event()

    class Slow(Processor):
        async def process(self, records: list[Record], ctx: ShardContext) -> None:
            entered.set()
            await release.wait()

    store = await SqliteStore.open(db)
    try:
        async with KinesisSource(STREAM, aws(demo_endpoint.url)) as source:
            consumer = Consumer(source, store, Slow(), FAST)
            await consumer.start()
            await asyncio.wait_for(entered.wait(), 10)
            stopping = asyncio.create_task(consumer.stop())
            await wait_for(lambda: consumer.status is ConsumerStatus.STOPPING)
            assert not stopping.done()  # the batch in hand is not abandoned
            release.set()
            await asyncio.wait_for(stopping, 10)
            [cp] = (await store.load(ARN)).values()
            assert cp.position.sequence_number is not None  # and it was checkpointed
    finally:
        await store.close()
