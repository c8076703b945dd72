"""Poison records (--on-failure park): the failing records found (named, or by bisection),
parked in the store and the dead-letter file before the checkpoint moves past them, every
other record processed exactly once and in order; the shard never stalls."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from console.checkpoints.sqlite import SqliteStore
from console.engine.consume.consumer import Consumer
from console.engine.consume.poison import Failure, FailurePolicy, Parking, isolate
from console.model import Record, ShardContext
from console.processors.base import ParkRecord, RecordFailed
from console.sources.dead_letter import JsonlDeadLetter
from console.sources.kinesis import KinesisSource
from tests.conftest import (
    FAST,
    Collect,
    Kinesis,
    aws,
    checkpoints_in,
    numbered,
    run_cli,
    unique,
    wait_for,
)

# Park after one failed attempt: what most tests here want.
PARK = dataclasses.replace(FAST, failure=FailurePolicy(retries=1, park=True))


def failing_on(poison: set[bytes]) -> Collect:
    """A processor that fails every batch holding a record whose data is in ``poison``,
    without naming it."""
    processor = Collect()

    def fail(batch: list[Record], ctx: ShardContext) -> None:
        if any(r.data in poison for r in batch):
            raise ValueError("bad")

    processor.fail = fail
    return processor


def records(n: int) -> list[Record]:
    return [Record(f"{i:05d}", f"k{i % 7}", f"r{i}".encode(), 0.0) for i in range(n)]


class Picky:
    """A processor that fails a batch holding any poison record; it remembers what it
    processed (in order) and how often it was called."""

    def __init__(self, poison: set[str], name: bool = False) -> None:
        self.poison = poison
        self.name = name
        self.done: list[str] = []
        self.calls = 0

    async def __call__(self, batch: list[Record]) -> BaseException | None:
        self.calls += 1
        for i, r in enumerate(batch):
            if r.sequence_number in self.poison:
                self.done.extend(x.sequence_number for x in batch[:i] if self.name)
                return RecordFailed(r, "bad") if self.name else ValueError(f"bad {r.data!r}")
        self.done.extend(r.sequence_number for r in batch)
        return None


@pytest.mark.parametrize(
    "n, poison", [(1, {0}), (100, {37}), (100, {0, 99}), (1000, {3, 4, 512, 999})]
)
async def test_bisection_parks_exactly_the_poison_and_processes_the_rest_once_in_order(
    n: int, poison: set[int]
) -> None:
    batch = records(n)
    bad = {f"{i:05d}" for i in poison}
    picky = Picky(bad)
    first = await picky(batch)
    assert first is not None
    found = await isolate(batch, Failure(first, 3, 0.0, 0.0), picky)
    assert [r.sequence_number for r, _ in found] == sorted(bad)
    assert picky.done == [r.sequence_number for r in batch if r.sequence_number not in bad]
    assert all(f.attempts > 3 for _, f in found) or n == 1
    # k poison records in n: about 2 k log2(n) deliveries, not n.
    assert picky.calls <= 1 + 2 * len(poison) * max(1, n.bit_length())


async def test_a_named_record_is_parked_without_bisection() -> None:
    batch = records(100)
    bad = {"00010", "00060"}
    picky = Picky(bad, name=True)
    first = await picky(batch)
    assert first is not None
    found = await isolate(batch, Failure(first, 3, 0.0, 0.0), picky)
    assert [r.sequence_number for r, _ in found] == ["00010", "00060"]
    assert picky.calls == 3  # the batch, the rest after the first, the rest after the second
    assert picky.done == [r.sequence_number for r in batch if r.sequence_number not in bad]


async def test_a_poison_record_is_parked_and_its_shard_reads_on(
    kinesalite: str, tmp_path: Path
) -> None:
    """4 shards, 500 records, 3 the processor fails on without naming them: the other 497
    processed exactly once, the 3 parked with every field (store and dead-letter file),
    the checkpoints at each shard's tip."""
    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 4)
    sent = numbered(500, keys=20)
    poison = {sent[i][1] for i in (17, 250, 499)}
    await k.put(name, sent)
    processor = Collect()

    def fail(batch: list[Record], ctx: ShardContext) -> None:
        bad = [r for r in batch if r.data in poison]
        if bad:
            raise ValueError(f"cannot parse {bad[0].data!r} (key AKIAIOSFODNN7EXAMPLE)")

    processor.fail = fail
    db = tmp_path / "c.db"
    jsonl = tmp_path / "parked.jsonl"
    store = await SqliteStore.open(str(db))
    options = dataclasses.replace(FAST, failure=FailurePolicy(retries=2, park=True))
    dead_letter = JsonlDeadLetter(str(jsonl))
    dead_letter.open()
    try:
        async with (
            KinesisSource(name, aws(kinesalite)) as source,
            Consumer(
                source, store, processor, options, parking=Parking(store, dead_letter)
            ) as consumer,  # fmt: skip
        ):
            await wait_for(lambda: len(processor.seen) >= 497, what="the 497 good records")
            await wait_for(lambda: sum(v.parked for v in consumer.state.shards.values()) == 3,
                           what="3 parked")  # fmt: skip
            await consumer.checkpointer.flush()
            assert consumer.state.records_total == 497  # a parked record is not processed
        parked = await store.parked(consumer.discovery.key)
    finally:
        dead_letter.close()
        await store.close()
    seen = Counter(processor.data())
    assert set(seen) == {d for _, d in sent} - poison
    assert set(seen.values()) == {1}  # exactly once: a half that passed is not delivered again
    assert sorted(p.data for p in parked) == sorted(poison)
    for p in parked:
        assert p.stream.endswith(f"stream/{name}") and p.shard_id.startswith("shardId-")
        assert p.error_type == "ValueError" and "cannot parse" in p.error_message
        assert "AKIAIOSFODNN7EXAMPLE" not in p.error_message + p.traceback  # redacted
        assert p.attempts >= 2 and p.first_failure <= p.last_failure and p.partition_key
        assert p.approximate_arrival and p.id is not None
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert sorted(x["data"].encode() for x in lines) == sorted(poison)
    assert {x["sequence_number"] for x in lines} == {p.sequence_number for p in parked}
    assert oct(jsonl.stat().st_mode & 0o777) == "0o600"
    tips = {p.shard_id for p in parked}
    cps = checkpoints_in(db)
    for sid in tips:  # the checkpoint moved past each parked record
        mine = [p.sequence_number for p in parked if p.shard_id == sid]
        kind, _, seq = cps[sid].partition(":")
        # after_sequence X: reading resumes after X, so X (the last record of its shard) is past
        assert kind == "after_sequence" and int(seq) >= max(int(s) for s in mine)


