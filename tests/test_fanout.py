"""Enhanced fan-out against kinesis-mock over real HTTP, behind tests/efo_shim.py (which adds
what the emulator lacks and AWS sends: the initial-response event, a closed shard's last event,
and shorter subscriptions). The consumer is the real one: checkpoints, lineage and operator
changes work as they do when polling."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import Any

import pytest

from console.engine.changes.plan import Action, ControlRequest
from console.engine.consume.consumer import Consumer
from console.engine.consume.fanout import FanOutOptions
from console.model import Batch, CheckpointStatus, Position, ShardStatus
from console.sources.kinesis import KinesisSource
from tests.conftest import FAST, Collect, Kinesis, aws, numbered, run_cli, unique, wait_for

FAN_OUT = dataclasses.replace(FAST, fan_out="tests")


async def more_events(efo: Any, n: int) -> None:
    """Wait until the shim has passed on ``n`` more subscription events."""
    target = efo.events_sent + n
    await wait_for(lambda: efo.events_sent >= target, 20, f"{n} more events")


def in_key_order(processor: Collect) -> dict[str, list[int]]:
    """Per partition key, the numbers the processor saw, in the order it saw them."""
    seen: dict[str, list[int]] = {}
    for _, record in processor.seen:
        key, n = record.data.decode().split(":")
        seen.setdefault(key, []).append(int(n))
    return seen


def assert_once_in_order(processor: Collect, sent: list[tuple[str, bytes]]) -> None:
    assert sorted(processor.data()) == sorted(d for _, d in sent)  # each once
    for key, numbers in in_key_order(processor).items():
        assert numbers == sorted(numbers), key


async def consumer_names(url: str, stream: str) -> list[str]:
    async with Kinesis(url).client() as k:
        arn = (await k.describe_stream_summary(StreamName=stream))["StreamDescriptionSummary"][
            "StreamARN"
        ]
        consumers = (await k.list_stream_consumers(StreamARN=arn))["Consumers"]
    return [c["ConsumerName"] for c in consumers]


async def test_records_arrive_in_order_per_shard_through_subscriptions(
    efo: Any, store: Any
) -> None:
    name = unique()
    k = Kinesis(efo.url)
    await k.create(name, 2)
    before = numbered(300, keys=6)
    await k.put(name, before)
    processor = Collect()
    async with KinesisSource(name, aws(efo.url)) as source:
        async with Consumer(source, store, processor, FAN_OUT) as consumer:
            await wait_for(lambda: len(processor.seen) >= 300, 30, "the backlog")
            after = numbered(60, keys=6, start=300)
            await k.put(name, after)
            await wait_for(lambda: len(processor.seen) >= 360, 30, "records put meanwhile")
            views = list(consumer.state.shards.values())
            assert [v.mode for v in views] == ["fan-out", "fan-out"]
            assert consumer.state.get_records_calls == 0  # nothing polled on the side
    assert_once_in_order(processor, before + after)
    assert sorted(shard for _, shard, _ in efo.subscribed) == [
        "shardId-000000000000",
        "shardId-000000000001",
    ]
    assert await consumer_names(efo.url, name) == ["tests"]  # registered, and kept


@pytest.mark.parametrize("who", ["the service", "our backstop"])
async def test_subscriptions_are_renewed_after_their_continuation(
    efo: Any, store: Any, who: str
) -> None:
    """Records put without pause across several renewals arrive once each, in order; each
    renewal starts after the last event's continuation."""
    name = unique()
    k = Kinesis(efo.url)
    await k.create(name, 1)
    options = FAN_OUT
    if who == "the service":
        efo.lifetime = 1.5
    else:
        options = dataclasses.replace(FAN_OUT, fan_out_options=FanOutOptions(lifetime=1.5))
    processor = Collect()
    sent: list[tuple[str, bytes]] = []
    async with KinesisSource(name, aws(efo.url)) as source:
        async with Consumer(source, store, processor, options):
            for i in range(12):
                batch = numbered(20, keys=3, start=20 * i)
                await k.put(name, batch)
                sent += batch
                await asyncio.sleep(0.5)  # the producer's pace: renewals happen meanwhile
            await wait_for(lambda: len(processor.seen) >= len(sent), 30, "every record")
            await more_events(efo, 2)  # a record read twice would show by then
    assert_once_in_order(processor, sent)
    starts = [start for _, _, start in efo.subscribed]
    assert len(starts) >= 4, starts
    assert starts[0] == {"Type": "TRIM_HORIZON"}
    assert all(s["Type"] == "AFTER_SEQUENCE_NUMBER" for s in starts[1:]), starts
    passed_on = efo.continuations["shardId-000000000000"]
    if who == "the service":  # every event before the end was read: the last one's continuation
        assert [s["SequenceNumber"] for s in starts[1:]] == [
            c for c in efo.renewed_after if c is not None
        ][: len(starts) - 1]
    else:  # we end it between events: after one of them, never one not passed on
        assert all(s["SequenceNumber"] in passed_on for s in starts[1:]), starts


