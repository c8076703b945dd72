"""Times turned into records never hang: on kinesalite as users run it (GetShardIterator
AT_TIMESTAMP with no record that new never answers there) as on the mended one, a rewind to a
time, a skip to the tip and a consumer started at ``latest`` resolve within seconds."""

from __future__ import annotations

import asyncio
import dataclasses
import random
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


# -- against the embedded endpoint: records at chosen times, checked against the plain answer -----


class Shards:
    """A 64-shard stream on the embedded endpoint (real HTTP, in-process): each case fills a
    fresh shard with records arriving at chosen times."""

    def __init__(self, endpoint: Any, stream: Any, source: KinesisSource) -> None:
        self.endpoint = endpoint
        self.stream = stream
        self.source = source
        self.used = 0

    def fill(self, arrivals: list[float]) -> tuple[str, list[str]]:
        sid = f"shardId-{self.used:012d}"
        self.used += 1
        shard = self.stream.shards[sid]

        def append() -> list[str]:
            return [str(shard.append("k", b"x", t)) for t in arrivals]

        return sid, self.endpoint.call(append)


@pytest.fixture
async def shards(demo_endpoint: Any) -> Any:
    stream = demo_endpoint.call(demo_endpoint.kinesis.create_stream, "resolve", 64)
    async with KinesisSource("resolve", aws(demo_endpoint.url)) as source:
        # Small pages, no pause between them: many calls in little time (the pace is the
        # worker's business, tested with it).
        source.max_records_per_call = 3
        source.min_call_interval = 0.0
        yield Shards(demo_endpoint, stream, source)


NOW = float(int(time.time()))
GAPS = [0.0, 0.5, 1.0, 30.0, 59.5, 60.0, 61.0, 1800.0, 3600.0, 7200.0, 86400.0, 90000.0]


def arrivals_for(rng: random.Random) -> list[float]:
    """Up to 12 records over up to three days, ending before now; gaps around each window."""
    gaps = [rng.choice(GAPS) for _ in range(rng.randint(0, 12))]
    out, t = [], NOW - 3 * 86400 - 100_000
    for gap in gaps:
        t += gap
        out.append(t)
    return out


def targets_for(rng: random.Random, arrivals: list[float]) -> list[float]:
    """Times at, just before and after records, and far from them."""
    near = [a + d for a in arrivals[:2] + arrivals[-1:] for d in (-60.5, -0.5, 0.0, 0.5)]
    return [*near, NOW - 10 * 86400, NOW, rng.uniform(NOW - 4 * 86400, NOW)]


def expected_before(arrivals: list[float], seqs: list[str], when: float) -> Position:
    before = [s for a, s in zip(arrivals, seqs, strict=True) if a < when]
    return Position.after_sequence(before[-1]) if before else Position.trim_horizon()


async def test_a_time_resolves_to_the_last_record_before_it_whatever_the_gaps(
    shards: Shards,
) -> None:
    from console.engine.changes.resolve import resolve_position

    rng = random.Random(24)
    for case in range(10):
        arrivals = arrivals_for(rng)
        sid, seqs = shards.fill(arrivals)
        for when in targets_for(rng, arrivals):
            got = await resolve_position(shards.source, sid, Position.at_timestamp(when))
            want = expected_before(arrivals, seqs, when)
            assert got == want, (case, arrivals, when)


async def test_a_sequence_number_resolves_to_the_record_before_it(shards: Shards) -> None:
    from console.engine.changes.resolve import resolve_position

    rng = random.Random(7)
    for _ in range(10):
        arrivals = arrivals_for(rng) or [NOW - 10]
        sid, seqs = shards.fill(arrivals)
        for i, seq in enumerate(seqs):
            got = await resolve_position(shards.source, sid, Position.at_sequence(seq))
            want = Position.after_sequence(seqs[i - 1]) if i else Position.trim_horizon()
            assert got == want, (arrivals, i)
    # Within an aggregate: the user record before it, with no read at all.
    got = await resolve_position(shards.source, "nowhere", Position.at_sequence("515", 3))
    assert got == Position.after_sequence("515", 2)
    # Positions a lease table holds as they are.
    for position in (Position.trim_horizon(), Position.after_sequence("9")):
        assert await resolve_position(shards.source, "nowhere", position) == position


