"""DynamoDB Streams as a source: moto's DynamoDB and DynamoDB Streams over HTTP for records and
errors, the embedded endpoint for lineage that rolls over, and generated DescribeStream pages
injected at the client boundary for pagination and parents that have left retention."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import aioboto3
import pytest

from console.checkpoints.sqlite import SqliteStore
from console.demo.wire import ApiError
from console.engine.changes.plan import Action, ControlRequest
from console.engine.consume.consumer import Consumer
from console.engine.lineage import Lineage
from console.model import ChangeRecord, Position, Record, ShardStatus
from console.sources.dynamodb import DynamoDBSource, created_since, is_stream_arn
from console.sources.faults import _response
from tests.conftest import FAST, Collect, aws, run_cli, unique, wait_for
from tests.dynamo_pages import ARN, GeneratedStream

KEYS = [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}]
ATTRS = [
    {"AttributeName": "pk", "AttributeType": "S"},
    {"AttributeName": "sk", "AttributeType": "N"},
]


def ddb(url: str) -> Any:
    return aioboto3.Session().client("dynamodb", endpoint_url=url, region_name="us-east-1")


async def create_table(url: str, stream: bool = True) -> tuple[str, str | None]:
    name = unique("tbl")
    spec = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"} if stream else None
    async with ddb(url) as client:
        resp = await client.create_table(
            TableName=name,
            KeySchema=KEYS,
            AttributeDefinitions=ATTRS,
            BillingMode="PAY_PER_REQUEST",
            **({"StreamSpecification": spec} if spec else {}),
        )
    return name, resp["TableDescription"].get("LatestStreamArn")


async def changes(url: str, table: str) -> None:
    """Two inserts, an update, a delete."""
    async with ddb(url) as client:
        await client.put_item(
            TableName=table,
            Item={
                "pk": {"S": "a"},
                "sk": {"N": "1"},
                "price": {"N": "9.5"},
                "qty": {"N": "3"},
                "tags": {"SS": ["z", "b"]},
                "meta": {"M": {"ok": {"BOOL": True}, "none": {"NULL": True}}},
            },
        )
        await client.put_item(TableName=table, Item={"pk": {"S": "b"}, "sk": {"N": "2"}})
        await client.update_item(
            TableName=table,
            Key={"pk": {"S": "a"}, "sk": {"N": "1"}},
            UpdateExpression="SET qty = :q",
            ExpressionAttributeValues={":q": {"N": "4"}},
        )
        await client.delete_item(TableName=table, Key={"pk": {"S": "b"}, "sk": {"N": "2"}})


async def test_inserts_updates_and_deletes_arrive_with_their_images_and_restart_resumes(
    moto: str, db: str, read_path: str
) -> None:
    table, arn = await create_table(moto)
    assert arn is not None and is_stream_arn(arn)
    await changes(moto, table)
    store = await SqliteStore.open(db)
    first = Collect()
    async with DynamoDBSource(arn, aws(moto, read_path)) as source:
        async with Consumer(source, store, first, FAST) as consumer:
            await wait_for(lambda: len(first.seen) == 4)
            assert consumer.key == arn
    records = [r for _, r in first.seen]
    assert all(isinstance(r, ChangeRecord) for r in records)
    insert, _, modify, remove = records  # type: ignore[misc]
    assert [r.event_name for r in records] == ["INSERT", "INSERT", "MODIFY", "REMOVE"]
    assert insert.keys == {"pk": "a", "sk": Decimal(1)}
    assert insert.old_image is None
    assert insert.new_image["price"] == Decimal("9.5") and insert.new_image["tags"] == {"z", "b"}
    assert insert.new_image["meta"] == {"ok": True, "none": None}
    assert modify.old_image["qty"] == Decimal(3) and modify.new_image["qty"] == Decimal(4)
    assert remove.new_image is None and remove.old_image == {"pk": "b", "sk": Decimal(2)}
    assert json.loads(insert.partition_key) == {"pk": "a", "sk": 1}
    assert json.loads(insert.data)["new_image"]["tags"] == ["b", "z"]

    # Restart: only what is new arrives.
    async with ddb(moto) as client:
        await client.put_item(TableName=table, Item={"pk": {"S": "c"}, "sk": {"N": "3"}})
    second = Collect()
    async with DynamoDBSource(arn, aws(moto, read_path)) as source:
        async with Consumer(source, store, second, FAST):
            await wait_for(lambda: len(second.seen) == 1)
    await store.close()
    only = second.seen[0][1]
    assert isinstance(only, ChangeRecord) and only.keys == {"pk": "c", "sk": Decimal(3)}


def test_run_a_table_from_the_command_line_writes_json_safe_rows(moto: str, tmp_path: Path) -> None:
    import asyncio

    table, _ = asyncio.run(create_table(moto))
    asyncio.run(changes(moto, table))
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "run",
        table,
        "--source",
        "dynamodb",
        "--endpoint-url",
        moto,
        "--db",
        str(tmp_path / "c.db"),
        "--processor",
        f"jsonl:{out}",
        "--max-records",
        "4",
        "--no-ui",
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["event_name"] for r in rows] == ["INSERT", "INSERT", "MODIFY", "REMOVE"]
    first = rows[0]
    assert first["keys"] == {"pk": "a", "sk": 1}
    assert first["new_image"]["price"] == 9.5 and first["new_image"]["tags"] == ["b", "z"]
    assert first["old_image"] is None and first["stream"].startswith(f"{table}/stream/")
    assert rows[2]["old_image"]["qty"] == 3 and rows[2]["new_image"]["qty"] == 4
    assert rows[3]["new_image"] is None


def test_tables_without_a_usable_stream_get_one_line_naming_the_fix(
    moto: str, tmp_path: Path
) -> None:
    import asyncio

    plain, _ = asyncio.run(create_table(moto, stream=False))
    disabled, arn = asyncio.run(create_table(moto))

    async def disable() -> None:
        async with ddb(moto) as client:
            await client.update_table(
                TableName=disabled, StreamSpecification={"StreamEnabled": False}
            )

    asyncio.run(disable())
    db = tmp_path / "c.db"
    cases = [
        (["--source", "dynamodb", plain], "has no stream: enable one with: aws dynamodb"),
        (["--source", "dynamodb", disabled], "is disabled: enable it with: aws dynamodb"),
        (["--source", "dynamodb", "no-such-table"], "table 'no-such-table' not found"),
        ([str(arn).replace(disabled, "gone-table")], "not found at"),
        (["--source", "kinesis", str(arn)], "is a DynamoDB stream ARN"),
        (["--source", "dynamodb", "arn:aws:kinesis:us-east-1:1:stream/x"], "not a DynamoDB"),
    ]
    for args, needle in cases:
        result = run_cli(
            "run", *args, "--endpoint-url", moto, "--db", str(db), "--no-ui", "--duration", "5"
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and needle in lines[0], (
            args,
            result.stderr,
        )
    assert not db.exists()


# -- lineage on the embedded endpoint, where shards roll over ---------------------------------


def roll(endpoint: Any, table: str, start: int, count: int) -> None:
    db = endpoint.dynamodb
    for i in range(start, start + count):
        key = f"k{i % 5}"
        item = {"pk": {"S": key}, "n": {"N": str(i)}}
        endpoint.call(db.put_item, table, item)


async def test_rolled_over_shards_are_read_parents_first_in_per_key_order(
    demo_endpoint: Any, db: str
) -> None:
    table = demo_endpoint.call(demo_endpoint.dynamodb.create_table, "orders", ("pk",), 2)
    roll(demo_endpoint, "orders", 0, 30)
    demo_endpoint.call(demo_endpoint.dynamodb.roll_over, "orders")
    roll(demo_endpoint, "orders", 30, 30)
    demo_endpoint.call(demo_endpoint.dynamodb.roll_over, "orders")
    roll(demo_endpoint, "orders", 60, 30)
    store = await SqliteStore.open(db)
    seen = Collect()
    async with DynamoDBSource(table.stream_arn, aws(demo_endpoint.url)) as source:
        async with Consumer(source, store, seen, FAST) as consumer:
            await wait_for(lambda: len(seen.seen) == 90)
            await wait_for(
                lambda: (
                    sum(v.status is ShardStatus.DONE for v in consumer.state.shards.values()) == 4
                )
            )
            assert len(consumer.lineage) == 6
    await store.close()
    per_key: dict[str, list[int]] = {}
    for _, record in seen.seen:
        assert isinstance(record, ChangeRecord)
        per_key.setdefault(record.keys["pk"], []).append(int(record.new_image["n"]))
    assert all(ns == sorted(ns) for ns in per_key.values()), per_key
    assert sum(len(v) for v in per_key.values()) == 90


async def test_a_trimmed_checkpoint_is_loud_and_continues_at_trim_horizon(
    demo_endpoint: Any, db: str
) -> None:
    table = demo_endpoint.call(demo_endpoint.dynamodb.create_table, "orders", ("pk",), 1)
    roll(demo_endpoint, "orders", 0, 5)
    store = await SqliteStore.open(db)
    first = Collect()
    async with DynamoDBSource(table.stream_arn, aws(demo_endpoint.url)) as source:
        async with Consumer(source, store, first, FAST):
            await wait_for(lambda: len(first.seen) == 5)

    trimmed = Counter[str]()

    def trim_once(request: Any, event_name: str = "", **_: Any) -> Any:
        body = json.loads(request.body or b"{}")
        if body.get("ShardIteratorType") == "AFTER_SEQUENCE_NUMBER" and not trimmed:
            trimmed["GetShardIterator"] += 1
            return _response(
                request.url,
                400,
                "TrimmedDataAccessException",
                "the requested data is beyond the 24 h trim horizon",
            )
        return None

    hooks = [("before-send.dynamodbstreams.GetShardIterator", trim_once)]
    events: list[Any] = []
    second = Collect()
    async with DynamoDBSource(table.stream_arn, aws(demo_endpoint.url), hooks) as source:
        consumer = Consumer(source, store, second, FAST)
        consumer.events.subscribe(events.append)
        async with consumer:
            await wait_for(lambda: len(second.seen) == 5)  # everything the shard still holds
            key = consumer.key
    (sid,) = {sid for sid, _ in second.seen}
    history = await store.history(key, sid, 10)
    await store.close()
    assert trimmed["GetShardIterator"] == 1
    loud = [e for e in events if e.kind == "retention_loss"]
    assert loud and loud[0].level.value == "error" and "TRIM_HORIZON" in loud[0].message
    # ...and recorded: the history says where the checkpoint was when the data was lost.
    lost = [h for h in history if h.cause == "retention"]
    assert len(lost) == 1 and lost[0].note == loud[0].message
    assert lost[0].old_position == Position.after_sequence(first.seen[-1][1].sequence_number)
    assert lost[0].new_position == Position.trim_horizon()


async def test_a_rewind_to_an_instant_reads_only_what_was_written_after_it(
    demo_endpoint: Any, db: str
) -> None:
    """DynamoDB Streams has no AT_TIMESTAMP: the source reads from the start and drops what
    came before the instant."""
    import math
    import time

    table = demo_endpoint.call(demo_endpoint.dynamodb.create_table, "orders", ("pk",), 1)
    roll(demo_endpoint, "orders", 0, 10)
    # Into the next second: the records of the instant's own second are read again, on purpose.
    instant = math.floor(time.time()) + 1.05
    time.sleep(instant - time.time() + 0.05)
    roll(demo_endpoint, "orders", 10, 5)
    store = await SqliteStore.open(db)
    seen = Collect()
    async with DynamoDBSource(table.stream_arn, aws(demo_endpoint.url)) as source:
        async with Consumer(source, store, seen, FAST) as consumer:
            await wait_for(lambda: len(seen.seen) == 15)
            sid = next(iter(consumer.lineage.shards))
            result = await consumer.control(
                ControlRequest(Action.REWIND, sid, position=Position.at_timestamp(instant))
            )
            assert result.ok, result.message
            await wait_for(lambda: len(seen.seen) == 20)
    await store.close()
    again = [int(r.new_image["n"]) for _, r in seen.seen[15:]]  # type: ignore[attr-defined]
    assert again == list(range(10, 15))


def test_an_instant_keeps_the_records_of_its_second_as_aws_rounds_them_down() -> None:
    """AWS gives creation times rounded down to the second: a record written at 100.7, after an
    instant of 100.4, says 100.0 and must not be dropped. One written at 99.9 says 99.0."""
    records: list[Record] = [
        Record(str(i), "k", b"", at) for i, at in enumerate((99.0, 100.0, 100.0, 101.0))
    ]
    assert [r.sequence_number for r in created_since(records, 100.4)] == ["1", "2", "3"]
    assert [r.sequence_number for r in created_since(records, 101.0)] == ["3"]


async def test_the_embedded_stream_holds_its_last_changes_and_refuses_reads_behind_them(
    demo_endpoint: Any,
) -> None:
    """The demo runs for days in bounded memory: the oldest closed shards leave first, then an
    open shard's oldest records; a read behind what is held is TrimmedDataAccessException."""
    from console.sources.base import TrimmedDataError

    dynamodb = demo_endpoint.dynamodb
    dynamodb.keep = 30
    table = demo_endpoint.call(dynamodb.create_table, "orders", ("pk",), 1)
    roll(demo_endpoint, "orders", 0, 20)
    demo_endpoint.call(dynamodb.roll_over, "orders")
    roll(demo_endpoint, "orders", 20, 11)  # 31 held: one too many
    async with DynamoDBSource(table.stream_arn, aws(demo_endpoint.url)) as source:
        (child,) = await source.list_shards()  # the parent left, whole, with its 20 records
        assert child.parent_id is not None
        early = await source.get_iterator(child.shard_id, Position.trim_horizon())
        roll(demo_endpoint, "orders", 31, 40)  # 51 in the open shard: its oldest 21 leave
        with pytest.raises(TrimmedDataError):
            await source.get_records(early, 100)
        start = await source.get_iterator(child.shard_id, Position.trim_horizon())
        batch = await source.get_records(start, 100)
    assert [int(r.new_image["n"]) for r in batch.records] == list(range(41, 71))  # type: ignore[attr-defined]


