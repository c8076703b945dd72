"""The Kinesis source against real HTTP endpoints: moto's server, kinesalite, the demo endpoint."""

import asyncio
import time
from typing import Any

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from console.model import Position
from console.sources.base import (
    CredentialsError,
    EndpointUnreachableError,
    FatalSourceError,
    ShardNotFoundError,
    StreamNotFoundError,
)
from console.sources.kinesis import KinesisSource
from tests.conftest import Kinesis, aws, numbered, unique

ENDPOINTS = ["moto", "kinesalite", "demo_endpoint"]


@pytest.fixture(params=ENDPOINTS)
def endpoint(request: pytest.FixtureRequest) -> str:
    value = request.getfixturevalue(request.param)
    return value if isinstance(value, str) else value.url


async def read_all(source: KinesisSource, shard_id: str, position: Position) -> list[str]:
    it = await source.get_iterator(shard_id, position)
    out: list[str] = []
    for _ in range(20):
        batch = await source.get_records(it, 10_000)
        out.extend(r.data.decode() for r in batch.records)
        if not batch.records or batch.next_iterator is None:
            break
        it = batch.next_iterator
    return out


async def test_paginated_listing_tolerates_each_endpoint(endpoint: str, read_path: str) -> None:
    name = unique()
    await Kinesis(endpoint).create(name, 7)
    async with KinesisSource(name, aws(endpoint, read_path), page_size=3) as source:
        shards = await source.list_shards()
    assert len(shards) == 7
    assert len({s.shard_id for s in shards}) == 7
    assert all(not s.is_closed for s in shards)


async def test_all_five_iterator_types(endpoint: str, read_path: str) -> None:
    name = unique()
    k = Kinesis(endpoint)
    await k.create(name, 1)
    first = await k.put(name, numbered(5, keys=1))
    await asyncio.sleep(1.1)  # AT_TIMESTAMP needs a gap the emulators can see (1 s resolution)
    cut = time.time()
    await asyncio.sleep(0.05)
    await k.put(name, numbered(3, keys=1, start=5))
    async with KinesisSource(name, aws(endpoint, read_path)) as source:
        [shard] = await source.list_shards()
        sid = shard.shard_id
        seq2 = first[2]["SequenceNumber"]
        assert await read_all(source, sid, Position.trim_horizon()) == [f"k0:{i}" for i in range(8)]
        assert await read_all(source, sid, Position.at_sequence(seq2)) == [
            f"k0:{i}" for i in range(2, 8)
        ]
        assert await read_all(source, sid, Position.after_sequence(seq2)) == [
            f"k0:{i}" for i in range(3, 8)
        ]
        assert await read_all(source, sid, Position.at_timestamp(cut)) == [
            f"k0:{i}" for i in range(5, 8)
        ]
        assert await read_all(source, sid, Position.latest()) == []


async def test_limit_and_millis_behind(moto: str, read_path: str) -> None:
    name = unique()
    k = Kinesis(moto)
    await k.create(name, 1)
    await k.put(name, numbered(30, keys=1))
    async with KinesisSource(name, aws(moto, read_path)) as source:
        [shard] = await source.list_shards()
        it = await source.get_iterator(shard.shard_id, Position.trim_horizon())
        batch = await source.get_records(it, 10)
        assert len(batch.records) == 10
        assert batch.millis_behind_latest is not None
        assert isinstance(batch.records[0].approximate_arrival, float)


async def test_aggregated_records_are_deaggregated_with_sub_sequence_numbers(
    moto: str, read_path: str
) -> None:
    name = unique()
    await Kinesis(moto).create(name, 1)
    agg = RecordAggregator()
    for i in range(5):
        agg.add_user_record(f"user-{i}", f"payload {i}".encode())
    pk, _, data = agg.clear_and_get().get_contents()
    await Kinesis(moto).put(name, [(pk, data), ("plain", b"not aggregated")])
    async with KinesisSource(name, aws(moto, read_path)) as source:
        [shard] = await source.list_shards()
        it = await source.get_iterator(shard.shard_id, Position.trim_horizon())
        records = (await source.get_records(it, 100)).records
    assert [(r.partition_key, r.data, r.sub_sequence_number) for r in records] == [
        *((f"user-{i}", f"payload {i}".encode(), i) for i in range(5)),
        ("plain", b"not aggregated", None),
    ]
    assert len({r.sequence_number for r in records[:5]}) == 1