async def test_a_sequence_number_past_the_shard_s_records_is_refused(shards: Shards) -> None:
    from console.engine.changes.resolve import resolve_bounded

    sid, seqs = shards.fill([NOW - 30, NOW - 20])
    past = str(int(seqs[-1]) + 1)
    with pytest.raises(ControlError) as caught:
        await resolve_bounded(shards.source, sid, Position.at_sequence(past))
    assert str(caught.value) == f"sequence number {past} is not in shard {sid}"


async def test_what_a_rewind_reads_again_is_counted_up_to_a_cap(shards: Shards) -> None:
    from console.engine.changes.resolve import count_between

    arrivals = [NOW - 100 + i for i in range(8)]
    sid, seqs = shards.fill(arrivals)
    source = shards.source
    cases = [
        (Position.trim_horizon(), seqs[4], 100, (5, False)),
        (Position.trim_horizon(), seqs[-1], 100, (8, False)),
        (Position.trim_horizon(), seqs[-1], 8, (8, False)),
        (Position.trim_horizon(), seqs[-1], 7, (7, True)),
        (Position.trim_horizon(), seqs[-1], 3, (3, True)),
        (Position.after_sequence(seqs[1]), seqs[4], 100, (3, False)),
        (Position.after_sequence(seqs[4]), seqs[4], 100, (0, False)),  # nothing read again
        (Position.at_timestamp(arrivals[6]), seqs[-1], 100, (2, False)),
        (Position.at_timestamp(NOW), seqs[-1], 100, (0, False)),
    ]
    for start, upto, cap, want in cases:
        assert await count_between(source, sid, start, upto, cap) == want, (start, upto, cap)


async def test_a_read_that_finds_nothing_within_its_calls_says_so(
    shards: Shards, monkeypatch: pytest.MonkeyPatch
) -> None:
    from console.engine.changes import resolve

    sid, seqs = shards.fill([NOW - 100 + i for i in range(12)])  # 4 pages of 3
    monkeypatch.setattr(resolve, "MAX_CALLS", 3)
    with pytest.raises(ControlError) as caught:
        await resolve.resolve_position(shards.source, sid, Position.at_timestamp(NOW))
    assert str(caught.value) == (
        f"shard {sid}: no record found within 3 reads; choose a position closer to the shard's "
        "records"
    )
    # Counting stops there too, and says there may be more.
    assert await resolve.count_between(
        shards.source, sid, Position.trim_horizon(), seqs[-1], 100
    ) == (9, True)
    monkeypatch.setattr(resolve, "MAX_CALLS", 5)
    assert await resolve.count_between(
        shards.source, sid, Position.trim_horizon(), seqs[-1], 100
    ) == (12, False)


async def test_what_fails_is_said_with_the_shard_and_what_to_do(
    shards: Shards, monkeypatch: pytest.MonkeyPatch
) -> None:
    from console.engine.changes import resolve

    when = Position.at_timestamp(NOW - 60)
    with pytest.raises(ControlError) as caught:
        await resolve.resolve_bounded(shards.source, "shardId-000000000999", when)
    assert str(caught.value).startswith(
        f"could not find the record before {when.target()} in shard shardId-000000000999: "
        "shard shardId-000000000999 is no longer in stream 'resolve'"  # what the stream said
    )
    assert str(caught.value).endswith(
        "; nothing was changed: try again, or give a sequence number (shard-console tail "
        "STREAM --shard shardId-000000000999 --from ... shows them)"
    )
    sid, _ = shards.fill([NOW - 30])
    monkeypatch.setattr(resolve, "RESOLVE_WITHIN", 0.0)
    with pytest.raises(ControlError) as caught:
        await resolve.resolve_bounded(shards.source, sid, when)
    assert f"in shard {sid}: the stream did not give the records within 0 s;" in str(caught.value)


async def test_a_plan_s_positions_resolved_for_a_lease_table(shards: Shards) -> None:
    from console.checkpoints.base import CheckpointChange
    from console.engine.changes.plan import Plan
    from console.engine.changes.resolve import resolve_plan
    from console.model import Checkpoint, CheckpointStatus, HistoryEntry

    sid, seqs = shards.fill([NOW - 300, NOW - 200, NOW - 100])
    at = Position.at_timestamp(NOW - 150)

    def change(position: Position, status: CheckpointStatus = CheckpointStatus.OPEN) -> Any:
        history = HistoryEntry(sid, "rewind", "me", position, "open")
        return CheckpointChange(Checkpoint(sid, position, status), history)

    plan = Plan(
        (
            change(at),
            change(Position.at_sequence(seqs[2])),
            change(at, CheckpointStatus.DONE),  # finished: no position to resolve
            change(Position.after_sequence(seqs[0])),
            CheckpointChange(Checkpoint(sid, at), None),
        ),
        "summary",
    )
    resolved = await resolve_plan(plan, shards.source)
    before = Position.after_sequence(seqs[1])
    assert resolved.summary == "summary"
    assert [c.checkpoint.position for c in resolved.changes] == [
        before,
        before,
        at,
        Position.after_sequence(seqs[0]),
        before,
    ]
    histories = [c.history.new_position if c.history else None for c in resolved.changes]
    assert histories == [before, before, at, Position.after_sequence(seqs[0]), None]
    assert [c.checkpoint.status for c in resolved.changes][2] is CheckpointStatus.DONE