@pytest.mark.parametrize("told_by", ["the last event", "discovery"])
async def test_a_split_ends_the_parents_subscription_and_the_children_follow(
    efo: Any, store: Any, told_by: str
) -> None:
    """The parent's end comes either from its subscription (the last event: ChildShards, no
    continuation; discovery is too slow to get there first) or from a listing that shows the
    parent closed at the position read."""
    slow = told_by == "the last event"
    options = dataclasses.replace(FAN_OUT, discovery_interval=600.0) if slow else FAN_OUT
    name = unique()
    k = Kinesis(efo.url)
    await k.create(name, 1)
    first = numbered(100, keys=5)
    await k.put(name, first)
    processor = Collect()
    async with KinesisSource(name, aws(efo.url)) as source:
        async with Consumer(source, store, processor, options) as consumer:
            await wait_for(lambda: len(processor.seen) >= 100, 30, "the parent's records")
            async with k.client() as client:
                await client.split_shard(
                    StreamName=name,
                    ShardToSplit="shardId-000000000000",
                    NewStartingHashKey=str(2**127),
                )
            second = numbered(100, keys=5, start=100)
            await wait_for_active(k, name)
            await k.put(name, second)
            await wait_for(lambda: len(processor.seen) >= 200, 40, "the children's records")
            parent = consumer.state.shards["shardId-000000000000"]
            await wait_for(lambda: parent.status is ShardStatus.DONE, 20, "the parent done")
            children = [sid for sid in consumer.state.shards if sid != "shardId-000000000000"]
            assert len(children) == 2
            assert all(consumer.state.shards[c].mode == "fan-out" for c in children)
    cps = await store.load(consumer.key)
    assert cps["shardId-000000000000"].status is CheckpointStatus.DONE
    if slow:
        assert efo.ended == ["shardId-000000000000"]  # told by the event, as AWS tells it
    assert_once_in_order(processor, first + second)
    # Every child record came after every parent record: per-key order across the split.
    shards = [shard for shard, _ in processor.seen]
    last_parent = max(i for i, s in enumerate(shards) if s == "shardId-000000000000")
    assert last_parent == 99


async def wait_for_active(k: Kinesis, name: str) -> None:
    async with k.client() as client:
        await k._active(client, name)