def test_the_embedded_endpoint_refuses_what_aws_refuses(demo_endpoint: Any) -> None:
    db = demo_endpoint.dynamodb
    demo_endpoint.call(db.create_table, "orders", ("pk",), 1)
    with pytest.raises(ApiError):
        demo_endpoint.call(db.create_table, "orders", ("pk",), 1)
    with pytest.raises(ApiError):
        demo_endpoint.call(db.put_item, "orders", {"other": {"S": "x"}})


# -- thousands of shards, from generated pages at the client boundary ---------------------------


async def test_describe_stream_is_paged_100_at_a_time_and_gone_parents_do_not_block(
    read_path: str,
) -> None:
    generated = GeneratedStream(ARN, 1_002)
    settings = aws(
        "http://127.0.0.1:9", read_path
    )  # never reached: every call is answered at the hook
    async with DynamoDBSource(
        ARN, settings, [("before-send.dynamodbstreams", generated.hook)]
    ) as s:
        shards = await s.list_shards()
    assert len(shards) == 1_002 and len({s.shard_id for s in shards}) == 1_002
    assert len(generated.pages) == 11 and generated.pages[0] is None
    assert generated.pages[1] == generated.shards[99]["ShardId"]
    lineage = Lineage.build(shards)
    roots = lineage.roots()
    assert len(roots) == 4 and all(lineage.gone_parents(r) for r in roots)
    assert set(lineage.ready(set())) == set(roots)  # a parent past retention does not block
    first = min(roots)  # partition 0: shards 0, 4, ..., 1000
    assert len([first, *lineage.descendants(first)]) == 251


