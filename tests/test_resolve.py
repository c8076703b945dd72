"""Times turned into records never hang: on kinesalite as users run it (GetShardIterator
AT_TIMESTAMP with no record that new never answers there) as on the mended one, a rewind to a
time, a skip to the tip and a consumer started at ``latest`` resolve within seconds."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from console.engine.changes.plan import ControlError
from console.engine.changes.resolve import resolve_bounded
from console.model import Position
from console.sources.kinesis import KinesisSource
from tests.conftest import FAST, Collect, Kinesis, aws, numbered, run_cli, unique, wait_for
from tests.test_attach import App


@pytest.fixture(params=["mended", "stock"])
def either(request: pytest.FixtureRequest, kinesalite: str, stock_kinesalite: str) -> str:
    return kinesalite if request.param == "mended" else stock_kinesalite


def quick(url: str) -> Any:
    """AWS settings whose AT_TIMESTAMP is given half a second (the default is 5)."""
    return dataclasses.replace(aws(url), at_timestamp_within=0.5)


async def test_a_time_resolves_to_the_record_before_it(either: str) -> None:
    name = unique("res")
    k = Kinesis(either)
    await k.create(name, 1)
    first = await k.put(name, numbered(3, keys=1))
    await asyncio.sleep(1.1)  # arrival times the emulators keep to the second
    cut = time.time()
    await asyncio.sleep(0.05)
    second = await k.put(name, numbered(2, keys=1, start=3))
    async with KinesisSource(name, quick(either)) as source:
        [shard] = await source.list_shards()
        sid = shard.shard_id
        async with asyncio.timeout(60):  # a hang fails here, not at the suite's timeout
            between = await resolve_bounded(source, sid, Position.at_timestamp(cut))
            tip = await resolve_bounded(source, sid, Position.at_timestamp(time.time()))
            start = await resolve_bounded(source, sid, Position.at_timestamp(cut - 3600))
            at = await resolve_bounded(
                source, sid, Position.at_sequence(second[0]["SequenceNumber"])
            )
    assert between == Position.after_sequence(first[-1]["SequenceNumber"])
    assert tip == Position.after_sequence(second[-1]["SequenceNumber"])
    assert start == Position.trim_horizon()
    assert at == Position.after_sequence(first[-1]["SequenceNumber"])


async def test_what_cannot_be_resolved_names_the_shard_and_what_to_do(kinesalite: str) -> None:
    name = unique("res")
    k = Kinesis(kinesalite)
    await k.create(name, 2)
    puts = await k.put(name, numbered(20, keys=4))
    other = next(p for p in puts if p["ShardId"].endswith("1"))
    async with KinesisSource(name, aws(kinesalite)) as source:
        with pytest.raises(ControlError) as caught:
            await resolve_bounded(
                source, "shardId-000000000000", Position.at_sequence(other["SequenceNumber"])
            )
    text = str(caught.value)
    assert "shardId-000000000000" in text and "nothing was changed" in text
    assert "give a sequence number" in text


async def test_a_consumer_started_at_latest_reads_on_a_stock_kinesalite(
    stock_kinesalite: str, store: Any
) -> None:
    from console.engine.consume.consumer import Consumer

    name = unique("res")
    k = Kinesis(stock_kinesalite)
    await k.create(name, 2)
    await k.put(name, numbered(10, keys=4))  # before the start: not read
    seen = Collect()
    options = dataclasses.replace(FAST, initial_position=Position.latest())
    async with KinesisSource(name, quick(stock_kinesalite)) as source:
        async with Consumer(source, store, seen, options) as consumer:
            # Each shard's iterator AT_TIMESTAMP(the start) found by reading: the shards read on.
            await wait_for(lambda: consumer.state.get_records_calls >= 4, 30, "reads")
            await k.put(name, numbered(6, keys=4, start=10))
            await wait_for(lambda: len(seen.seen) == 6, 30, "the six records put since")
    assert sorted(seen.data()) == sorted(d for _, d in numbered(6, keys=4, start=10))


def test_skip_to_the_tip_of_a_lease_on_a_stock_kinesalite(stock_kinesalite: str, moto: str) -> None:
    """The issue's case: the tip resolved by reading when AT_TIMESTAMP does not answer."""

    async def build() -> tuple[App, str, str]:
        app = App(stock_kinesalite, moto)
        await app.build(shards=1, records=12)
        sid = next(iter(app.puts))
        async with app.writer() as w:
            await app.row(w, sid, app.puts[sid][2], owner="w1")
        return app, sid, app.puts[sid][-1]

    app, sid, last = asyncio.run(build())
    t0 = time.monotonic()
    out = run_cli(
        "skip", sid, "--to", "latest", "--yes", "--lease-table", app.table, "--stream",
        app.stream, "--endpoint-url", stock_kinesalite, "--dynamodb-endpoint-url", moto,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - t0 < 60

    async def checkpoint() -> str:
        async with app.writer() as w:
            return (await app.lease(w, sid)).checkpoint

    assert asyncio.run(checkpoint()) == last
