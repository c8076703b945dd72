"""Operator changes through the engine's one control path, on a live consumer."""

import asyncio
import time

import pytest

from console.checkpoints.sqlite import SqliteStore
from console.engine.changes.plan import Action, ControlRequest, SkipTo
from console.engine.consume.consumer import Consumer
from console.model import CheckpointStatus, Position, ShardStatus
from console.processors.base import RecordFailed
from console.sources.kinesis import KinesisSource
from tests.conftest import FAST, Calls, Collect, aws, wait_for


def put(endpoint, stream: str, key: str, items: range) -> None:
    for i in items:
        endpoint.call(endpoint.kinesis.put, stream, key, f"{key}:{i}".encode())


@pytest.fixture
async def live(demo_endpoint, db):
    """A consumer on a 1-shard stream holding 10 records, all read."""
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 1)
    put(demo_endpoint, "s", "k", range(10))
    processor = Collect()
    store = await SqliteStore.open(db)
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        consumer = Consumer(source, store, processor, FAST)
        async with consumer:
            await wait_for(lambda: len(processor.seen) == 10)
            yield consumer, processor, store
    await store.close()


async def test_pause_holds_records_and_resume_delivers_them(demo_endpoint, db) -> None:
    """Records put while a shard is paused arrive after the resume, not before: meanwhile the
    other shard polls again and again (a worker on the paused one would have too)."""
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 2)
    s0, s1 = "shardId-000000000000", "shardId-000000000001"
    key = {s0: "k0", s1: "k1"}  # keys that hash to each shard
    assert demo_endpoint.call(demo_endpoint.kinesis.put, "s", key[s0], b"x")[0] == s0
    assert demo_endpoint.call(demo_endpoint.kinesis.put, "s", key[s1], b"x")[0] == s1
    processor = Collect()
    calls = Calls()
    store = await SqliteStore.open(db)
    async with KinesisSource("s", aws(demo_endpoint.url), calls.hooks()) as source:
        async with Consumer(source, store, processor, FAST) as consumer:
            await wait_for(lambda: len(processor.seen) == 2)
            result = await consumer.control(ControlRequest(Action.PAUSE, s0, actor="me@host"))
            assert result.ok, result.message
            assert consumer.state.shards[s0].status is ShardStatus.PAUSED
            assert (await store.load(consumer.key))[s0].paused
            put(demo_endpoint, "s", key[s0], range(10, 15))
            polls = calls["GetRecords"]
            await wait_for(lambda: calls["GetRecords"] >= polls + 10, what="ten more polls")
            again = await consumer.control(ControlRequest(Action.PAUSE, s0))
            assert not again.ok and "already paused" in again.message
            resumed_at = time.monotonic()
            assert (await consumer.control(ControlRequest(Action.RESUME, s0))).ok
            await wait_for(lambda: len(processor.seen) == 7)
            assert processor.data()[2:] == [f"{key[s0]}:{i}".encode() for i in range(10, 15)]
            assert min(processor.at[2:]) > resumed_at  # none before the resume
            causes = [h.cause for h in await store.history(consumer.key, s0)]
            assert causes[:2] == ["resume", "pause"]
    await store.close()


async def test_rewind_replays_exactly_from_the_target(live) -> None:
    consumer, processor, store = live
    sid = "shardId-000000000000"
    third = processor.seen[2][1]
    result = await consumer.control(
        ControlRequest(Action.REWIND, sid, position=Position.at_sequence(third.sequence_number))
    )
    assert result.ok, result.message
    await wait_for(lambda: len(processor.seen) == 18)  # records 2..9 again
    assert processor.data()[10:] == [f"k:{i}".encode() for i in range(2, 10)]
    history = await store.history(consumer.key, sid)
    assert history[0].cause == "rewind"
    assert history[0].new_position == Position.at_sequence(third.sequence_number)