async def test_a_repeated_last_evaluated_shard_id_ends_the_listing() -> None:
    """An endpoint that ignores ExclusiveStartShardId must not loop us forever."""
    generated = GeneratedStream(ARN, 300)

    def stuck(request: Any, event_name: str = "", **kw: Any) -> Any:
        body = json.loads(request.body)
        body.pop("ExclusiveStartShardId", None)
        request.body = json.dumps(body).encode()
        return generated.hook(request, event_name, **kw)

    async with DynamoDBSource(
        ARN, aws("http://127.0.0.1:9"), [("before-send.dynamodbstreams", stuck)]
    ) as source:
        shards = await source.list_shards()
    assert len(shards) == 100 and len(generated.pages) == 2


def test_a_disabled_stream_by_arn_is_drained_with_a_warning_by_table_refused(
    demo_endpoint: Any, tmp_path: Path
) -> None:
    ddb = demo_endpoint.dynamodb
    table = demo_endpoint.call(ddb.create_table, "orders", ("pk",), 2)
    roll(demo_endpoint, "orders", 0, 12)
    demo_endpoint.call(ddb.disable_stream, "orders")
    roll(demo_endpoint, "orders", 12, 5)  # not recorded: the stream is off
    out = tmp_path / "out.jsonl"
    common = ["--endpoint-url", demo_endpoint.url, "--db", str(tmp_path / "c.db"), "--no-ui"]
    by_table = run_cli("run", "orders", "--source", "dynamodb", *common)
    lines = by_table.stderr.strip().splitlines()
    assert by_table.returncode == 2 and len(lines) == 1, by_table.stderr
    assert "is disabled: enable it with: aws dynamodb update-table --table-name orders" in lines[0]
    by_arn = run_cli(
        "run", table.stream_arn, *common, "--processor", f"jsonl:{out}", "--max-records", "12"
    )
    assert by_arn.returncode == 0, by_arn.stderr
    assert "WARNING" in by_arn.stderr and "is disabled: it gets no new records" in by_arn.stderr
    assert len(out.read_text().splitlines()) == 12


