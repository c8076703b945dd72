"""The consumer end to end, in process, against kinesalite and the demo endpoint."""

import asyncio
import dataclasses
import time

from console.checkpoints.sqlite import SqliteStore
from console.engine.consume.consumer import Consumer, ConsumerOptions
from console.model import CheckpointStatus, ShardStatus
from console.sources.kinesis import KinesisSource
from tests.conftest import (
    FAST,
    Calls,
    Collect,
    Kinesis,
    aws,
    last_sequence,
    numbered,
    unique,
    wait_for,
)


def at_tip(consumer: Consumer, last: dict[str, str]) -> bool:
    """Whether each shard has read through the last record put into it: then nothing of what
    was put can come later (a shard delivers in order)."""
    views = consumer.state.shards
    return all(
        sid in views
        and views[sid].position is not None
        and views[sid].position.sequence_number == seq  # type: ignore[union-attr]
        for sid, seq in last.items()
    )


def per_key_in_order(data: list[bytes]) -> None:
    """Data is "key:i"; within a key, i must only grow (first deliveries)."""
    last: dict[str, int] = {}
    for item in data:
        key, _, n = item.decode().partition(":")
        i = int(n.split(".")[0])
        assert i > last.get(key, -1), f"{key}: {i} after {last.get(key)}"
        last[key] = i


async def test_split_and_merge_during_consumption_deliver_everything_in_key_order(
    kinesalite: str, db: str
) -> None:
    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 3)
    sent = numbered(300, keys=12)
    await k.put(name, sent[:100])
    processor = Collect()
    store = await SqliteStore.open(db)
    async with (
        KinesisSource(name, aws(kinesalite)) as source,
        Consumer(source, store, processor, FAST) as consumer,
    ):
        await wait_for(lambda: len(processor.seen) >= 100, what="first 100")
        shards = await k.shards(name)
        await k.split(name, shards[0]["ShardId"])
        await k.put(name, sent[100:200])
        open_ids = sorted(
            s["ShardId"]
            for s in await k.shards(name)
            if "EndingSequenceNumber" not in s["SequenceNumberRange"]
        )
        # Merge the two original shards that are still open (1 and 2 are adjacent).
        await k.merge(name, open_ids[0], open_ids[1])
        await k.put(name, sent[200:])
        await wait_for(lambda: len(processor.seen) >= 300, what="all 300")
        await wait_for(
            lambda: sum(v.status is ShardStatus.DONE for v in consumer.state.shards.values()) == 3,
            what="the split parent and the merged pair done",
        )
        states = {sid: v.status for sid, v in consumer.state.shards.items()}
    await store.close()
    data = processor.data()
    assert sorted(data) == sorted(d for _, d in sent)  # every record, exactly once
    per_key_in_order(data)
    assert sum(s is ShardStatus.DONE for s in states.values()) == 3  # split parent + merged pair
    assert len(states) == 3 + 2 + 1


async def test_stop_and_restart_resume_from_the_checkpoint(kinesalite: str, db: str) -> None:
    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 2)
    await k.put(name, numbered(200))
    first = Collect()
    async with KinesisSource(name, aws(kinesalite)) as source:
        store = await SqliteStore.open(db)
        consumer = Consumer(source, store, first, FAST)
        await consumer.start()
        await wait_for(lambda: len(first.seen) == 200)
        await consumer.stop()
        await consumer.stop()  # idempotent
        await store.close()
    last = last_sequence(await k.put(name, numbered(50, start=200)))
    second = Collect()
    async with KinesisSource(name, aws(kinesalite)) as source:
        store = await SqliteStore.open(db)
        async with Consumer(source, store, second, FAST) as consumer:
            await wait_for(lambda: len(second.seen) >= 50)
            # Read to each shard's last record: nothing older can come after it.
            await wait_for(lambda: at_tip(consumer, last), what="every shard at its tip")
        await store.close()
    assert sorted(second.data()) == sorted(d for _, d in numbered(50, start=200))