async def test_closed_shard_ends_with_a_null_iterator_on_kinesalite(
    kinesalite: str, read_path: str
) -> None:
    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 1)
    await k.put(name, numbered(4, keys=2))
    [s0] = await k.shards(name)
    await k.split(name, s0["ShardId"])
    async with KinesisSource(name, aws(kinesalite, read_path)) as source:
        shards = {s.shard_id: s for s in await source.list_shards()}
        parent = shards[s0["ShardId"]]
        assert parent.is_closed
        children = [s for s in shards.values() if s.parent_id == parent.shard_id]
        assert len(children) == 2
        it = await source.get_iterator(parent.shard_id, Position.trim_horizon())
        ended = False
        for _ in range(5):
            batch = await source.get_records(it, 10_000)
            if batch.next_iterator is None:
                ended = True
                break
            it = batch.next_iterator
        assert ended


async def test_stream_arn_is_accepted(moto: str, read_path: str) -> None:
    name = unique()
    await Kinesis(moto).create(name, 2)
    arn = f"arn:aws:kinesis:us-east-1:123456789012:stream/{name}"
    async with KinesisSource(arn, aws(moto, read_path)) as source:
        assert source.stream == name
        info = await source.describe()
        assert info.arn == arn
        assert len(await source.list_shards()) == 2


async def test_errors_are_classified(moto: str, read_path: str) -> None:
    async with KinesisSource("no-such-stream", aws(moto, read_path)) as source:
        with pytest.raises(StreamNotFoundError, match="'no-such-stream' not found"):
            await source.describe()
        with pytest.raises(StreamNotFoundError, match="'no-such-stream' not found"):
            await source.list_shards()  # on the read path
    name = unique()
    await Kinesis(moto).create(name, 1)
    async with KinesisSource(name, aws(moto, read_path)) as source:
        with pytest.raises(ShardNotFoundError, match="no longer in stream"):
            await source.get_iterator("shardId-000000000099", Position.trim_horizon())


async def test_garbage_iterator_is_fatal_on_kinesalite(kinesalite: str, read_path: str) -> None:
    name = unique()
    await Kinesis(kinesalite).create(name, 1)
    async with KinesisSource(name, aws(kinesalite, read_path)) as source:
        with pytest.raises(FatalSourceError, match="InvalidArgumentException"):
            await source.get_records("garbage", 10)


async def test_unreachable_endpoint(read_path: str) -> None:
    async with KinesisSource("s", aws("http://127.0.0.1:9", read_path)) as source:
        with pytest.raises(EndpointUnreachableError, match="cannot reach"):
            await source.describe()
        with pytest.raises(EndpointUnreachableError, match="cannot reach"):
            await source.list_shards()


async def test_missing_credentials(
    moto: str, monkeypatch: pytest.MonkeyPatch, read_path: str
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    async with KinesisSource("s", aws(moto, read_path)) as source:
        with pytest.raises(CredentialsError, match="no AWS credentials"):
            await source.describe()
        with pytest.raises(CredentialsError, match="no AWS credentials"):
            await source.get_records("an-iterator", 10)  # signing on the read path needs them


async def test_the_description_at_start_waits_out_throttling_and_blames_a_failing_endpoint(
    demo_endpoint: Any,
) -> None:
    """A fleet starting at once is throttled on DescribeStreamSummary: that passes, and is
    waited out. An endpoint that keeps failing is the operator's to fix: said after 3 tries."""
    from console.sources.base import FatalSourceError, RetryableError, describe_at_start
    from tests.proxy import Reply, proxy

    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 1)
    answers: list[Reply] = []
    seen: list[str] = []

    def rule(operation: str, body: dict[str, Any], headers: dict[str, str]) -> Reply | None:
        seen.append(operation)
        return answers.pop(0) if answers and operation.startswith("DescribeStream") else None

    throttled = Reply(400, "LimitExceededException", "Rate exceeded for stream s")
    failing = Reply(500, "InternalFailure", "oops")
    with proxy(demo_endpoint.url, rule) as p:
        async with KinesisSource("s", aws(p.url)) as source:
            answers[:] = [throttled] * 3  # as many as the tries a failure gets
            info = await describe_at_start(source)
            assert info.name == "s" and answers == []
            answers[:] = [failing, throttled, failing]  # throttling does not use up the tries
            assert (await describe_at_start(source)).name == "s"
            answers[:] = [failing] * 3
            with pytest.raises(FatalSourceError) as caught:
                await describe_at_start(source)
            assert str(caught.value).endswith(
                "(3 tries): check --endpoint-url and --region, or the service's health, then "
                "start again"
            )
            answers[:] = [throttled] * 100
            with pytest.raises(RetryableError) as throttled_out:
                await describe_at_start(source, throttled_for=0.5)
            assert throttled_out.value.throttled