async def test_a_rewind_s_sequence_number_is_checked_against_its_shard(shards: Shards) -> None:
    from console.checkpoints.base import CheckpointChange
    from console.engine.changes.plan import Plan
    from console.engine.changes.resolve import check_sequences
    from console.model import Checkpoint, CheckpointStatus, HistoryEntry

    mine, my_seqs = shards.fill([NOW - 30])
    _, other_seqs = shards.fill([NOW - 20])

    def plan(sid: str, seq: str, cause: str = "rewind", **kw: Any) -> Plan:
        cp = Checkpoint(sid, Position.at_sequence(seq), **kw)
        return Plan((CheckpointChange(cp, HistoryEntry(sid, cause, "me", cp.position, None)),), "p")

    await check_sequences(plan(mine, my_seqs[0]), shards.source)
    # Not checked: what no rewind moves to, a finished row, a row with no history.
    await check_sequences(plan(mine, other_seqs[0], cause="skip"), shards.source)
    await check_sequences(plan(mine, other_seqs[0], status=CheckpointStatus.DONE), shards.source)
    cp = Checkpoint(mine, Position.at_sequence(other_seqs[0]))
    await check_sequences(Plan((CheckpointChange(cp, None),), "p"), shards.source)
    with pytest.raises(ControlError) as caught:
        await check_sequences(plan(mine, other_seqs[0]), shards.source)
    text = str(caught.value)
    assert text.startswith(f"sequence number {other_seqs[0]} is not one of shard {mine}'s: ")
    assert text.endswith("; nothing was changed")


# -- a time found by reading, when the endpoint does not answer AT_TIMESTAMP ---------------------


async def test_a_time_found_by_reading_the_shard(shards: Shards) -> None:
    from console.sources.seek import Found, resume_after, seek_time

    rng = random.Random(5)
    for _ in range(6):
        arrivals = arrivals_for(rng)
        sid, seqs = shards.fill(arrivals)
        for when in targets_for(rng, arrivals):
            found = await seek_time(shards.source, sid, when)
            before = [i for i, a in enumerate(arrivals) if a < when]
            first = len(before)
            assert (
                found.before.sequence_number if found.before else None,
                found.first.sequence_number if found.first else None,
            ) == (
                seqs[before[-1]] if before else None,
                seqs[first] if first < len(seqs) else None,
            ), (arrivals, when)
            if not before:
                assert found.before is None
            if found.first is not None:
                assert resume_after(found) == Position.at_sequence(found.first.sequence_number)
            elif found.before is not None:
                assert resume_after(found) == Position.after_sequence(found.before.sequence_number)
            else:
                assert resume_after(found) == Position.trim_horizon()
    assert resume_after(Found(None, None)) == Position.trim_horizon()


async def test_a_time_beyond_the_reads_allowed_says_what_to_do(
    shards: Shards, monkeypatch: pytest.MonkeyPatch
) -> None:
    from console.model import format_ts
    from console.sources import seek
    from console.sources.base import FatalSourceError

    sid, _ = shards.fill([NOW - 100 + i for i in range(7)])  # 3 pages of 3
    monkeypatch.setattr(seek, "MAX_CALLS", 2)
    with pytest.raises(FatalSourceError) as caught:
        await seek.seek_time(shards.source, sid, NOW)
    assert str(caught.value) == (
        f"shard {sid}: the endpoint does not answer GetShardIterator AT_TIMESTAMP, and "
        f"{format_ts(NOW)} is not within the first 2 reads of the shard: rewind it to a sequence "
        f"number instead (shard-console tail STREAM --shard {sid} --from trim_horizon shows them)"
    )
    monkeypatch.setattr(seek, "MAX_CALLS", 4)  # three pages, and the empty read at the tip
    found = await seek.seek_time(shards.source, sid, NOW)
    assert found.first is None and found.before is not None


