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
from console.engine.consume.consumer import Consumer, ConsumerStatus
from console.model import Record, ShardContext
from console.processors.base import Processor
from console.sources.kinesis import KinesisSource
from tests.conftest import FAST, aws, checkpoints_in, wait_for

STREAM = "s"
SHARD = "shardId-000000000000"
ARN = f"arn:aws:kinesis:us-east-1:000000000000:stream/{STREAM}"


class Gate:
    """At its ``stop_at``-th passage, stops the consumer; every passage is an await point.
    ``how="twice"`` stops it once more while it cleans up (a second stop(), a second signal)."""

    def __init__(self, stop_at: int, how: str) -> None:
        self.stop_at = stop_at
        self.how = how
        self.passed: list[str] = []
        self.consumer: Consumer | None = None
        self.stoppers: list[asyncio.Task[None]] = []

    async def __call__(self, name: str) -> None:
        if len(self.passed) == self.stop_at and self.consumer is not None:
            if self.how == "stop":
                self.stoppers.append(asyncio.create_task(self.consumer.stop()))
            else:
                self.consumer.request_stop("a signal")
        self.passed.append(name)
        await asyncio.sleep(0)

    async def cleaning_up(self) -> None:
        """The store is being released: stop again, in the middle of it."""
        if self.how == "twice" and self.consumer is not None and self.stoppers == []:
            self.consumer.request_stop("a second signal")
            self.stoppers.append(asyncio.create_task(self.consumer.stop()))
        await asyncio.sleep(0)


class GatedStore(SqliteStore):
    gate: Gate

    async def release(self, stream: str) -> None:
        await self.gate.cleaning_up()
        await super().release(stream)

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
    """Every task still running but the test's own."""
    me = asyncio.current_task()
    return sorted(t.get_name() for t in asyncio.all_tasks() if t is not me and not t.done())


@pytest.mark.parametrize("how", ["stop", "request_stop", "twice"])
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
                for stopper in gate.stoppers:
                    await asyncio.wait_for(stopper, 10)
                if len(gate.passed) <= stop_at:  # start finished before the chosen point
                    assert consumer.status is ConsumerStatus.RUNNING
                    points = list(gate.passed)  # not the flushes that follow start
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
    # Every await point of a first start was tried.
    assert points == [
        "source.describe",
        "store.acquire",
        "store.stream_record",
        "store.load",
        "processor.open",
        "source.list_shards",
        "store.save_shards",
        "store.save",  # the first start's checkpoints
        "store.register_stream",
        "store.pending_commands",
    ]
    assert stop_at == len(points)


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


async def test_a_start_whose_caller_is_cancelled_as_it_finishes_leaves_nothing_running(
    demo_endpoint: Any, db: str
) -> None:
    """The caller is cancelled just as the start completes (the loops are running): start
    raises CancelledError to it, and stops everything it started."""
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, STREAM, 2)
    store = await SqliteStore.open(db)
    try:
        async with KinesisSource(STREAM, aws(demo_endpoint.url)) as source:
            consumer = Consumer(source, store, Counted(Gate(-1, "stop")), FAST)
            caller = asyncio.create_task(consumer.start())

            def cancel_caller(event: Any) -> None:
                if event.kind == "started":
                    caller.cancel()

            consumer.events.subscribe(cancel_caller)
            with pytest.raises(asyncio.CancelledError):
                await caller
            assert consumer.status is ConsumerStatus.STOPPED
            assert leftover_tasks() == []
            assert not store.holds(ARN)
    finally:
        await store.close()


async def test_a_stop_abandoned_by_its_caller_still_finishes_and_a_second_one_returns(
    demo_endpoint: Any, db: str
) -> None:
    """stop() under a timeout that runs out while a batch is in hand: the batch finishes, is
    checkpointed with the stream still held, then the lock goes; a second stop() returns."""
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, STREAM, 1)
    demo_endpoint.call(demo_endpoint.kinesis.put, STREAM, "k", b"x")
    entered, release = asyncio.Event(), asyncio.Event()
    saves: list[bool] = []  # for each checkpoint write: was the stream held?

    class Slow(Processor):
        async def process(self, records: list[Record], ctx: ShardContext) -> None:
            entered.set()
            await release.wait()

    class Watched(SqliteStore):
        async def save(self, stream: str, changes: Any, finish: Any = None) -> None:
            saves.append(self.holds(stream))
            await super().save(stream, changes, finish)

    store = await Watched.open(db)
    try:
        async with KinesisSource(STREAM, aws(demo_endpoint.url)) as source:
            consumer = Consumer(source, store, Slow(), FAST)
            await consumer.start()
            await asyncio.wait_for(entered.wait(), 10)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(consumer.stop(), 0.1)
            assert consumer.status is ConsumerStatus.STOPPING  # still finishing the batch
            release.set()
            await asyncio.wait_for(consumer.stop(), 10)
            assert consumer.status is ConsumerStatus.STOPPED and leftover_tasks() == []
            assert saves and all(saves)  # every write while the stream was held
            [cp] = (await store.load(ARN)).values()
            assert cp.position.sequence_number is not None  # the batch in hand, checkpointed
    finally:
        await store.close()


