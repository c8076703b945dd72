"""Fleet mode inside one process: consumers opened with ``open_consumer(..., fleet=...)``, as a
program of your own would. The console's change path on a shard another worker reads, what the
snapshot tells of the fleet, and DynamoDB Streams through a lease table."""

from __future__ import annotations

from typing import Any

import boto3
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from console.cli.wiring import Fleet, open_consumer
from console.engine.changes.plan import Action, ControlRequest
from console.model import Position, ShardStatus
from console.observe.metrics import registry_for
from tests.conftest import FAST, Collect, Kinesis, aws, numbered, unique, wait_for
from tests.test_dynamodb import changes, create_table


def table_items(moto: str, table: str) -> dict[str, dict[str, Any]]:
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=moto,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    return {i["leaseKey"]["S"]: i for i in ddb.scan(TableName=table)["Items"]}


async def test_a_change_from_one_workers_console_rewinds_a_shard_another_reads(
    kinesalite: str, moto: str
) -> None:
    stream, table = unique("fe"), unique("app")
    kinesis = Kinesis(kinesalite)
    await kinesis.create(stream, 2)
    records = numbered(80, keys=8)
    await kinesis.put(stream, records)
    a, b = Collect(), Collect()

    def fleet(worker: str) -> Fleet:
        return Fleet(table, worker_id=worker, failover=3.0, endpoint_url=moto)

    async with (
        open_consumer(stream, a, aws=aws(kinesalite), options=FAST, fleet=fleet("a")) as ca,
        open_consumer(stream, b, aws=aws(kinesalite), options=FAST, fleet=fleet("b")) as cb,
    ):
        await wait_for(lambda: len(a.seen) + len(b.seen) == 80, 30, "every record")
        await wait_for(
            lambda: sorted(v.owner or "" for v in ca.state.shards.values()) == ["a", "b"],
            30,
            "one shard each, as a's snapshot tells",
        )
        theirs = next(sid for sid, v in ca.state.shards.items() if v.owner == "b")
        # b reads it (a lease handed over is picked up at b's next discovery)
        await wait_for(lambda: cb.state.shards[theirs].status is ShardStatus.ACTIVE, 30, "b reads")
        assert ca.state.shards[theirs].status is ShardStatus.LEASED  # a does not read it
        assert ca.state.worker_id == "a"
        await wait_for(lambda: len(ca.state.workers) == 2, 30, "both heartbeats")
        before = len([r for sid, r in a.seen + b.seen if sid == theirs])  # a may have read some

        result = await ca.control(
            ControlRequest(Action.REWIND, theirs, position=Position.trim_horizon(), actor="ops")
        )
        assert result.ok, result.message
        # b loses the lease at its next renewal; whoever takes it next reads the shard again.
        await wait_for(
            lambda: len([r for sid, r in a.seen + b.seen if sid == theirs]) == 2 * before,
            30,
            "the shard read again",
        )
        await wait_for(
            lambda: any(f"lease on {theirs} lost" in e.message for e in cb.events.since(0)),
            30,
            "b told of its loss",
        )
        history = await ca.history(theirs)
        assert [(h.cause, h.actor) for h in history[:1]] == [("rewind", "ops")]
        assert history[0].new_position == Position.trim_horizon()

        # b's metrics: the loss counted, and (once the table settles) series for exactly the
        # shards the table says b holds, each naming the worker.
        wanted = ("shard_console_shard_records_processed_total", "shard_console_leases_lost_total")

        def served(consumer: Any) -> dict[str, Any]:
            text = generate_latest(registry_for(consumer)).decode()
            return {
                s.labels.get("shard_id", s.name): s
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name in wanted
            }

        def held_by_b() -> set[str]:
            items = table_items(moto, table).items()
            return {k for k, i in items if i.get("leaseOwner") == {"S": "b"}}

        assert served(cb)["shard_console_leases_lost_total"].value >= 1
        await wait_for(
            lambda: {k for k in served(cb) if k.startswith("shardId")} == held_by_b(),
            30,
            "b's series to follow the table",
        )
        assert all(
            s.labels["worker"] == "b" for k, s in served(cb).items() if k.startswith("shardId")
        )


async def test_dynamodb_streams_share_their_shards_through_a_lease_table(moto: str) -> None:
    name, arn = await create_table(moto)
    assert arn is not None
    await changes(moto, name)
    lease_table = unique("app")
    seen = Collect()
    fleet = Fleet(lease_table, worker_id="ddb-1", failover=3.0, endpoint_url=moto)
    async with open_consumer(arn, seen, aws=aws(moto), options=FAST, fleet=fleet) as consumer:
        await wait_for(lambda: len(seen.seen) == 4, 30, "the four changes")
        last = seen.seen[-1][1].sequence_number
        shard = seen.seen[-1][0]
        await wait_for(
            lambda: table_items(moto, lease_table)[shard]["checkpoint"]["S"] == last,
            30,
            "the checkpoint in the lease",
        )
        assert consumer.state.shards[shard].owner == "ddb-1"
    item = table_items(moto, lease_table)[shard]
    assert "leaseOwner" not in item  # given back on the way out
    assert item["checkpointSubSequenceNumber"] == {"N": "0"}