async def test_an_endpoint_that_does_not_answer_at_timestamp_is_read_and_not_asked_again(
    demo_endpoint: Any,
) -> None:
    stream = demo_endpoint.call(demo_endpoint.kinesis.create_stream, "quiet", 1)
    shard = stream.shards["shardId-000000000000"]
    arrivals = [NOW - 50 + 10 * i for i in range(5)]
    seqs = demo_endpoint.call(lambda: [str(shard.append("k", b"x", t)) for t in arrivals])
    asked: list[float] = []

    async def never_at_timestamp(request: Any, **_: Any) -> None:
        if b"AT_TIMESTAMP" in (request.body or b""):
            asked.append(time.monotonic())
            await asyncio.sleep(60)  # as stock kinesalite: no answer

    settings = dataclasses.replace(aws(demo_endpoint.url), at_timestamp_within=0.2)
    hooks = [("before-send.kinesis.GetShardIterator", never_at_timestamp)]
    async with KinesisSource("quiet", settings, hooks) as source:
        source.max_records_per_call = 2
        source.min_call_interval = 0.0
        sid = "shardId-000000000000"
        async with asyncio.timeout(20):
            it = await source.get_iterator(sid, Position.at_timestamp(arrivals[2] - 1))
            assert [r.sequence_number for r in (await source.get_records(it, 10)).records] == (
                seqs[2:]
            )
            tip = await source.get_iterator(sid, Position.at_timestamp(NOW))  # after them all
            assert (await source.get_records(tip, 10)).records == []
    assert len(asked) == 1  # given its chance once; read the second time at once


class Counting:
    """The source, with its GetRecords calls counted."""

    def __init__(self, source: KinesisSource) -> None:
        self.source = source
        self.reads = 0
        self.max_records_per_call = source.max_records_per_call
        self.min_call_interval = source.min_call_interval

    async def get_iterator(self, shard_id: str, position: Position) -> str:
        return await self.source.get_iterator(shard_id, position)

    async def get_records(self, iterator: str, limit: int) -> Any:
        self.reads += 1
        return await self.source.get_records(iterator, limit)


async def test_a_time_is_found_reading_only_the_minute_before_it(shards: Shards) -> None:
    """Records every second for an hour: the record before 10:30 is found from 10:29, a
    handful of reads, not from the shard's start (1,200 reads of 3)."""
    from console.engine.changes.resolve import resolve_position

    arrivals = [NOW - 7200 + i for i in range(3600)]
    sid, seqs = shards.fill(arrivals)
    counted = Counting(shards.source)
    source: Any = counted
    got = await resolve_position(source, sid, Position.at_timestamp(arrivals[1800] + 0.5))
    assert got == Position.after_sequence(seqs[1800])
    assert counted.reads <= 25, counted.reads


async def test_times_between_the_user_records_of_aggregates(shards: Shards) -> None:
    """KPL aggregates: the record before a time is the last user record of the aggregate
    before it, with its sub-sequence number; before a sequence number likewise."""
    from aws_kinesis_agg.aggregator import RecordAggregator

    from console.engine.changes.resolve import resolve_position

    def aggregate(tag: str) -> bytes:
        agg = RecordAggregator()
        for i in range(3):
            agg.add_user_record(f"{tag}-{i}", f"{tag} {i}".encode())
        return bytes(agg.clear_and_get().get_contents()[2])

    sid = f"shardId-{shards.used:012d}"
    shards.used += 1
    shard = shards.stream.shards[sid]
    a, b = shards.endpoint.call(
        lambda: [
            str(shard.append("a", aggregate("a"), NOW - 300)),
            str(shard.append("b", aggregate("b"), NOW - 200)),
        ]
    )
    source = shards.source
    when = Position.at_timestamp(NOW - 250)
    assert await resolve_position(source, sid, when) == Position.after_sequence(a, 2)
    assert await resolve_position(source, sid, Position.at_sequence(b)) == (
        Position.after_sequence(a, 2)
    )
    tip = Position.at_timestamp(NOW)
    assert await resolve_position(source, sid, tip) == Position.after_sequence(b, 2)