async def test_max_records_stops_at_exactly_n(kinesalite: str, db: str) -> None:
    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 3)
    await k.put(name, numbered(500))
    processor = Collect()
    options = ConsumerOptions(
        discovery_interval=0.5, flush_interval=0.2, idle_interval=0.05, max_records=123
    )
    async with KinesisSource(name, aws(kinesalite)) as source:
        store = await SqliteStore.open(db)
        consumer = Consumer(source, store, processor, options)
        await asyncio.wait_for(consumer.run(), 20)
        checkpoints = await store.load(consumer.key)
        await store.close()
    assert len(processor.seen) == 123
    assert consumer.failure is None
    # The checkpoints cover exactly what was processed.
    last = {}
    for sid, r in processor.seen:
        last[sid] = r.sequence_number
    for sid, seq in last.items():
        assert checkpoints[sid].position.sequence_number == seq


async def test_processor_errors_retry_the_batch_and_never_drop(demo_endpoint, db: str) -> None:
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 1)
    for i in range(20):
        demo_endpoint.call(demo_endpoint.kinesis.put, "s", "k", f"k:{i}".encode())
    processor = Collect()
    failures = {"left": 3}

    def flaky(records, ctx):
        if failures["left"]:
            failures["left"] -= 1
            raise ValueError("downstream is down")

    processor.fail = flaky
    store = await SqliteStore.open(db)
    saw_failing = []
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        consumer = Consumer(source, store, processor, FAST)
        consumer.events.subscribe(
            lambda e: saw_failing.append(e) if e.kind == "processor_error" else None
        )
        async with consumer:
            await wait_for(lambda: len(processor.seen) == 20)
            view = next(iter(consumer.state.shards.values()))
            assert view.status is ShardStatus.ACTIVE and view.last_error is None
            assert consumer.state.retries["processor_error"] == 3
    await store.close()
    assert processor.data() == [f"k:{i}".encode() for i in range(20)]
    assert processor.calls == 4
    assert saw_failing and "downstream is down" in saw_failing[0].message


async def test_checkpoint_older_than_retention_is_loud_and_restarts_at_trim_horizon(
    demo_endpoint, db: str
) -> None:
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 1)
    for i in range(10):
        demo_endpoint.call(demo_endpoint.kinesis.put, "s", "k", f"k:{i}".encode())
    store = await SqliteStore.open(db)
    first = Collect()
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        async with Consumer(source, store, first, FAST) as consumer:
            await wait_for(lambda: len(first.seen) == 10)
        key = consumer.key
        # Age the checkpoint past the stream's 24 h retention, as if we had been down for days.
        await store._conn.execute("UPDATE checkpoints SET arrival = ?", (time.time() - 25 * 3600,))
        events = []
        second = Collect()
        consumer = Consumer(source, store, second, FAST)
        consumer.events.subscribe(events.append)
        async with consumer:
            await wait_for(lambda: len(second.seen) == 10)
    history = await store.history(key)
    await store.close()
    loud = [e for e in events if e.kind == "retention_loss"]
    assert (
        loud
        and loud[0].level.value == "error"
        and "older than the stream's retention" in loud[0].message
    )
    assert any(h.cause == "retention" for h in history)


async def test_initial_position_latest_skips_what_is_there_and_survives_a_restart(
    demo_endpoint, db: str
) -> None:
    from console.model import Position

    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 2)
    for i in range(10):
        demo_endpoint.call(demo_endpoint.kinesis.put, "s", f"k{i}", b"old")
    options = dataclasses.replace(FAST, initial_position=Position.latest())
    store = await SqliteStore.open(db)
    first = Collect()
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        async with Consumer(source, store, first, options):
            # What arrives after the start is read; what was there before is not, and would
            # have come first.
            for shard in ("k0", "k1"):
                demo_endpoint.call(demo_endpoint.kinesis.put, "s", shard, b"after the start")
            await wait_for(lambda: len(first.seen) == 2)
        # Written while nobody was reading, after the first start: must not be skipped.
        for i in range(5):
            demo_endpoint.call(demo_endpoint.kinesis.put, "s", f"k{i}", b"new")
        second = Collect()
        async with Consumer(source, store, second, options):
            await wait_for(lambda: len(second.seen) == 5)
    await store.close()
    assert first.data() == [b"after the start"] * 2
    assert second.data() == [b"new"] * 5