async def test_undo_restores_exactly_what_the_rewind_replaced(live, demo_endpoint) -> None:
    """Paused, the rewound shard does not read: undo must put back the very position and
    status the rewind replaced, so on resume nothing is read again and what comes next does."""
    consumer, processor, store = live
    sid = "shardId-000000000000"
    last = processor.seen[9][1]
    assert (await consumer.control(ControlRequest(Action.PAUSE, sid))).ok
    rewind = await consumer.control(
        ControlRequest(Action.REWIND, sid, position=Position.trim_horizon())
    )
    assert rewind.ok
    assert (await store.load(consumer.key))[sid].position == Position.trim_horizon()
    undo = await consumer.control(ControlRequest(Action.UNDO))
    assert undo.ok and undo.message == f"undo change #{rewind.command_id} ({sid})"
    restored = (await store.load(consumer.key))[sid]
    assert restored.position == Position.after_sequence(last.sequence_number)
    assert restored.paused and restored.status is CheckpointStatus.OPEN
    assert consumer.state.shards[sid].status is ShardStatus.PAUSED
    assert (await consumer.control(ControlRequest(Action.RESUME, sid))).ok
    put(demo_endpoint, "s", "k", range(10, 13))
    await wait_for(lambda: len(processor.seen) >= 13)
    await wait_for(lambda: consumer.state.shards[sid].lag_ms == 0)  # read to the tip
    assert processor.data()[10:] == [b"k:10", b"k:11", b"k:12"]  # nothing of 0..9 again
    causes = [h.cause for h in await store.history(consumer.key, sid)]
    assert causes[:4] == ["resume", "undo", "rewind", "pause"]


async def test_rewind_to_a_timestamp_and_validation(live) -> None:
    consumer, processor, _ = live
    sid = "shardId-000000000000"
    future = await consumer.control(
        ControlRequest(Action.REWIND, sid, position=Position.at_timestamp(time.time() + 3600))
    )
    assert not future.ok and "future" in future.message
    outside = await consumer.control(
        ControlRequest(Action.REWIND, sid, position=Position.at_sequence("12"))
    )
    assert not outside.ok and "before the first" in outside.message
    unknown = await consumer.control(ControlRequest(Action.PAUSE, "shardId-000000000042"))
    assert not unknown.ok and "unknown shard" in unknown.message
    ok = await consumer.control(
        ControlRequest(Action.REWIND, sid, position=Position.at_timestamp(time.time() - 3600))
    )
    assert ok.ok
    await wait_for(lambda: len(processor.seen) == 20)


async def test_skip_to_latest_and_mark_done(live, demo_endpoint) -> None:
    consumer, processor, store = live
    sid = "shardId-000000000000"
    assert (await consumer.control(ControlRequest(Action.PAUSE, sid))).ok
    put(demo_endpoint, "s", "k", range(10, 20))  # arrive while paused: skipped
    written = time.time()
    while time.time() <= written + 0.01:  # the skip's instant must come after them
        await asyncio.sleep(0.005)
    assert (await consumer.control(ControlRequest(Action.SKIP, sid, skip_to=SkipTo.LATEST))).ok
    assert (await consumer.control(ControlRequest(Action.RESUME, sid))).ok
    put(demo_endpoint, "s", "k", range(20, 23))
    await wait_for(lambda: len(processor.seen) == 13)
    assert processor.data()[10:] == [b"k:20", b"k:21", b"k:22"]
    assert (await consumer.control(ControlRequest(Action.SKIP, sid, skip_to=SkipTo.DONE))).ok
    assert consumer.state.shards[sid].status is ShardStatus.SKIPPED
    assert (await store.load(consumer.key))[sid].status is CheckpointStatus.SKIPPED
    again = await consumer.control(ControlRequest(Action.SKIP, sid, skip_to=SkipTo.DONE))
    assert not again.ok and "already skipped" in again.message


async def test_skip_past_the_poison_record(demo_endpoint, db) -> None:
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 1)
    put(demo_endpoint, "s", "k", range(6))
    processor = Collect()

    def poison(records, ctx):
        for r in records:
            if r.data == b"k:3":
                raise RecordFailed(r, "cannot parse")

    processor.fail = poison
    store = await SqliteStore.open(db)
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        async with Consumer(source, store, processor, FAST) as consumer:
            sid = "shardId-000000000000"
            await wait_for(lambda: consumer.state.shards[sid].status is ShardStatus.FAILING)
            assert "cannot parse" in (consumer.state.shards[sid].last_error or "")
            # Still failing (the poison stays poison): nothing reaches `seen` meanwhile.
            processor.seen.clear()
            # Records 0..2 were processed before the poison one; the checkpoint kept them.
            r = await consumer.control(ControlRequest(Action.SKIP, sid, skip_to=SkipTo.NEXT_RECORD))
            assert r.ok and "past record" in r.message, r.message
            await wait_for(lambda: len(processor.seen) == 2)
            assert processor.data() == [b"k:4", b"k:5"]
    await store.close()