async def test_a_closed_shard_is_read_to_its_end(shards: Shards) -> None:
    from console.engine.changes.resolve import count_between, resolve_position
    from console.sources.seek import seek_time

    arrivals = [NOW - 100 + i for i in range(5)]
    sid, seqs = shards.fill(arrivals)
    parent = shards.stream.shards[sid]
    shards.endpoint.call(
        shards.endpoint.kinesis.split, "resolve", sid, parent.start_hash + (1 << 100)
    )
    source = shards.source
    tip = Position.at_timestamp(NOW)
    assert await resolve_position(source, sid, tip) == Position.after_sequence(seqs[-1])
    found = await seek_time(source, sid, NOW)
    assert found.first is None and found.before is not None
    assert found.before.sequence_number == seqs[-1]
    assert await count_between(source, sid, Position.trim_horizon(), seqs[-1], 100) == (5, False)
    found = await seek_time(source, sid, arrivals[0])
    assert found.before is None and found.first is not None


async def test_small_caps_read_small_pages(shards: Shards) -> None:
    from console.engine.changes.resolve import count_between

    sid, seqs = shards.fill([NOW - 100 + i for i in range(8)])
    for cap, want in ((1, (1, True)), (2, (2, True))):
        got = await count_between(shards.source, sid, Position.trim_horizon(), seqs[-1], cap)
        assert got == want, cap


async def test_every_rewind_of_a_plan_is_checked(shards: Shards) -> None:
    from console.checkpoints.base import CheckpointChange
    from console.engine.changes.plan import Plan
    from console.engine.changes.resolve import check_sequences
    from console.model import Checkpoint, HistoryEntry

    mine, my_seqs = shards.fill([NOW - 30])
    _, other_seqs = shards.fill([NOW - 20])

    def change(seq: str, cause: str) -> CheckpointChange:
        cp = Checkpoint(mine, Position.at_sequence(seq))
        return CheckpointChange(cp, HistoryEntry(mine, cause, "me", cp.position, None))

    first_fine = Plan((change(my_seqs[0], "rewind"), change(other_seqs[0], "rewind")), "p")
    first_skipped = Plan((change(other_seqs[0], "reset"), change(other_seqs[0], "rewind")), "p")
    for plan in (first_fine, first_skipped):
        with pytest.raises(ControlError, match="is not one of shard"):
            await check_sequences(plan, shards.source)


async def test_a_sequence_number_that_cannot_be_checked_is_not_written(
    shards: Shards, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream failing or not answering is not a yes: the change is refused, said so."""
    from aiobotocore.awsrequest import AioAWSResponse

    from console.checkpoints.base import CheckpointChange
    from console.engine.changes import resolve
    from console.engine.changes.plan import Plan
    from console.model import Checkpoint, CheckpointStatus, HistoryEntry
    from tests.test_wire import _Body

    sid, seqs = shards.fill([NOW - 30])
    seq = seqs[0]

    def change(status: CheckpointStatus = CheckpointStatus.OPEN) -> CheckpointChange:
        cp = Checkpoint(sid, Position.at_sequence(seq), status)
        return CheckpointChange(cp, HistoryEntry(sid, "rewind", "me", cp.position, None))

    plan = Plan((change(),), "p")

    def internal_failure(request: Any, **_: Any) -> Any:
        body = b'{"__type":"InternalFailure"}'
        headers = {"content-type": "application/x-amz-json-1.1", "content-length": str(len(body))}
        return AioAWSResponse(request.url, 500, headers, _Body(body))

    failing = [("before-send.kinesis.GetShardIterator", internal_failure)]
    async with KinesisSource("resolve", aws(shards.endpoint.url), failing) as source:
        with pytest.raises(ControlError) as caught:
            await resolve.check_sequences(plan, source)
    text = str(caught.value)
    assert text.startswith(f"could not check sequence number {seq} against shard {sid} (")
    assert "InternalFailure" in text
    assert text.endswith(
        "): pass --endpoint-url, --region or --profile to reach the stream; nothing was changed"
    )

    async def never(request: Any, **_: Any) -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(resolve, "RESOLVE_WITHIN", 0.2)
    silent = [("before-send.kinesis.GetShardIterator", never)]
    async with KinesisSource("resolve", aws(shards.endpoint.url), silent) as source:
        with pytest.raises(ControlError) as caught:
            await resolve.check_sequences(plan, source)
        assert str(caught.value) == (
            f"could not check sequence number {seq} against shard {sid}: the stream did not "
            "answer; nothing was changed"
        )
        # A finished row first is passed over, not the end of the checking.
        finished_first = Plan((change(CheckpointStatus.DONE), change()), "p")
        with pytest.raises(ControlError):
            await resolve.check_sequences(finished_first, source)