async def test_a_checkpoint_inside_an_aggregated_record_resumes_at_the_next_user_record(
    moto: str, db: str
) -> None:
    from aws_kinesis_agg.aggregator import RecordAggregator

    name = unique()
    k = Kinesis(moto)
    await k.create(name, 1)
    agg = RecordAggregator()
    for i in range(5):
        agg.add_user_record(f"user-{i}", f"u{i}".encode())
    pk, _, data = agg.clear_and_get().get_contents()
    last = last_sequence(await k.put(name, [(pk, data), ("plain", b"after")]))
    first = Collect()
    async with KinesisSource(name, aws(moto)) as source:
        store = await SqliteStore.open(db)
        consumer = Consumer(source, store, first, dataclasses.replace(FAST, max_records=3))
        await asyncio.wait_for(consumer.run(), 20)
        [cp] = (await store.load(consumer.key)).values()
        assert cp.position.sub_sequence_number == 2  # stopped inside the aggregate
        second = Collect()
        async with Consumer(source, store, second, FAST) as consumer:
            await wait_for(lambda: at_tip(consumer, last), what="the shard at its tip")
        await store.close()
    assert first.data() == [b"u0", b"u1", b"u2"]
    assert second.data() == [b"u3", b"u4", b"after"]
    assert [r.sub_sequence_number for _, r in second.seen] == [3, 4, None]


async def test_an_unchanged_shard_list_costs_no_rework(demo_endpoint, db: str) -> None:
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 3)
    store = await SqliteStore.open(db)
    writes = []
    real = store.save_shards

    async def save_shards(stream, shards):
        writes.append(len(shards))
        await real(stream, shards)

    store.save_shards = save_shards
    calls = Calls()
    async with KinesisSource("s", aws(demo_endpoint.url), calls.hooks()) as source:
        async with Consumer(source, store, Collect(), FAST) as consumer:
            version = consumer.state.lineage_version
            listed = calls["ListShards"]
            for n in range(1, 4):
                consumer.trigger_discovery()
                await wait_for(lambda n=n: calls["ListShards"] >= listed + n, what="a listing")
            assert consumer.state.lineage_version == version
            demo_endpoint.call(demo_endpoint.kinesis.split, "s", "shardId-000000000001", 2**127 - 5)
            consumer.trigger_discovery()
            await wait_for(lambda: consumer.state.lineage_version != version)
    await store.close()
    assert writes == [3, 3]  # the first listing, then the closed parent and its two children


async def test_max_records_ending_inside_a_closed_shards_last_batch_leaves_the_rest(
    demo_endpoint, db: str
) -> None:
    """--max-records runs out in the middle of a closed shard's last batch: the shard is not
    done; the next run reads what is left of it, then its children."""
    e = demo_endpoint
    parent = "shardId-000000000000"
    e.call(e.kinesis.create_stream, "s", 1)
    for i in range(5):
        e.call(e.kinesis.put, "s", "k", f"k:{i}".encode())
    e.call(e.kinesis.split, "s", parent, 2**127)
    e.call(e.kinesis.put, "s", "k", b"k:5")  # in a child
    store = await SqliteStore.open(db)
    first, second = Collect(), Collect()
    async with KinesisSource("s", aws(e.url)) as source:
        consumer = Consumer(source, store, first, dataclasses.replace(FAST, max_records=3))
        await asyncio.wait_for(consumer.run(), 20)
        saved = (await store.load(consumer.key))[parent]
        assert saved.status is CheckpointStatus.OPEN  # not done: two records are left
        async with Consumer(source, store, second, FAST):
            await wait_for(lambda: len(second.seen) == 3)
    await store.close()
    assert first.data() == [b"k:0", b"k:1", b"k:2"]
    assert second.data() == [b"k:3", b"k:4", b"k:5"]  # the rest of the parent, then the child
