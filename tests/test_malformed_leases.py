"""A lease table is written by other programs too: an item that claims to be a lease and is not
a valid one is shown, left untouched, and keeps its children waiting, while the rest works."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import boto3
import pytest

from console.checkpoints.leases import MalformedLease, lease_of
from console.cli.wiring import Fleet, open_consumer
from console.model import ShardStatus
from tests.conftest import FAST, Collect, Kinesis, aws, numbered, run_cli, unique, wait_for

SEQ = "49590338271490256608559692538361571095921575989136588898"
GOOD: dict[str, Any] = {
    "leaseKey": {"S": "shardId-000000000000"},
    "leaseCounter": {"N": "7"},
    "checkpoint": {"S": SEQ},
}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"leaseCounter": {"N": "abc"}}, "leaseCounter 'abc' is not a whole number"),
        ({"leaseCounter": {"S": "7"}}, "leaseCounter is a string, not a number"),
        ({"leaseCounter": None}, "it has no leaseCounter"),
        ({"checkpoint": None}, "it has no checkpoint"),
        ({"checkpoint": {"N": "42"}}, "checkpoint is a number, not a string"),
        ({"checkpoint": {"S": "somewhere"}}, "'somewhere' is neither a sequence number"),
        ({"leaseOwner": {"N": "1"}}, "leaseOwner is a number, not a string"),
        ({"parentShardId": {"N": "1"}}, "parentShardId is a number, not a string set"),
        ({"checkpointSubSequenceNumber": {"N": "1.5"}}, "'1.5' is not a whole number"),
    ],
)
def test_an_item_the_kcl_would_not_write_is_malformed_not_guessed(
    change: dict[str, Any], reason: str
) -> None:
    item = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(MalformedLease, match=reason) as caught:
        lease_of(item, "orders")
    assert caught.value.shard_id == "shardId-000000000000"
    assert lease_of(GOOD, "orders") is not None


def test_an_unreadable_lease_is_left_alone_its_child_waits_and_the_rest_is_read(
    kinesalite: str, moto: str
) -> None:
    stream, table = unique("mal"), unique("app")
    kinesis = Kinesis(kinesalite)
    asyncio.run(kinesis.create(stream, 2))
    asyncio.run(kinesis.split(stream, "shardId-000000000000"))
    asyncio.run(kinesis.put(stream, numbered(40, keys=8)))
    ddb = boto3.client(
        "dynamodb", endpoint_url=moto, region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="x",
    )  # fmt: skip
    fleet = Fleet(table, worker_id="w1", failover=3.0, endpoint_url=moto)

    async def first_run() -> None:
        """The leases, made by a worker (the children too, once the parent is read)."""
        seen = Collect()
        async with open_consumer(stream, seen, aws=aws(kinesalite), options=FAST, fleet=fleet):
            await wait_for(lambda: len(seen.seen) == 40, 30, "every record")

    asyncio.run(first_run())
    # Another program breaks shard 0's lease (closed, read to its end) and rewinds it: a
    # counter that is not a number. Its children must wait for it; shard 1 reads on.
    ddb.update_item(
        TableName=table,
        Key={"leaseKey": {"S": "shardId-000000000000"}},
        UpdateExpression="SET leaseCounter = :bad, checkpoint = :start",
        ExpressionAttributeValues={":bad": {"S": "lots"}, ":start": {"S": "TRIM_HORIZON"}},
    )
    ddb.update_item(  # shard 1 read again from the start, to see it work meanwhile
        TableName=table,
        Key={"leaseKey": {"S": "shardId-000000000001"}},
        UpdateExpression="SET checkpoint = :start",
        ExpressionAttributeValues={":start": {"S": "TRIM_HORIZON"}},
    )
    broken = ddb.get_item(TableName=table, Key={"leaseKey": {"S": "shardId-000000000000"}})

    async def second_run() -> tuple[list[str], dict[str, Any], list[str]]:
        seen = Collect()
        async with open_consumer(
            stream, seen, aws=aws(kinesalite), options=FAST, fleet=fleet
        ) as consumer:
            on_one = [d for d in seen.data()]
            await wait_for(
                lambda: any(sid == "shardId-000000000001" for sid, _ in seen.seen), 30, "shard 1"
            )
            await wait_for(
                lambda: consumer.state.shards["shardId-000000000000"].last_error is not None,
                30,
                "the broken lease shown",
            )
            rows = dict(consumer.state.shards)
            told = [e.message for e in consumer.events.since(0) if e.kind == "lease_malformed"]
            on_one = [sid for sid, _ in seen.seen]
        return on_one, rows, told

    read, rows, told = asyncio.run(second_run())
    assert set(read) == {"shardId-000000000001"}  # never shard 0, nor its children
    view = rows["shardId-000000000000"]
    assert view.status is ShardStatus.READY
    assert view.last_error == "malformed lease: leaseCounter is a string, not a number"
    kids = [s for s in rows if s not in ("shardId-000000000000", "shardId-000000000001")]
    assert kids and all(rows[k].status is ShardStatus.WAITING for k in kids)
    assert len(told) == 1 and "fix or delete the item" in told[0]
    after = ddb.get_item(TableName=table, Key={"leaseKey": {"S": "shardId-000000000000"}})
    assert after["Item"] == broken["Item"]  # untouched

    listing = run_cli(
        "leases", "list", "--lease-table", table, "--stream", stream, "--endpoint-url",
        kinesalite, "--dynamodb-endpoint-url", moto, "--json",
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    rows_out = {r["shard"]: r for r in json.loads(listing.stdout)}
    assert rows_out["shardId-000000000000"]["malformed"] == (
        "leaseCounter is a string, not a number"
    )
    assert rows_out["shardId-000000000001"]["malformed"] == ""
    change = run_cli(
        "rewind", "shardId-000000000000", "--to", "trim_horizon", "--yes", "--lease-table",
        table, "--stream", stream, "--endpoint-url", kinesalite, "--dynamodb-endpoint-url", moto,
    )  # fmt: skip
    assert change.returncode == 2 and "is malformed" in change.stderr, change.stderr
    assert len(change.stderr.strip().splitlines()) == 1
    final = ddb.get_item(TableName=table, Key={"leaseKey": {"S": "shardId-000000000000"}})
    assert final["Item"] == broken["Item"]