async def test_an_operator_change_whose_caller_is_cancelled_is_applied_whole(
    demo_endpoint: Any, db: str
) -> None:
    """The caller gives up while the change is being written: the change still lands, the
    store and the worker agree (the shard is read again from the rewound position)."""
    from console.engine.changes.plan import Action, ControlRequest
    from console.model import Position
    from tests.conftest import Collect

    demo_endpoint.call(demo_endpoint.kinesis.create_stream, STREAM, 1)
    for i in range(5):
        demo_endpoint.call(demo_endpoint.kinesis.put, STREAM, "k", f"k:{i}".encode())
    writing, disk = asyncio.Event(), asyncio.Event()

    class SlowDisk(SqliteStore):
        async def save(self, stream: str, changes: Any, finish: Any = None) -> None:
            if finish is not None:  # the operator change's write
                writing.set()
                await disk.wait()
            await super().save(stream, changes, finish)

    processor = Collect()
    store = await SlowDisk.open(db)
    try:
        async with KinesisSource(STREAM, aws(demo_endpoint.url)) as source:
            async with Consumer(source, store, processor, FAST) as consumer:
                await wait_for(lambda: len(processor.seen) == 5)
                last = processor.seen[-1][1].sequence_number
                await wait_for(lambda: checkpoints_in(db) == {SHARD: f"after_sequence:{last}"})
                third = processor.seen[2][1].sequence_number
                request = ControlRequest(Action.REWIND, SHARD, position=Position.at_sequence(third))
                caller = asyncio.create_task(consumer.control(request))
                await asyncio.wait_for(writing.wait(), 10)
                caller.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await caller  # the caller is gone before the write lands
                disk.set()
                await wait_for(lambda: len(processor.seen) == 8, what="the rewind's replay")
        assert processor.data()[5:] == processor.data()[2:5]  # read again, from the third
        [rewind] = [h for h in await store.history(ARN) if h.cause == "rewind"]
        command = await store.command(rewind.command_id or 0)
        assert command is not None and command.state == "applied"
        assert await store.pending_commands(ARN) == []
    finally:
        await store.close()


async def test_a_second_consumer_of_one_store_is_refused_and_leaves_the_first_its_lock(
    demo_endpoint: Any, db: str
) -> None:
    from console.checkpoints.base import StoreLockedError

    demo_endpoint.call(demo_endpoint.kinesis.create_stream, STREAM, 1)
    store = await SqliteStore.open(db)
    try:
        async with KinesisSource(STREAM, aws(demo_endpoint.url)) as source:
            async with Consumer(source, store, Counted(Gate(-1, "stop")), FAST):
                second = Consumer(source, store, Counted(Gate(-1, "stop")), FAST)
                with pytest.raises(StoreLockedError, match="already being consumed by this"):
                    await second.start()
                assert second.status is ConsumerStatus.STOPPED
                assert store.holds(ARN)  # the refused one released nothing of the first's
    finally:
        await store.close()


async def test_a_processor_that_stops_the_consumer_does_not_wait_for_itself(
    demo_endpoint: Any, db: str
) -> None:
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, STREAM, 1)
    demo_endpoint.call(demo_endpoint.kinesis.put, STREAM, "k", b"x")
    consumers: list[Consumer] = []

    class StopsIt(Processor):
        async def process(self, records: list[Record], ctx: ShardContext) -> None:
            await consumers[0].stop()  # returns at once: the stop waits for this very batch

    store = await SqliteStore.open(db)
    try:
        async with KinesisSource(STREAM, aws(demo_endpoint.url)) as source:
            consumer = Consumer(source, store, StopsIt(), FAST)
            consumers.append(consumer)
            await asyncio.wait_for(consumer.run(), 10)
            assert consumer.status is ConsumerStatus.STOPPED
            [cp] = (await store.load(ARN)).values()
            assert cp.position.sequence_number is not None  # the batch, checkpointed
    finally:
        await store.close()