async def test_the_processor_parks_a_record_at_once() -> None:
    batch = records(10)
    calls: list[int] = []

    async def deliver(b: list[Record]) -> BaseException | None:
        calls.append(len(b))
        for r in b:
            if r.sequence_number == "00004":
                return ParkRecord(r, "schema unknown")
        return None

    first = await deliver(batch)
    assert isinstance(first, ParkRecord)
    found = await isolate(batch, Failure(first, 1, 0.0, 0.0), deliver)
    assert [r.sequence_number for r, _ in found] == ["00004"]
    assert calls == [10, 5]


POISON_APP = """
import os

def process(records, ctx):
    with open(os.environ["OUT"], "a") as out:
        for r in records:
            if r.data.startswith(b"poison") and not os.environ.get("FIXED"):
                raise ValueError("cannot parse " + r.data.decode())
        for r in records:
            out.write(r.data.decode() + "\\n")
"""


def test_parked_records_are_listed_dropped_and_redriven_from_the_command_line(
    kinesalite: str, tmp_path: Path
) -> None:
    import asyncio

    name = unique()
    k = Kinesis(kinesalite)
    asyncio.run(k.create(name, 2))
    sent = numbered(60, keys=6)
    sent[10] = (sent[10][0], b"poison-1")
    sent[40] = (sent[40][0], b"poison-2")
    asyncio.run(k.put(name, sent))
    (tmp_path / "poison_app.py").write_text(POISON_APP)
    db, out = tmp_path / "c.db", tmp_path / "out.txt"
    env = {"PYTHONPATH": str(tmp_path), "OUT": str(out)}
    base = ["--db", str(db), "--stream", name]
    # --dead-letter and --max-record-age without park; a negative --retries: usage errors.
    for bad, needle in (
        (["--dead-letter", f"jsonl:{tmp_path / 'x'}"], "needs --on-failure park"),
        (["--on-failure", "park", "--dead-letter", "kinesis:no-such-stream"], "cannot be reached"),
        (["--on-failure", "park", "--dead-letter", "ftp://x"], "unknown destination"),
        (["--on-failure", "park", "--retries", "-1"], "0 or more attempts"),
    ):
        result = run_cli("run", name, "--endpoint-url", kinesalite, "--db", str(db), *bad)
        assert result.returncode == 2 and needle in result.stderr, result.stderr
        assert not db.exists()
    result = run_cli(
        "run", name, "--endpoint-url", kinesalite, "--db", str(db), "--no-ui",
        "--processor", "poison_app:process", "--on-failure", "park", "--retries", "1",
        "--max-records", "60", env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "parked record" in result.stderr + result.stdout
    good = sorted(d.decode() for _, d in sent if b"poison" not in d)
    assert sorted(out.read_text().split()) == good  # (--max-records counts the parked too)
    listed = json.loads(run_cli("parked", "list", *base, "--json").stdout)
    assert sorted(p["data"] for p in listed) == ["poison-1", "poison-2"]
    first, second = sorted(listed, key=lambda p: p["data"])
    shown = run_cli("parked", "show", str(first["id"]), *base)
    assert "ValueError: cannot parse poison-1" in shown.stdout and "poison-1" in shown.stdout
    # Redriven while still failing: stays parked, exit 1.
    again = run_cli("parked", "redrive", str(first["id"]), *base, "--processor",
                    "poison_app:process", "--yes", env=env)  # fmt: skip
    assert again.returncode == 1 and "stay parked" in again.stderr
    assert len(json.loads(run_cli("parked", "list", *base, "--json").stdout)) == 2
    assert run_cli("parked", "drop", "--all", *base, "--read-only", "--yes").returncode == 2
    dropped = run_cli("parked", "drop", str(second["id"]), *base, "--yes", "--reason", "junk")
    assert dropped.returncode == 0, dropped.stderr
    fixed = run_cli("parked", "redrive", "--all", *base, "--processor", "poison_app:process",
                    "--yes", env={**env, "FIXED": "1"})  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(run_cli("parked", "list", *base, "--json").stdout) == []
    assert "poison-1" in out.read_text().split() and "poison-2" not in out.read_text().split()
    history = run_cli("checkpoints", "history", *base, "--json")
    notes = [h["note"] for h in json.loads(history.stdout)]
    assert any("junk" in n for n in notes) and any("processed again" in n for n in notes)


async def test_a_record_parked_again_after_a_crash_stays_one_row(tmp_path: Path) -> None:
    from console.engine.consume.poison import parked

    store = await SqliteStore.open(str(tmp_path / "c.db"))
    try:
        r = Record("00042", "k", b"\xff\x00", 1.5, 3)
        first = parked("arn:s", "sh0", r, Failure(ValueError("x"), 4, 10.0, 11.0), None)
        again = parked("arn:s", "sh0", r, Failure(ValueError("y"), 2, 20.0, 21.0), None)
        other = parked("arn:s", "sh0", Record("00042", "k", b"", 1.5, 4),
                       Failure(ValueError("z"), 1, 5.0, 5.0), None)  # fmt: skip
        await store.park([first])
        await store.park([again, other])
        rows = await store.parked("arn:s")
        got = [(p.sub_sequence_number, p.attempts, p.first_failure, p.last_failure,
                p.error_message) for p in rows]  # fmt: skip
        assert got == [(3, 4, 10.0, 21.0, "y"), (4, 1, 5.0, 5.0, "z")]
        assert rows[0].to_json()["data_encoding"] == "base64" and rows[0].data == b"\xff\x00"
        assert await store.parked("arn:s", "sh1") == []
        assert [p.id for p in await store.parked("arn:s", ids=[rows[1].id or 0])] == [rows[1].id]
    finally:
        await store.close()


@pytest.mark.parametrize("how", ["after 3 tries", "too old", "parked by the processor", "blocked"])
async def test_what_parks_at_once_and_what_blocks(kinesalite: str, db: str, how: str) -> None:
    """A failing record is parked after --retries tries of its batch; --max-record-age parks
    it at its first failure, whatever the retries;
    so does ParkRecord; with block, ParkRecord is a failure like any other: retried, nothing
    parked."""
    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 1)
    sent = numbered(20, keys=4)
    await k.put(name, sent)
    processor = Collect()
    tries: list[int] = []

    def fail(batch: list[Record], ctx: ShardContext) -> None:
        bad = [r for r in batch if r.data == sent[7][1]]
        if bad:
            tries.append(len(batch))
            if how in ("too old", "after 3 tries"):
                raise ValueError("bad")
            # The records before the one it parks, processed (as the contract says).
            processor.seen.extend((ctx.shard_id, r) for r in batch[: batch.index(bad[0])])
            raise ParkRecord(bad[0], "unknown schema")

    processor.fail = fail
    policy = FailurePolicy(retries=3 if how == "after 3 tries" else 1000, park=how != "blocked",
                           max_record_age=0.001 if how == "too old" else None)  # fmt: skip
    options = dataclasses.replace(FAST, failure=policy)
    store = await SqliteStore.open(db)
    try:
        async with (
            KinesisSource(name, aws(kinesalite)) as source,
            Consumer(source, store, processor, options, parking=Parking(store)) as consumer,
        ):
            if how == "blocked":
                await wait_for(lambda: len(tries) >= 5, what="retried")
                assert len(processor.seen) < 20 and await store.parked(consumer.discovery.key) == []
                return
            await wait_for(lambda: len(processor.seen) == 19, what="the 19 others")
            key = consumer.discovery.key
        assert [p.data for p in await store.parked(key)] == [sent[7][1]]
        # Parked at the first failure, or after the 3 tries: no more of the whole batch.
        whole = 3 if how == "after 3 tries" else 1
        assert tries[:whole] == [20] * whole and all(n < 20 for n in tries[whole:])
    finally:
        await store.close()