def test_binary_attributes_reach_jsonl_as_base64(moto: str, tmp_path: Path, read_path: str) -> None:
    import asyncio
    import base64

    table, _ = asyncio.run(create_table(moto))

    async def put() -> None:
        async with ddb(moto) as client:
            await client.put_item(
                TableName=table,
                Item={
                    "pk": {"S": "bin"},
                    "sk": {"N": "1"},
                    "blob": {"B": b"\x00\xffraw"},
                    "blobs": {"BS": [b"\x02", b"\x01"]},
                },
            )

    asyncio.run(put())
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "run", table, "--source", "dynamodb", "--endpoint-url", moto,
        "--db", str(tmp_path / "c.db"), "--processor", f"jsonl:{out}", "--max-records", "1",
        "--no-ui", "--read-path", read_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    image = row["new_image"]
    assert image["blob"] == base64.b64encode(b"\x00\xffraw").decode()
    assert image["blobs"] == [base64.b64encode(b).decode() for b in (b"\x01", b"\x02")]


async def test_a_rewind_behind_a_long_prefix_reads_on_without_idling(
    demo_endpoint: Any, db: str
) -> None:
    """5,000 changes before the instant are 5 pages the filter empties. They are not the tip:
    the worker reads on at once. (With an hour's idle interval, one idle wait would fail it.)"""
    import dataclasses
    import math
    import time

    dynamodb = demo_endpoint.dynamodb
    table = demo_endpoint.call(dynamodb.create_table, "orders", ("pk",), 1)

    def write(start: int, count: int) -> None:
        for i in range(start, start + count):
            dynamodb.put_item("orders", {"pk": {"S": f"k{i}"}, "n": {"N": str(i)}})

    demo_endpoint.call(write, 0, 5000)
    instant = math.floor(time.time()) + 1.05  # into the next second: AWS rounds down
    while time.time() < instant + 0.05:
        await asyncio.sleep(0.01)
    demo_endpoint.call(write, 5000, 5)
    seen = Collect()
    store = await SqliteStore.open(db)
    options = dataclasses.replace(FAST, idle_interval=3600)
    try:
        async with DynamoDBSource(table.stream_arn, aws(demo_endpoint.url)) as source:
            async with Consumer(source, store, seen, options) as consumer:
                await wait_for(lambda: len(seen.seen) == 5005, timeout=30)
                sid = next(iter(consumer.lineage.shards))
                result = await consumer.control(
                    ControlRequest(Action.REWIND, sid, position=Position.at_timestamp(instant))
                )
                assert result.ok, result.message
                await wait_for(lambda: len(seen.seen) == 5010, timeout=30, what="the replay")
    finally:
        await store.close()
    assert [int(r.new_image["n"]) for _, r in seen.seen[5005:]] == list(range(5000, 5005))  # type: ignore[attr-defined]