async def test_a_restart_resumes_from_the_checkpoint_through_the_held_subscription(
    efo: Any, store: Any
) -> None:
    """The second run subscribes while the service still holds the first run's subscription
    (kinesis-mock holds it 2 to 4 s, AWS some seconds): ResourceInUse, retried quietly, and the
    second run reads exactly what is new."""
    name = unique()
    k = Kinesis(efo.url)
    await k.create(name, 1)
    first = numbered(50, keys=2)
    await k.put(name, first)
    one = Collect()
    async with KinesisSource(name, aws(efo.url)) as source:
        async with Consumer(source, store, one, FAN_OUT):
            await wait_for(lambda: len(one.seen) >= 50, 30, "the first run's records")
    second = numbered(30, keys=2, start=50)
    await k.put(name, second)
    two = Collect()
    events: list[str] = []
    async with KinesisSource(name, aws(efo.url)) as source:
        async with Consumer(source, store, two, FAN_OUT) as consumer:
            consumer.events.subscribe(lambda e: events.append(e.kind))
            await wait_for(lambda: len(two.seen) >= 30, 30, "the second run's records")
            await more_events(efo, 2)  # a record read twice would show by then
    assert one.data() == [d for _, d in first]
    assert two.data() == [d for _, d in second]  # nothing again, nothing missed
    last = one.seen[-1][1].sequence_number
    assert efo.subscribed[-1][2] == {"Type": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": last}
    assert "source_error" not in events and "throttled" not in events


async def test_resource_in_use_is_retried_within_5_s_then_shown(efo: Any, store: Any) -> None:
    name = unique()
    k = Kinesis(efo.url)
    await k.create(name, 1)
    await k.put(name, numbered(10))
    efo.refuse = 3
    options = dataclasses.replace(
        FAN_OUT, fan_out_options=FanOutOptions(in_use_retry=1.0, in_use_patience=10.0)
    )
    processor = Collect()
    events: list[str] = []
    async with KinesisSource(name, aws(efo.url)) as source:
        consumer = Consumer(source, store, processor, options)
        consumer.events.subscribe(lambda e: events.append(e.kind))
        async with consumer:
            await wait_for(lambda: len(processor.seen) >= 10, 30, "records after 3 refusals")
            tries = [*efo.refused, efo.subscribed[0][0]]
            assert len(tries) == 4
            assert all(0 < b - a < 5 for a, b in itertools.pairwise(tries)), tries
            assert "source_error" not in events  # quiet: a restart's passing overlap
            sid = "shardId-000000000000"

            def view() -> Any:  # a row is a value: read it anew
                return consumer.state.shards[sid]

            # Held for longer than the patience: shown on the shard, never a silent fallback.
            efo.refuse = 10_000
            await consumer.control(ControlRequest(Action.REWIND, sid, Position.trim_horizon()))
            await wait_for(
                lambda: (
                    view().status is ShardStatus.FAILING
                    and "ResourceInUseException" in (view().last_error or "")
                ),
                30,
                "the shard shown failing with the reason",
            )
            assert "another application uses the same consumer name" in (view().last_error or "")
            assert consumer.state.get_records_calls == 0
            efo.refuse = 0
            await wait_for(lambda: len(processor.seen) >= 20, 30, "the rewind's records")
            await wait_for(lambda: view().status is ShardStatus.ACTIVE, 10, "recovered")


async def test_registration_waits_for_active_and_deregisters_when_asked(
    efo: Any, store: Any
) -> None:
    name = unique()
    k = Kinesis(efo.url)
    await k.create(name, 1)
    options = dataclasses.replace(FAN_OUT, fan_out="leaving", deregister_on_exit=True)
    events: list[str] = []
    async with KinesisSource(name, aws(efo.url)) as source:
        consumer = Consumer(source, store, Collect(), options)
        consumer.events.subscribe(lambda e: events.append(e.message))
        async with consumer:
            assert await consumer_names(efo.url, name) == ["leaving"]
            async with k.client() as client:
                arn = (await client.describe_stream_summary(StreamName=name))[
                    "StreamDescriptionSummary"
                ]["StreamARN"]
                described = await client.describe_stream_consumer(
                    StreamARN=arn, ConsumerName="leaving"
                )
            assert described["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE"
    deadline = time.monotonic() + 10  # DELETING, then gone
    while await consumer_names(efo.url, name) != [] and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await consumer_names(efo.url, name) == []
    assert any("as stream consumer 'leaving'" in e for e in events), events
    # kinesis-mock keeps a new consumer CREATING for 300 ms (tests/kinesis-mock/start.js).
    assert "registered stream consumer 'leaving'; waiting for it to be ACTIVE" in events
    assert "deregistered stream consumer 'leaving'" in events


def test_the_command_line_reads_through_fan_out(efo: Any, tmp_path: Any) -> None:
    name = unique()
    k = Kinesis(efo.url)
    asyncio.run(k.create(name, 2))
    sent = numbered(40, keys=4)
    asyncio.run(k.put(name, sent))
    result = run_cli(
        "run", name, "--endpoint-url", efo.url, "--db", str(tmp_path / "c.db"),
        "--no-ui", "--max-records", "40", "--fan-out", "--processor", "print",
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "as stream consumer 'shard-console'" in result.stderr
    assert len(result.stdout.splitlines()) == 40
    assert asyncio.run(consumer_names(efo.url, name)) == ["shard-console"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--deregister-on-exit"], "--deregister-on-exit needs --fan-out"),
        (["--fan-out", "bad name!"], "is not a stream consumer name"),
        (
            ["--fan-out", "--deregister-on-exit", "--lease-table", "t"],
            "would end the other workers' subscriptions",
        ),
        (["--fan-out", "--source", "dynamodb"], "DynamoDB Streams has no enhanced fan-out"),
    ],
)
def test_fan_out_misuse_is_one_line_and_exit_2(
    moto: str, tmp_path: Any, flags: list[str], message: str
) -> None:
    result = run_cli(
        "run", "some-table", "--endpoint-url", moto, "--db", str(tmp_path / "c.db"),
        "--no-ui", *flags,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


async def test_a_closed_shards_last_event_names_its_children(efo: Any) -> None:
    """The source's reading of the last event: no continuation, the children with their
    parents (the worker ends the shard on it, and discovery learns the lineage from it)."""
    from console.sources.fanout import Subscription, register

    name = unique()
    k = Kinesis(efo.url)
    await k.create(name, 1)
    await k.put(name, numbered(5))
    async with k.client() as client:
        await client.split_shard(
            StreamName=name, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127)
        )
    await wait_for_active(k, name)
    async with KinesisSource(name, aws(efo.url)) as source:
        info = await source.describe()
        assert info.arn is not None
        consumer = await register(source, info.arn, "reader")
        subscription = await Subscription.open(
            source, consumer, "shardId-000000000000", Position.trim_horizon()
        )
        try:
            batches = []
            while not batches or batches[-1].next_iterator is not None:
                batch = await asyncio.wait_for(subscription.next(consumer), 10)
                assert batch is not None, "ended without the last event"
                batches.append(batch)
        finally:
            subscription.close()
    assert sum(len(b.records) for b in batches) == 5
    last = batches[-1]
    assert [(c.shard_id, c.parents) for c in last.child_shards] == [
        ("shardId-000000000001", ("shardId-000000000000",)),
        ("shardId-000000000002", ("shardId-000000000000",)),
    ]
    assert last.child_shards[0].ending_hash_key == str(2**127 - 1)


async def test_a_subscription_that_goes_silent_is_dropped_and_renewed(efo: Any, store: Any) -> None:
    """AWS sends an event every few seconds, records or not; a subscription with none for
    ``event_timeout`` is a dead connection: shown, dropped, and subscribed again."""
    name = unique()
    k = Kinesis(efo.url)
    await k.create(name, 1)
    sent = numbered(20)
    await k.put(name, sent)
    efo.stall = 1
    options = dataclasses.replace(FAN_OUT, fan_out_options=FanOutOptions(event_timeout=3.0))
    processor = Collect()
    messages: list[str] = []
    async with KinesisSource(name, aws(efo.url)) as source:
        consumer = Consumer(source, store, processor, options)
        consumer.events.subscribe(lambda e: messages.append(e.message))
        async with consumer:
            await wait_for(lambda: len(processor.seen) >= 20, 30, "records after the silence")
    assert processor.data() == [d for _, d in sent]
    assert any("no event for 3 s on the subscription" in m for m in messages), messages
    starts = [start for _, _, start in efo.subscribed]
    assert starts[:2] == [{"Type": "TRIM_HORIZON"}] * 2, starts  # nothing read: from the start


async def test_a_fleets_workers_share_one_stream_consumer(efo: Any, moto: str) -> None:
    """Two workers on a lease table (moto's DynamoDB): one stream consumer for the fleet, each
    shard subscribed by the worker that holds its lease, every record read (at least once: a
    lease that moves while the workers balance is read again from its checkpoint)."""
    from console.cli.wiring import Fleet, open_consumer

    stream, table = unique("ff"), unique("app")
    k = Kinesis(efo.url)
    await k.create(stream, 2)
    sent = numbered(80, keys=8)
    await k.put(stream, sent)
    a, b = Collect(), Collect()
    options = dataclasses.replace(FAST, fan_out=table)

    def fleet(worker: str) -> Fleet:
        return Fleet(table, worker_id=worker, failover=3.0, endpoint_url=moto)

    async with (
        open_consumer(stream, a, aws=aws(efo.url), options=options, fleet=fleet("a")) as ca,
        open_consumer(stream, b, aws=aws(efo.url), options=options, fleet=fleet("b")) as cb,
    ):
        await wait_for(lambda: len(a.seen) + len(b.seen) >= 80, 40, "every record")
        await wait_for(
            lambda: sorted(v.owner or "" for v in ca.state.shards.values()) == ["a", "b"],
            40,
            "one shard each",
        )
        more = numbered(40, keys=8, start=80)
        await k.put(stream, more)
        await wait_for(lambda: len(a.seen) + len(b.seen) >= 120, 40, "records put meanwhile")
        for consumer, me in ((ca, "a"), (cb, "b")):
            mine = [v for v in consumer.state.shards.values() if v.owner == me]
            assert mine and all(v.mode == "fan-out" for v in mine), me
            assert consumer.state.get_records_calls == 0
    assert set(a.data() + b.data()) == {d for _, d in sent + more}
    assert await consumer_names(efo.url, stream) == [table]


async def test_a_failure_inside_a_subscription_is_retried(efo: Any, store: Any) -> None:
    """AWS may end a subscription with an exception event (InternalFailureException): a
    passing failure, retried from the last continuation, as a 500 on GetRecords is."""
    name = unique()
    k = Kinesis(efo.url)
    await k.create(name, 1)
    sent = numbered(30)
    await k.put(name, sent)
    efo.fail = 2
    processor = Collect()
    kinds: list[str] = []
    async with KinesisSource(name, aws(efo.url)) as source:
        consumer = Consumer(source, store, processor, FAN_OUT)
        consumer.events.subscribe(lambda e: kinds.append(e.kind))
        async with consumer:
            await wait_for(lambda: len(processor.seen) >= 30, 30, "records after two failures")
            shards = consumer.state.shards
            await wait_for(
                lambda: shards["shardId-000000000000"].status is ShardStatus.ACTIVE, 10, "recovered"
            )
            assert shards["shardId-000000000000"].errors["source_error"] == 2
    assert processor.data() == [d for _, d in sent]
    assert "shard_failed" not in kinds


async def test_faults_injected_on_subscribe_lose_nothing(efo: Any, store: Any) -> None:
    from console.sources.faults import FaultInjector

    name = unique()
    k = Kinesis(efo.url)
    await k.create(name, 2)
    sent = numbered(60, keys=4)
    await k.put(name, sent)
    faults = FaultInjector({"throttle": 0.3, "http500": 0.2, "reset": 0.1}, seed=3)
    processor = Collect()
    async with KinesisSource(name, aws(efo.url), faults.hooks()) as source:
        async with Consumer(source, store, processor, FAN_OUT):
            await wait_for(lambda: len(processor.seen) >= 60, 60, "records through the faults")
    assert_once_in_order(processor, sent)
    assert faults.calls["SubscribeToShard"] >= 3 and sum(faults.counts.values()) >= 1


async def test_a_feed_restarted_after_a_retention_loss_subscribes_where_it_is_told(
    efo: Any,
) -> None:
    """The worker restarts its feed when the position it read from is gone (retention) or its
    iterator expired, and reads from the position it names: the continuation of the
    subscription before the restart must not win over it."""
    from console.engine.consume.fanout import SubscriptionFeed
    from console.engine.state import EngineState
    from console.sources.fanout import register

    name = unique()
    k = Kinesis(efo.url)
    await k.create(name, 1)
    sent = numbered(6)
    await k.put(name, sent)
    sid = "shardId-000000000000"
    async with KinesisSource(name, aws(efo.url)) as source:
        info = await source.describe()
        assert info.arn is not None
        consumer = await register(source, info.arn, "reader")
        feed = SubscriptionFeed(source, consumer, sid, EngineState(name, "kinesis", efo.url))
        try:
            first: list[bytes] = []
            while len(first) < len(sent):
                first += [r.data for r in (await feed.read(Position.trim_horizon(), 100)).records]
            feed.restart()
            await k.put(name, numbered(1, start=6))  # a stale continuation would find only this

            async def records() -> Batch:
                while not (batch := await feed.read(Position.trim_horizon(), 100)).records:
                    pass
                return batch

            again = await asyncio.wait_for(records(), 30)
        finally:
            await feed.aclose()
    assert first == [d for _, d in sent]
    assert again.records[0].data == sent[0][1]  # from the start again, as told
    # Every subscribe (the first, and after the restart each try while the service still
    # held the last subscription) from the start.
    starts = [start for _, shard, start in efo.subscribed if shard == sid]
    assert len(starts) >= 2 and all(s == {"Type": "TRIM_HORIZON"} for s in starts), starts