def test_a_storm_of_parked_records_is_said_once_a_minute() -> None:
    from console.engine.consume.poison import ParkRate

    rate = ParkRate(limit=10, window=60.0)
    assert rate.note(10, 0.0) is None  # at the limit: not yet
    assert rate.note(1, 1.0) == 11
    assert rate.note(5, 2.0) is None  # said a second ago
    assert rate.note(1, 61.5) is None  # the window moved on: 6 in it
    assert rate.note(10, 62.0) == 11  # the 5 of 2.0 gone too; past the limit a minute after
    assert rate.note(20, 200.0) == 20


def test_a_kill_between_parking_and_the_checkpoint_parks_once_and_loses_nothing(
    kinesalite: str, tmp_path: Path
) -> None:
    """kill -9 after a record is parked and before the checkpoint past it is written (flushes
    a minute apart): the next run reads the batch again, parks the record again as the same
    row, and processes the others (at least once: the batch's other records again)."""
    import asyncio
    import os
    import signal
    import subprocess
    import sys
    import time

    name = unique()
    k = Kinesis(kinesalite)
    asyncio.run(k.create(name, 1))
    sent = numbered(30, keys=3)
    sent[12] = (sent[12][0], b"poison-1")
    asyncio.run(k.put(name, sent))
    (tmp_path / "poison_app.py").write_text(POISON_APP)
    db, out, log = tmp_path / "c.db", tmp_path / "out.txt", tmp_path / "run.log"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OUT": str(out)}
    args = [sys.executable, "-m", "console", "run", name, "--endpoint-url", kinesalite,
            "--db", str(db), "--no-ui", "--processor", "poison_app:process",
            "--on-failure", "park", "--retries", "1", "--flush-interval", "60"]  # fmt: skip
    with log.open("w") as f:
        proc = subprocess.Popen(args, stderr=f, stdout=f, env=env)
    try:
        deadline = time.monotonic() + 30
        while "parked record" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
    # The checkpoint as it was at the start: the batch will be read again.
    assert set(checkpoints_in(db).values()) == {"trim_horizon"}
    done = run_cli(*args[3:], "--max-records", "30", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    listed = json.loads(run_cli("parked", "list", "--db", str(db), "--stream", name,
                                "--json").stdout)  # fmt: skip
    assert [p["data"] for p in listed] == ["poison-1"]  # once
    good = {d.decode() for _, d in sent if d != b"poison-1"}
    assert set(out.read_text().split()) == good  # none lost


@pytest.mark.parametrize("kind", ["sqs", "kinesis", "s3"])
async def test_each_dead_letter_destination_receives_the_parked_records(
    moto: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On moto's server: each destination reached at its opening (a missing one refused in
    one line), then given the parked records, each as the documented JSON; one that fails
    later raises (the shard then blocks: test_a_parking_lot_that_fails_blocks_the_shard)."""
    import aioboto3

    from console.errors import UsageError
    from console.sources.dead_letter import open_dead_letter

    monkeypatch.setenv(f"AWS_ENDPOINT_URL_{kind.upper()}", moto)  # as the SDKs read it
    settings = aws("http://127.0.0.1:9")  # the run's --endpoint-url: not the destination's
    name = unique("dlq")
    session = aioboto3.Session(region_name="us-east-1")
    async with session.client(kind, endpoint_url=moto) as client:  # type: ignore[call-overload]
        if kind == "sqs":
            spec = f"sqs:{(await client.create_queue(QueueName=name))['QueueUrl']}"
            missing = f"sqs:{moto}/000000000000/nope"
        elif kind == "kinesis":
            await client.create_stream(StreamName=name, ShardCount=1)
            spec, missing = f"kinesis:{name}", "kinesis:nope"
        else:
            await client.create_bucket(Bucket=name)
            spec, missing = f"s3://{name}/parked", "s3://nope-bucket"
        with pytest.raises(UsageError, match="cannot be reached"):
            async with open_dead_letter(missing, settings):
                pass
        from console.engine.consume.poison import parked

        failure = Failure(ValueError("x"), 3, 1.0, 2.0)
        made = [Record(f"{i:05d}", "k", f"bad {i}".encode(), 1.0) for i in range(12)]
        items = [parked("arn:s", "shardId-1", r, failure, None) for r in made]
        async with open_dead_letter(spec, settings) as destination:
            await destination.park(items)
        if kind == "sqs":
            url = spec.removeprefix("sqs:")
            bodies: list[str] = []
            for _ in range(20):  # bounded: a test that fails, never one that hangs
                got = await client.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
                bodies += [m["Body"] for m in got.get("Messages", [])]
                if len(bodies) >= 12:
                    break
        elif kind == "kinesis":
            shard = (await client.list_shards(StreamName=name))["Shards"][0]["ShardId"]
            it = await client.get_shard_iterator(
                StreamName=name, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
            )
            got = await client.get_records(ShardIterator=it["ShardIterator"])
            bodies = [r["Data"].decode() for r in got["Records"]]
            assert {r["PartitionKey"] for r in got["Records"]} == {"k"}  # the record's own
        else:
            keys = [o["Key"] for o in (await client.list_objects_v2(Bucket=name))["Contents"]]
            assert sorted(keys)[0] == "parked/shardId-1/00000-0.json"
            bodies = [
                (await (await client.get_object(Bucket=name, Key=key))["Body"].read()).decode()
                for key in keys
            ]
        docs = [json.loads(b) for b in bodies]
        assert sorted(d["data"] for d in docs) == sorted(f"bad {i}" for i in range(12))
        assert all(d["error"]["type"] == "ValueError" and d["id"] is None for d in docs)
        assert {d["sequence_number"] for d in docs} == {r.sequence_number for r in made}


async def test_a_parking_lot_that_fails_blocks_the_shard(kinesalite: str, db: str) -> None:
    """A destination that fails after the start (a queue deleted, say): the shard blocks,
    says why, and retries the park; nothing is dropped, and once it can park it reads on."""
    from console.model import ShardStatus

    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 1)
    sent = numbered(20, keys=4)
    await k.put(name, sent)
    processor = failing_on({sent[5][1]})
    store = await SqliteStore.open(db)

    class Flaky:
        def __init__(self) -> None:
            self.down = True
            self.tries = 0

        async def park(self, records: Any) -> None:
            self.tries += 1
            if self.down:
                raise RuntimeError("queue does not exist")
            await store.park(records)

    lot = Flaky()
    options = PARK
    try:
        async with (
            KinesisSource(name, aws(kinesalite)) as source,
            Consumer(source, store, processor, options, parking=lot) as consumer,
        ):
            sid = next(iter(consumer.state.shards))
            await wait_for(lambda: lot.tries >= 3, what="parks retried")
            view = consumer.state.shards[sid]
            assert view.status is ShardStatus.FAILING and "cannot park" in (view.last_error or "")
            assert view.parked == 0 and view.position is not None
            assert view.position.sequence_number is None  # not moved past the batch
            lot.down = False
            await wait_for(lambda: consumer.state.shards[sid].parked == 1, what="parked")
            await wait_for(lambda: consumer.state.shards[sid].status is ShardStatus.ACTIVE)
            key = consumer.discovery.key
        assert [p.data for p in await store.parked(key)] == [sent[5][1]]
        assert sorted(processor.data()) == sorted(d for i, (_, d) in enumerate(sent) if i != 5)
    finally:
        await store.close()


async def test_a_sub_record_of_an_aggregate_is_parked_and_its_siblings_processed(
    moto: str, db: str
) -> None:
    """KPL aggregation: the poison user record is parked with its sub-sequence number; the
    other user records of its aggregate are processed, once."""
    from aws_kinesis_agg.aggregator import RecordAggregator

    name = unique()
    k = Kinesis(moto)
    await k.create(name, 1)
    agg = RecordAggregator()
    for i in range(8):
        agg.add_user_record(f"user-{i}", b"poison" if i == 5 else f"u{i}".encode())
    pk, _, data = agg.clear_and_get().get_contents()
    await k.put(name, [(pk, data), ("plain", b"after")])
    processor = failing_on({b"poison"})
    store = await SqliteStore.open(db)
    options = PARK
    try:
        async with (
            KinesisSource(name, aws(moto)) as source,
            Consumer(source, store, processor, options) as consumer,  # parks in the store
        ):
            await wait_for(lambda: len(processor.seen) == 8, what="the 7 siblings and after")
            key = consumer.discovery.key
        [p] = await store.parked(key)
    finally:
        await store.close()
    assert (p.data, p.sub_sequence_number, p.partition_key) == (b"poison", 5, "user-5")
    assert processor.data() == [b"u0", b"u1", b"u2", b"u3", b"u4", b"u6", b"u7", b"after"]


async def test_a_fleet_parks_in_its_companion_table_and_the_records_survive_a_lease_move(
    kinesalite: str, moto: str
) -> None:
    """Two workers on a lease table, a poison record in each shard: both parked in the
    companion table, each with the name of a worker of the fleet; one worker stops, the
    other takes its lease, and the parked records are all still listed (by the command line
    too)."""
    from console.cli.wiring import Fleet, open_consumer

    stream, table = unique("pf"), unique("app")
    k = Kinesis(kinesalite)
    await k.create(stream, 2)
    sent = numbered(40, keys=8)
    poison = {sent[3][1], sent[4][1]}  # keys k3 and k4: one in each shard, by their hashes
    await k.put(stream, sent)
    a, b = failing_on(poison), failing_on(poison)
    options = PARK

    def fleet(worker: str) -> Fleet:
        return Fleet(table, worker_id=worker, failover=3.0, endpoint_url=moto)

    async with open_consumer(stream, b, aws=aws(kinesalite), options=options,
                             fleet=fleet("b")) as cb:  # fmt: skip
        async with open_consumer(stream, a, aws=aws(kinesalite), options=options,
                                 fleet=fleet("a")) as ca:  # fmt: skip
            await wait_for(lambda: len(a.seen) + len(b.seen) >= 38, 30, "the others")
            key = ca.discovery.key
            store = cb.store
            views = lambda: [*ca.state.shards.values(), *cb.state.shards.values()]  # noqa: E731
            await wait_for(lambda: sum(v.parked for v in views()) == 2, 30, "both parked")
        # a stopped: b takes its lease; the parked records stay listed.
        await wait_for(lambda: all(v.owner == "b" for v in cb.state.shards.values()), 30, "b")
        listed = await store.parked(key)  # type: ignore[attr-defined]
    assert sorted(p.data for p in listed) == sorted(poison)
    assert {p.worker_id for p in listed} <= {"a", "b"} and all(p.id for p in listed)
    seen = Counter(a.data() + b.data())
    assert set(seen) == {d for _, d in sent} - poison
    out = run_cli("parked", "list", "--lease-table", table, "--stream", stream, "--endpoint-url",
                  kinesalite, "--dynamodb-endpoint-url", moto, "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert sorted(p["data"] for p in json.loads(out.stdout)) == sorted(d.decode() for d in poison)


async def test_a_fleet_record_parked_again_keeps_its_item_and_its_id() -> None:
    from console.checkpoints.leases import LeaseStore
    from console.engine.consume.poison import parked
    from tests.dynamo_memory import MemoryDynamo

    store = LeaseStore(MemoryDynamo().client(), "app")
    await store.companion.ensure(create=True)
    r = Record("00042", "k", b"\xff", 1.5, 3)
    first = parked("arn:s", "sh0", r, Failure(ValueError("x"), 4, 10.0, 11.0), "w1")
    again = parked("arn:s", "sh0", r, Failure(ValueError("y"), 2, 20.0, 21.0), "w2")
    other = parked("arn:s", "sh1", Record("00007", "k", b"ok", 1.0), Failure(ValueError("z"), 1,
                   5.0, 5.0), "w1")  # fmt: skip
    await store.park([first])
    [before] = await store.parked("arn:s")
    await store.park([again, other])
    rows = await store.parked("arn:s")
    assert [(p.id, p.shard_id, p.attempts, p.first_failure, p.last_failure, p.worker_id)
            for p in rows] == [(before.id, "sh0", 4, 10.0, 21.0, "w1"),
                               ((before.id or 0) + 1, "sh1", 1, 5.0, 5.0, "w1")]  # fmt: skip
    assert rows[0].data == b"\xff" and rows[0].sub_sequence_number == 3
    assert [p.shard_id for p in await store.parked("arn:s", "sh1")] == ["sh1"]
    assert await store.unpark("arn:s", [before.id or 0], []) == 1
    assert [p.shard_id for p in await store.parked("arn:s")] == ["sh1"]


async def test_a_running_consumer_redrives_through_its_own_processor(
    kinesalite: str, db: str
) -> None:
    """parked redrive with a consumer running: queued as a command, applied between batches
    through the running consumer's processor (no --processor), ahead of the shard's new
    records (one put while the redriven record is being processed comes after it); the record
    then unparked, with a history entry naming the command."""
    import asyncio

    name = unique()
    k = Kinesis(kinesalite)
    await k.create(name, 1)
    sent = numbered(10, keys=2)
    await k.put(name, sent)
    fixed = False
    gate, holding = asyncio.Event(), asyncio.Event()

    class Processor(Collect):
        async def process(self, records: list[Record], ctx: ShardContext) -> None:
            if any(r.data == sent[4][1] for r in records):
                if not fixed:
                    raise ValueError("bad")
                holding.set()
                await gate.wait()  # the redriven record, held while a new one arrives
            await super().process(records, ctx)

    processor = Processor()
    store = await SqliteStore.open(db)
    options = PARK
    try:
        async with (
            KinesisSource(name, aws(kinesalite)) as source,
            Consumer(source, store, processor, options, parking=Parking(store)) as consumer,
        ):
            await wait_for(lambda: len(processor.seen) == 9, what="the 9 others")
            [p] = await store.parked(consumer.discovery.key)
            fixed = True  # the bad deploy rolled back
            cli = asyncio.create_task(asyncio.to_thread(
                run_cli, "parked", "redrive", "--all", "--db", db, "--stream", name, "--yes"
            ))  # fmt: skip
            await wait_for(holding.is_set, 30, "the redrive under way")
            await k.put(name, [("k0", b"after")])
            await asyncio.sleep(0.5)  # 10 idle polls: a shard not held would read it now
            gate.set()
            out = await cli
            assert out.returncode == 0, out.stderr
            assert "through the running consumer" in out.stdout
            await wait_for(lambda: len(processor.seen) == 11, what="the new record too")
            assert processor.data()[-2:] == [sent[4][1], b"after"]  # redriven first
            assert await store.parked(consumer.discovery.key) == []
            [entry] = [h for h in await consumer.history() if h.cause == "redrive"]
            assert entry.command_id is not None and p.sequence_number in (entry.note or "")
    finally:
        gate.set()
        await store.close()