async def test_a_failed_start_keeps_its_error_when_a_stop_comes_during_its_clean_up(
    demo_endpoint: Any, tmp_path: Any
) -> None:
    """The processor fails to open; while the start gives back what it took, a signal asks
    for a stop: the caller still hears why the start failed."""
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, STREAM, 1)
    gate = Gate(-1, "twice")

    class Broken(Counted):
        async def open(self) -> None:
            raise OSError("disk full")

    store = await GatedStore.open(str(tmp_path / "c.db"))
    store.gate = gate
    try:
        async with GatedSource(STREAM, aws(demo_endpoint.url)) as source:
            source.gate = gate
            consumer = Consumer(source, store, Broken(gate), FAST)
            gate.consumer = consumer
            with pytest.raises(OSError, match="disk full"):
                await asyncio.wait_for(consumer.start(), 10)
            for stopper in gate.stoppers:  # the stop that came during the clean-up
                await asyncio.wait_for(stopper, 10)
            assert gate.stoppers and consumer.status is ConsumerStatus.STOPPED
            assert not store.holds(ARN) and leftover_tasks() == []
    finally:
        await store.close()


async def test_an_operator_change_the_store_fails_is_told_and_not_left_pending(
    demo_endpoint: Any, db: str
) -> None:
    from console.engine.changes.plan import Action, ControlRequest

    demo_endpoint.call(demo_endpoint.kinesis.create_stream, STREAM, 1)

    class FullDisk(SqliteStore):
        async def save(self, stream: str, changes: Any, finish: Any = None) -> None:
            if finish is not None:
                raise OSError("disk full")
            await super().save(stream, changes, finish)

    store = await FullDisk.open(db)
    try:
        async with KinesisSource(STREAM, aws(demo_endpoint.url)) as source:
            async with Consumer(source, store, Counted(Gate(-1, "stop")), FAST) as consumer:
                with pytest.raises(OSError, match="disk full"):
                    await consumer.control(ControlRequest(Action.PAUSE, SHARD, actor="me"))
                told = [e for e in consumer.events.since(0) if e.kind == "operator"]
                assert [e.message for e in told] == ["me: failed: disk full"]
                assert await store.pending_commands(ARN) == []
                # The shard the change had stopped runs again.
                await wait_for(lambda: consumer.state.shards[SHARD].status.value == "active")
    finally:
        await store.close()


async def test_a_final_flush_that_fails_is_said_and_not_called_flushed(
    demo_endpoint: Any, db: str
) -> None:
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, STREAM, 1)
    for data in (b"a", b"b"):
        demo_endpoint.call(demo_endpoint.kinesis.put, STREAM, "k", data)

    class FullAtTheEnd(SqliteStore):
        full = False

        async def save(self, stream: str, changes: Any, finish: Any = None) -> None:
            if self.full:
                raise OSError("disk full")
            await super().save(stream, changes, finish)

    store = await FullAtTheEnd.open(db)
    seen = Counted(Gate(-1, "stop"))
    try:
        async with KinesisSource(STREAM, aws(demo_endpoint.url)) as source:
            consumer = Consumer(source, store, seen, FAST)
            async with consumer:
                await wait_for(lambda: consumer.state.records_total == 2, what="read")
                store.full = True
        [stopped] = [e.message for e in consumer.events.since(0) if e.kind == "stopped"]
        assert "checkpoints flushed" not in stopped
        assert "the final checkpoint flush failed" in stopped
        assert consumer.failure is not None and "disk full" in consumer.failure
    finally:
        await store.close()


def test_run_from_another_thread_than_the_main_one(tmp_path: Any) -> None:
    """Signals reach the main thread only; a program that runs the command elsewhere gets the
    command, not an error about signals."""
    import contextlib
    import io
    import threading

    from console.cli import commands as cli

    out: list[int] = []
    err = io.StringIO()

    def call() -> None:
        with contextlib.redirect_stderr(err):
            out.append(
                cli.main(
                    ["run", "s", "--endpoint-url", "http://127.0.0.1:9", "--no-ui",
                     "--db", str(tmp_path / "c.db")]
                )
            )  # fmt: skip

    thread = threading.Thread(target=call)
    thread.start()
    thread.join(60)
    assert out == [2], err.getvalue()
    assert "cannot reach the endpoint" in err.getvalue()