PARENT = "shardId-000000000000"


def split_stream(endpoint) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A one-shard stream, 5 records, split; 12 records in the children. Their ids."""
    endpoint.call(endpoint.kinesis.create_stream, "s", 1)
    put(endpoint, "s", "a", range(5))
    children = endpoint.call(endpoint.kinesis.split, "s", PARENT, 2**127)
    for key in ("a", "b", "c", "d"):
        put(endpoint, "s", key, range(5, 8))
    return children


async def test_rewinding_a_closed_parent_replays_it_before_its_children(demo_endpoint, db) -> None:
    parent = PARENT
    split_stream(demo_endpoint)
    processor = Collect()
    store = await SqliteStore.open(db)
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        async with Consumer(source, store, processor, FAST) as consumer:
            await wait_for(lambda: len(processor.seen) == 5 + 12)
            processor.seen.clear()
            r = await consumer.control(
                ControlRequest(Action.REWIND, parent, position=Position.trim_horizon())
            )
            assert r.ok and "reset 2 descendant(s)" in r.message, r.message
            await wait_for(lambda: len(processor.seen) == 17)
            order = [sid for sid, _ in processor.seen]
            parent_last = max(i for i, sid in enumerate(order) if sid == parent)
            child_first = min(i for i, sid in enumerate(order) if sid != parent)
            assert parent_last < child_first
    await store.close()


async def test_undo_of_a_parent_rewind_restores_the_children_it_reset(demo_endpoint, db) -> None:
    """The children are paused, so after the rewind they wait at their start: undo must
    put the parent back to done and each child back to where it was, paused as it was."""
    parent = PARENT
    a, b = split_stream(demo_endpoint)
    processor = Collect()
    store = await SqliteStore.open(db)
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        async with Consumer(source, store, processor, FAST) as consumer:
            await wait_for(lambda: len(processor.seen) == 5 + 12)
            for child in (a, b):
                assert (await consumer.control(ControlRequest(Action.PAUSE, child))).ok
            before = await store.load(consumer.key)
            rewind = await consumer.control(
                ControlRequest(Action.REWIND, parent, position=Position.trim_horizon())
            )
            assert rewind.ok
            await wait_for(lambda: len(processor.seen) == 17 + 5)  # the parent, again
            reset = await store.load(consumer.key)
            assert {reset[c].position for c in (a, b)} == {Position.trim_horizon()}
            undo = await consumer.control(ControlRequest(Action.UNDO, change_id=rewind.command_id))
            assert undo.ok, undo.message
            after = await store.load(consumer.key)
            for sid in (parent, a, b):
                was, now = before[sid], after[sid]
                assert (now.position, now.status, now.paused) == (
                    was.position,
                    was.status,
                    was.paused,
                ), sid
            assert after[parent].status is CheckpointStatus.DONE
            for child in (a, b):
                assert (await consumer.control(ControlRequest(Action.RESUME, child))).ok
            put(demo_endpoint, "s", "z", range(3))
            await wait_for(lambda: len(processor.seen) >= 22 + 3)
            await wait_for(lambda: all(consumer.state.shards[c].lag_ms == 0 for c in (a, b)))
            assert processor.data()[22:] == [b"z:0", b"z:1", b"z:2"]  # the children, not again
    await store.close()


async def test_commands_written_by_another_process_are_applied(live) -> None:
    consumer, _, store = live
    sid = "shardId-000000000000"
    # What the CLI does from another process: a row in commands, nothing else.
    cid = await store.add_command(consumer.key, sid, "pause", {}, "ops@bastion")
    await wait_for(lambda: consumer.state.shards[sid].status is ShardStatus.PAUSED, timeout=5)
    assert await store.pending_commands(consumer.key) == []
    [entry] = [h for h in await store.history(consumer.key, sid) if h.command_id == cid]
    assert entry.actor == "ops@bastion"


class SlowDisk(SqliteStore):
    """A real store on a slow disk: each save waits, and discovery runs meanwhile."""

    consumer: Consumer | None = None

    async def save(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.consumer is not None:
            self.consumer.trigger_discovery()
            await asyncio.sleep(0.3)
        return await super().save(*args, **kwargs)


async def test_a_rewind_is_not_undone_by_discovery_while_it_is_written(demo_endpoint, db) -> None:
    """Discovery reconciles shards while an operator change is being written; it must not
    restart the stopped shard from its old position in between."""
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 1)
    put(demo_endpoint, "s", "k", range(10))
    processor = Collect()
    store = await SlowDisk.open(db)
    try:
        async with KinesisSource("s", aws(demo_endpoint.url)) as source:
            async with Consumer(source, store, processor, FAST) as consumer:
                await wait_for(lambda: len(processor.seen) == 10)
                await consumer.checkpointer.flush()  # the old position is on disk
                store.consumer = consumer
                sid = "shardId-000000000000"
                result = await consumer.control(
                    ControlRequest(Action.REWIND, sid, position=Position.trim_horizon())
                )
                assert result.ok, result.message
                await wait_for(lambda: len(processor.seen) == 20)
                assert processor.data()[10:] == [f"k:{i}".encode() for i in range(10)]
    finally:
        await store.close()


async def test_replay_from_an_instant_across_a_resharding(demo_endpoint, db) -> None:
    """replay puts every shard at the instant: a shard closed before it ends at once, giving
    nothing; a shard closed after it gives what came after; shards created after it replay
    whole; children still wait for their parents, so per-key order replays as it was."""
    k = demo_endpoint.kinesis
    parent = "shardId-000000000000"
    keys = ("a", "b", "c", "d", "e", "f")
    demo_endpoint.call(k.create_stream, "s", 1)
    put(demo_endpoint, "s", "p", range(5))
    low, _high = demo_endpoint.call(k.split, "s", parent, 2**127)  # closed before the instant
    for key in keys:
        put(demo_endpoint, "s", key, range(5, 8))
    # Instants go to the service in milliseconds: keep every record clear of the instant's.
    written = time.time()
    while time.time() <= written + 0.01:
        await asyncio.sleep(0.005)
    instant = time.time()
    while time.time() <= instant + 0.01:
        await asyncio.sleep(0.005)
    for key in keys:
        put(demo_endpoint, "s", key, range(8, 10))
    demo_endpoint.call(k.split, "s", low, 2**126)  # closed after the instant, children after it
    for key in keys:
        put(demo_endpoint, "s", key, range(10, 12))
    processor = Collect()
    store = await SqliteStore.open(db)
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        async with Consumer(source, store, processor, FAST) as consumer:
            total = 5 + len(keys) * 7
            await wait_for(lambda: len(processor.seen) == total)
            events = consumer.events.last_seq
            result = await consumer.control(
                ControlRequest(Action.REPLAY, position=Position.at_timestamp(instant))
            )
            assert result.ok and result.message.startswith("replay 5 shard(s)"), result.message
            after = {f"{key}:{i}".encode() for key in keys for i in range(8, 12)}
            await wait_for(lambda: len(processor.seen) >= total + len(after))
            await wait_for(
                lambda: all(
                    v.status in (ShardStatus.DONE, ShardStatus.ACTIVE)
                    and (v.status is ShardStatus.DONE or v.lag_ms == 0)
                    for v in consumer.state.shards.values()
                ),
                what="every shard done or at its tip",
            )
            done_again = [
                e.shard_id for e in consumer.events.since(events) if e.kind == "shard_done"
            ]
    await store.close()
    replayed = processor.seen[total:]
    assert sorted(r.data for _, r in replayed) == sorted(after)  # exactly those, once each
    assert parent not in {sid for sid, _ in replayed}  # closed before: nothing of it again
    assert parent in done_again and low in done_again  # ...and both ended again, at once
    last: dict[str, int] = {}
    for _, r in replayed:  # per key, in the order first delivered
        key, n = r.data.decode().split(":")
        assert int(n) > last.get(key, -1), r.data
        last[key] = int(n)
