"""The demo: its endpoint keeps AWS's resharding semantics, and the demo shows true lineage."""

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from console.checkpoints.sqlite import SqliteStore
from console.demo import Demo, DemoOptions, EmbeddedEndpoint
from console.demo.kinesis import hash_key
from console.engine.consume.consumer import Consumer
from console.model import Position, ShardStatus
from console.sources.kinesis import KinesisSource
from tests.conftest import FAST, Collect, aws, wait_for


async def test_after_a_split_writes_go_to_the_children_and_the_parent_ends(demo_endpoint) -> None:
    e: EmbeddedEndpoint = demo_endpoint
    e.call(e.kinesis.create_stream, "s", 1)
    e.call(e.kinesis.put, "s", "before", b"1")
    a, b = e.call(e.kinesis.split, "s", "shardId-000000000000", 2**127)
    keys = [f"key-{i}" for i in range(40)]
    for key in keys:
        e.call(e.kinesis.put, "s", key, b"after")
    async with KinesisSource("s", aws(e.url)) as source:
        shards = {s.shard_id: s for s in await source.list_shards()}
        assert shards["shardId-000000000000"].is_closed
        assert shards[a].parent_id == shards[b].parent_id == "shardId-000000000000"
        it = await source.get_iterator("shardId-000000000000", Position.trim_horizon())
        batch = await source.get_records(it, 100)
        assert [r.data for r in batch.records] == [b"1"]  # nothing after the split
        assert batch.next_iterator is None
        assert {c.shard_id for c in batch.child_shards} == {a, b}
        for child in (a, b):
            it = await source.get_iterator(child, Position.trim_horizon())
            got = (await source.get_records(it, 100)).records
            low = child == a
            assert got and all((hash_key(r.partition_key) < 2**127) == low for r in got)


async def test_merge_needs_adjacent_shards_and_records_are_not_copied(demo_endpoint) -> None:
    e: EmbeddedEndpoint = demo_endpoint
    e.call(e.kinesis.create_stream, "s", 3)
    e.call(e.kinesis.put, "s", "x", b"old")
    with pytest.raises(Exception, match="not adjacent"):
        e.call(e.kinesis.merge, "s", "shardId-000000000000", "shardId-000000000002")
    child = e.call(e.kinesis.merge, "s", "shardId-000000000000", "shardId-000000000001")
    async with KinesisSource("s", aws(e.url)) as source:
        it = await source.get_iterator(child, Position.trim_horizon())
        assert (await source.get_records(it, 100)).records == []
        shard = {s.shard_id: s for s in await source.list_shards()}[child]
        assert shard.parents == ("shardId-000000000000", "shardId-000000000001")


async def test_iterators_expire_and_garbage_is_refused(demo_endpoint, monkeypatch) -> None:
    from console.demo import kinesis as module
    from console.sources.base import ExpiredIteratorError, FatalSourceError

    e: EmbeddedEndpoint = demo_endpoint
    e.call(e.kinesis.create_stream, "s", 1)
    async with KinesisSource("s", aws(e.url)) as source:
        it = await source.get_iterator("shardId-000000000000", Position.latest())
        monkeypatch.setattr(module, "_ITERATOR_TTL", 0.0)
        await asyncio.sleep(0.01)
        with pytest.raises(ExpiredIteratorError):
            await source.get_records(it, 10)
        with pytest.raises(FatalSourceError, match="Invalid ShardIterator"):
            await source.get_records("garbage", 10)


async def test_the_demo_splits_then_merges_and_the_consumer_follows(db) -> None:
    events: list[str] = []
    demo = Demo(DemoOptions(rate=200, split_at=0.5, merge_at=1.0, seed=3), on_event=events.append)
    demo.start()
    processor = Collect()
    store = await SqliteStore.open(db)
    try:
        async with KinesisSource("demo", demo.aws) as source:
            async with Consumer(source, store, processor, FAST) as consumer:
                await wait_for(
                    lambda: (
                        sum(v.status is ShardStatus.DONE for v in consumer.state.shards.values())
                        == 3
                    ),
                    what="split parent and merged pair done",
                )
                lineage = consumer.lineage
                await wait_for(lambda: len(processor.seen) >= 400)
    finally:
        demo.stop()
        await store.close()
    assert events[0].startswith("demo: split shardId-000000000000 into")
    assert events[1].startswith("demo: merged shardId-000000000002 and shardId-000000000003")
    assert len(lineage) == 7
    assert lineage.shards["shardId-000000000006"].parents == (
        "shardId-000000000002",
        "shardId-000000000003",
    )
    # Orders are numbered per customer: first deliveries per customer arrive in order.
    last: Counter[str] = Counter()
    for _, record in processor.seen:
        order = json.loads(record.data)
        assert record.partition_key == order["customer"]
        assert order["n"] == last[order["customer"]] + 1
        last[order["customer"]] = order["n"]


def test_the_dynamodb_demo_places_ships_and_cancels_orders_across_roll_overs(
    tmp_path: Path,
) -> None:
    """`demo --source dynamodb` as an operator runs it: the table's stream, read through
    the same engine, carries INSERT, MODIFY and REMOVE in per-key order across roll-overs."""
    from tests.conftest import run_cli

    out = tmp_path / "orders.jsonl"
    result = run_cli(
        "demo",
        "--source",
        "dynamodb",
        "--no-ui",
        "--rate",
        "200",
        "--duration",
        "3",
        "--processor",
        f"jsonl:{out}",
        "--rollover",
        "1",
    )
    assert result.returncode == 0, result.stderr
    assert "rolled over" in result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["event_name"] for r in rows} == {"INSERT", "MODIFY", "REMOVE"}
    assert len({r["shard_id"] for r in rows}) > 4  # children of the roll-overs were read
    # DynamoDB orders changes per item: each order is placed, maybe shipped, maybe cancelled,
    # in that order, whatever shard its line of roll-overs is on.
    lives: dict[str, list[str]] = {}
    for row in rows:
        lives.setdefault(json.dumps(row["keys"], sort_keys=True), []).append(row["event_name"])
    for events in lives.values():
        assert events[0] == "INSERT" and "INSERT" not in events[1:], events
        assert "REMOVE" not in events[:-1], events


def test_a_demo_with_a_database_resumes_its_stream(tmp_path: Path) -> None:
    """Two demo runs on one database: the second resumes the first's stream where it left
    off, so each customer's orders arrive once, numbered on from the first run."""
    from tests.conftest import run_cli

    db, out = tmp_path / "c.db", tmp_path / "orders.jsonl"
    common = ["demo", "--no-ui", "--rate", "200", "--db", str(db), "--processor", f"jsonl:{out}"]
    first = run_cli(*common, "--duration", "2")
    assert first.returncode == 0, first.stderr
    rows_first = len(out.read_text().splitlines())
    second = run_cli(*common, "--duration", "2")
    assert second.returncode == 0, second.stderr
    assert "demo: resumed from" in second.stderr and f"{db}.demo.json" in second.stderr
    assert oct(Path(f"{db}.demo.json").stat().st_mode & 0o777) == "0o600"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) > rows_first > 0
    numbers: dict[str, list[int]] = {}
    for row in rows:
        order = json.loads(row["data"])
        numbers.setdefault(order["customer"], []).append(order["n"])
    for customer, ns in numbers.items():
        assert ns == list(range(1, len(ns) + 1)), customer  # once each, in order, no restart
    # One stream in the database: the control CLI needs no --stream.
    listing = run_cli("checkpoints", "--db", str(db), "--json")
    assert listing.returncode == 0, listing.stderr
    assert {r["shard"] for r in json.loads(listing.stdout)} >= {
        f"shardId-{i:012d}" for i in range(4)
    }


def test_an_unreadable_demo_state_is_a_usage_error(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    db = tmp_path / "c.db"
    Path(f"{db}.demo.json").write_text("{not json")
    result = run_cli("demo", "--no-ui", "--duration", "1", "--db", str(db))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "is unreadable" in line and "delete it" in line
    assert not db.exists()
