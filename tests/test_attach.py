"""The console attached to a consumer it did not start, through the consumer's lease table.

The lease rows are written here as the KCL writes them (console.checkpoints.leases.table, the
KCL's own items), on moto's DynamoDB, for a kinesalite stream; the attached engine reads them
over HTTP like the real thing. test_kcl_interop.py attaches to the real KCL.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from console.checkpoints.leases import V3, Coordinator, Lease, LeaseStore
from console.checkpoints.leases.coordinator import Migration
from console.cli.wiring import Fleet, make_source, open_lease_store
from console.engine.changes.plan import Action, ControlRequest, SkipTo
from console.engine.observe.diagnosis import Finding
from console.engine.observe.leases import AttachedLeases
from console.model import Position, ShardStatus
from tests.conftest import Kinesis, aws, numbered, run_cli, unique, wait_for
from tests.test_fleet import ENV

pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)


class App:
    """A stream and a lease table as a KCL application leaves them: workers w1 and w2."""

    def __init__(self, kinesalite: str, moto: str) -> None:
        self.kinesalite = kinesalite
        self.moto = moto
        self.stream = unique("att")
        self.table = unique("kclapp")
        self.kinesis = Kinesis(kinesalite)
        self.puts: dict[str, list[str]] = {}

    async def build(self, shards: int = 2, records: int = 40) -> None:
        await self.kinesis.create(self.stream, shards)
        for put in await self.kinesis.put(self.stream, numbered(records, keys=8)):
            self.puts.setdefault(put["ShardId"], []).append(put["SequenceNumber"])

    @contextlib.asynccontextmanager
    async def writer(self) -> AsyncIterator[LeaseStore]:
        """The table, created as the KCL creates it, and a handle to write rows with."""
        async with open_lease_store(Fleet(self.table, endpoint_url=self.moto), aws(self.moto)) as s:
            yield s

    async def lease(self, store: LeaseStore, sid: str) -> Lease:
        lease = await store.table.get(sid, None)
        assert lease is not None, sid
        return lease

    async def row(
        self,
        store: LeaseStore,
        sid: str,
        checkpoint: str,
        owner: str | None = None,
        parents: tuple[str, ...] = (),
    ) -> Lease:
        await store.table.create(sid, checkpoint, parents)
        lease = await self.lease(store, sid)
        if owner is not None:
            assert await store.table.take(lease, owner)
        return lease

    @contextlib.asynccontextmanager
    async def attached(self, **kw: Any) -> AsyncIterator[AttachedLeases]:
        fleet = Fleet(self.table, endpoint_url=self.moto, create=False)
        async with (
            open_lease_store(fleet, aws(self.moto), create_companion=False) as store,
            make_source(self.stream, aws(self.kinesalite)) as source,
        ):
            engine = AttachedLeases(
                store,
                source,
                scan_interval=kw.pop("scan_interval", 0.2),
                probe_interval=kw.pop("probe_interval", 0.3),
                failover=kw.pop("failover", 3.0),
                **kw,
            )
            await engine.start()
            try:
                yield engine
            finally:
                await engine.stop()


@pytest.fixture
async def app(kinesalite: str, moto: str) -> AsyncIterator[App]:
    a = App(kinesalite, moto)
    await a.build()
    yield a
    async with a.kinesis.client() as k:
        with contextlib.suppress(Exception):
            await k.delete_stream(StreamName=a.stream)


def shard(n: int) -> str:
    return f"shardId-{n:012d}"


async def test_attach_shows_the_leases_lineage_lag_and_what_is_wrong(app: App) -> None:
    s0, s1 = shard(0), shard(1)
    await app.kinesis.split(app.stream, s0)
    kids = [s["ShardId"] for s in await app.kinesis.shards(app.stream) if s.get("ParentShardId")]
    async with app.writer() as w:
        # s0 is read to its end by w1, who never checkpointed SHARD_END: its children wait.
        await app.row(w, s0, app.puts[s0][-1], owner="w1")
        # w2 is 3 records into s1.
        await app.row(w, s1, app.puts[s1][2], owner="w2")
        for kid in kids:
            await app.row(w, kid, "TRIM_HORIZON", parents=(s0,))
        await app.row(w, "shardId-000000000099", "TRIM_HORIZON", owner="w2")  # no such shard
        async with app.attached() as engine:
            state = engine.state
            assert state.attached_to == "a KCL application"
            assert {sid: v.owner for sid, v in state.shards.items() if v.owner} == {
                s0: "w1",
                s1: "w2",
                "shardId-000000000099": "w2",
            }
            assert state.lineage.children[s0] == tuple(sorted(kids))
            assert all(state.shards[k].status is ShardStatus.WAITING for k in kids)
            assert state.shards[s1].status is ShardStatus.LEASED
            assert state.shards[s1].checkpoint == Position.after_sequence(app.puts[s1][2], 0)
            # Lag: the age of the first record after the checkpoint, peeked for the detail.
            await wait_for(lambda: state.shards[s1].lag_ms is not None, 10, "a lag read of s1")
            view = state.shards[s1]
            assert [r.sequence_number for r in view.recent] == [app.puts[s1][3]]
            arrival = view.recent[0].approximate_arrival
            assert arrival is not None
            assert view.lag_ms == pytest.approx((time.time() - arrival) * 1000, abs=3000)
            assert state.shards[s0].lag_ms == 0  # read to its end

            def found() -> dict[tuple[Finding, str], str]:
                return {(d.finding, d.subject): d.text for d in state.diagnoses}

            await wait_for(
                lambda: all((Finding.STUCK_CHILD, k) in found() for k in kids), 10, "stuck children"
            )
            assert "never checkpointed SHARD_END" in found()[(Finding.STUCK_CHILD, kids[0])]
            assert (Finding.ORPHAN_LEASE, "shardId-000000000099") in found()
            # Nobody renews: after the failover time, every owned lease is expired.
            await wait_for(
                lambda: (
                    {sid for (f, sid) in found() if f is Finding.EXPIRED}
                    == {s0, s1, "shardId-000000000099"}
                ),
                15,
                "expired leases",
            )
            assert state.shards[s1].lease.expired
            # A worker renews s1 and takes a child: the log says so, and s1 is live again.
            lease = await app.lease(w, s1)
            assert await w.table.renew(lease)
            kid = await app.lease(w, kids[0])
            assert await w.table.take(kid, "w3")
            await wait_for(
                lambda: any(e.kind == "lease_taken" for e in engine.events.since(0)), 10, "taken"
            )
            assert any(e.message == f"w3 took lease {kids[0]}" for e in engine.events.since(0)), [
                e.message for e in engine.events.since(0)
            ]
            await wait_for(lambda: not state.shards[s1].lease.expired, 10, "s1 renewed")


async def test_a_rewind_fences_the_lease_and_undo_puts_it_back(app: App) -> None:
    s1 = shard(1)
    seqs = app.puts[s1]
    async with app.writer() as w:
        await app.row(w, shard(0), app.puts[shard(0)][-1], owner="w1")
        before = await app.row(w, s1, seqs[-1], owner="w2")
        async with app.attached() as engine:
            request = ControlRequest(Action.REWIND, s1, Position.at_sequence(seqs[5]), actor="op")
            plan = await engine.preview(request)
            # From, to, how many records are read again, who holds it now.
            assert f"{s1}: after_sequence:{seqs[-1]}/0 -> at_sequence:{seqs[5]}" in plan.summary
            assert f"{len(seqs) - 5} read again" in plan.summary
            assert "held by w2: it drops the lease at its next renewal" in plan.summary
            result = await engine.control(request)
            assert result.ok, result.message
            told = [e.message for e in engine.events.since(0) if e.kind == "lease_fenced"]
            assert told == [
                f"change #{result.command_id} took lease {s1} from w2: it drops the shard at "
                "its next renewal, and the next taker reads from the new checkpoint"
            ]
            lease = await app.lease(w, s1)
            # The record just before the target, the owner gone, the counter moved: w2's next
            # renewal fails and the next taker reads from seqs[5] on.
            assert (lease.checkpoint, lease.owner) == (seqs[4], None)
            assert lease.counter == before.counter + 1
            history = await engine.history(s1)
            assert history[0].actor == "op" and history[0].cause == "rewind"
            assert history[0].old_position == Position.after_sequence(seqs[-1], 0)

            # Undo: the checkpoint the table held before the rewind.
            undo = await engine.control(ControlRequest(Action.UNDO, actor="op"))
            assert undo.ok, undo.message
            assert (await app.lease(w, s1)).checkpoint == seqs[-1]


async def test_a_time_becomes_the_record_before_it_and_skip_goes_to_the_tip(app: App) -> None:
    s0, s1 = shard(0), shard(1)
    async with app.writer() as w:
        await app.row(w, s0, "TRIM_HORIZON", owner="w1")
        await app.row(w, s1, app.puts[s1][1], owner="w2")
        later = await app.kinesis.put(app.stream, numbered(10, keys=8, start=100))
        after = {
            sid: [p["SequenceNumber"] for p in later if p["ShardId"] == sid] for sid in (s0, s1)
        }
        assert after[s0] and after[s1]
        # A time between the two puts (the first was made well before).
        cut = min([await app.kinesis.arrival(app.stream, sid, after[sid][0]) for sid in (s0, s1)])
        cut -= 0.001
        async with app.attached() as engine:
            # Rewind to the time: the last record of the first put is the checkpoint (the KCL
            # stores no time).
            r = await engine.control(
                ControlRequest(Action.REWIND, s1, Position.at_timestamp(cut), actor="op")
            )
            assert r.ok, r.message
            assert (await app.lease(w, s1)).checkpoint == app.puts[s1][-1]
            r = await engine.control(ControlRequest(Action.SKIP, s1, skip_to=SkipTo.LATEST))
            assert r.ok, r.message
            # The tip as of now: after the last record, so whatever arrives next is read.
            assert (await app.lease(w, s1)).checkpoint == after[s1][-1]
            # Replay every shard from the time: each lease at the record before it.
            since = Position.at_timestamp(cut)
            r = await engine.control(ControlRequest(Action.REPLAY, position=since, actor="op"))
            assert r.ok, r.message
            for sid in (s0, s1):
                assert (await app.lease(w, sid)).checkpoint == app.puts[sid][-1]


async def test_a_lease_that_moved_since_the_preview_is_not_written(app: App) -> None:
    s1 = shard(1)
    async with app.writer() as w:
        await app.row(w, shard(0), "TRIM_HORIZON", owner="w1")
        await app.row(w, s1, app.puts[s1][-1], owner="w2")
        async with app.attached() as engine:
            request = ControlRequest(Action.REWIND, s1, Position.trim_horizon(), actor="op")
            assert "held by w2" in (await engine.preview(request)).summary
            lease = await app.lease(w, s1)
            assert await w.table.take(lease, "w3")  # stolen while the operator looked
            result = await engine.control(request)
            assert not result.ok
            assert result.message == (
                f"the lease of {s1} changed while you looked (held by w2, now w3): nothing "
                "written; look again"
            )
            after = await app.lease(w, s1)
            assert (after.checkpoint, after.owner, after.counter) == (
                app.puts[s1][-1],
                "w3",
                lease.counter,
            )
            assert await engine.history(s1) == []
            assert engine.record is not None
            assert await engine.store.pending_commands(engine.record.stream) == []  # refused
            # Looked at again, it applies.
            assert "held by w3" in (await engine.preview(request)).summary
            assert (await engine.control(request)).ok


async def test_pause_is_refused_for_a_kcl_application_and_read_only_refuses_all(app: App) -> None:
    s1 = shard(1)
    async with app.writer() as w:
        await app.row(w, s1, "TRIM_HORIZON", owner="w2")
        async with app.attached() as engine:
            r = await engine.control(ControlRequest(Action.PAUSE, s1))
            assert not r.ok and "refused for a KCL application" in r.message
        async with app.attached(read_only=True) as engine:
            r = await engine.control(ControlRequest(Action.REWIND, s1, Position.latest()))
            assert not r.ok and r.message == "read-only: operator changes are refused"
        lease = await app.lease(w, s1)
        assert (lease.checkpoint, lease.owner) == ("TRIM_HORIZON", "w2")


def _cli(app: App, *args: str, timeout: float = 60) -> Any:
    return run_cli(
        *args,
        "--endpoint-url",
        app.kinesalite,
        "--dynamodb-endpoint-url",
        app.moto,
        env=ENV,
        timeout=timeout,
    )


async def test_attach_headless_and_leases_from_the_command_line(app: App) -> None:
    s0, s1 = shard(0), shard(1)
    async with app.writer() as w:
        await app.row(w, s0, app.puts[s0][-1], owner="w1")
        await app.row(w, s1, app.puts[s1][0], owner="w2")
    out = _cli(
        app,
        "attach", "--lease-table", app.table, "--stream", app.stream, "--no-ui",
        "--duration", "9", "--failover-time", "3", "--status-interval", "1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"attached to a KCL application on lease table {app.table}: 2 leases" in out.stderr
    # Each finding once, though its text (how long ago) changes at every scan.
    assert out.stderr.count(f"expired: nobody renews lease {s1}") == 1, out.stderr
    assert "leased=2" in out.stderr

    listed = _cli(app, "leases", "list", "--lease-table", app.table, "--stream", app.stream)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["shard", "owner", "counter", "checkpoint"]
    assert lines[2].split()[:4] == [s1, "w2", "1", app.puts[s1][0]]
    shown = _cli(
        app, "leases", "show", s1, "--lease-table", app.table, "--stream", app.stream, "--json"
    )
    assert shown.returncode == 0, shown.stderr
    import json

    doc = json.loads(shown.stdout)
    assert doc["lease"]["leaseOwner"] == "w2" and doc["lease"]["leaseCounter"] == 1


async def test_a_change_the_stream_cannot_resolve_writes_nothing(app: App) -> None:
    """A sequence number of another shard: one line, exit 2, the lease as it was."""
    s0, s1 = shard(0), shard(1)
    async with app.writer() as w:
        before = await app.row(w, s1, app.puts[s1][-1], owner="w2")
    out = _cli(
        app,
        "rewind", s1, "--to", f"sequence:{app.puts[s0][3]}", "--yes",
        "--lease-table", app.table, "--stream", app.stream,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("shard-console: error: ") and "InvalidArgument" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    async with app.writer() as w:
        after = await app.lease(w, s1)
        assert (after.checkpoint, after.owner, after.counter) == (
            before.checkpoint,
            before.owner,
            before.counter,
        )
        # Refused while it was planned: no command left pending in shard-console's table.
        await w.companion.ensure(create=False, missing_ok=True)
        assert w.companion.exists
        assert [await w.command(i) for i in range(1, 4)] == [None, None, None]


async def test_attach_refuses_what_it_cannot_watch(app: App, tmp_path: Path) -> None:
    async with app.writer() as w:
        await app.row(w, "shardId-000000000042", "TRIM_HORIZON", owner="w1")
        not_leases = unique("other")
        await w.table.client.create_table(
            TableName=not_leases,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    base = ("attach", "--no-ui", "--duration", "1")
    cases = {
        # Another stream's leases.
        (*base, "--lease-table", app.table, "--stream", app.stream): "is it this stream's",
        (*base, "--lease-table", unique("none"), "--stream", app.stream): "does not exist",
        (*base, "--lease-table", not_leases, "--stream", app.stream): "not a KCL lease table",
        (*base, "--lease-table", app.table): "needs --stream",
        (*base, "--lease-table", app.table, "--stream", unique("nostream")): "not found",
        (*base, "--db", str(tmp_path / "none.db")): "no database at",
    }
    # No region anywhere: one line, not an internal error.
    import os
    import subprocess
    import sys

    bare = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
    out = subprocess.run(
        [sys.executable, "-m", "console", "leases", "list", "--lease-table", app.table,
         "--stream", app.stream, "--dynamodb-endpoint-url", app.moto],
        capture_output=True, text=True, timeout=60, env=bare, check=False,
    )  # fmt: skip
    assert out.returncode == 2 and "no AWS region configured" in out.stderr, out.stderr
    for args, words in cases.items():
        out = _cli(app, *args)
        assert out.returncode == 2, (args, out.stderr)
        assert words in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


async def test_attach_db_shows_a_local_consumer_live_and_changes_go_through_it(
    kinesalite: str, tmp_path: Path
) -> None:
    """Beside a consumer running on this machine: its live state from the snapshot it
    publishes at each flush, a rewind applied by it, and "not running" once it stops."""
    from console.checkpoints.sqlite import SqliteStore
    from console.engine.observe.database import AttachedDb
    from tests.test_control_cli import consumer_process, rows, stop, wait_rows

    stream = unique("attdb")
    kinesis = Kinesis(kinesalite)
    await kinesis.create(stream, 2)
    puts = await kinesis.put(stream, numbered(30, keys=6))
    db, out = tmp_path / "c.db", tmp_path / "out.jsonl"
    proc = consumer_process(stream, kinesalite, db, out)
    try:
        wait_rows(out, 30)
        store = await SqliteStore.open(str(db), create=False)
        try:
            [record] = await store.streams()
            engine = AttachedDb(store, record, interval=0.2)
            await engine.start()
            try:
                state = engine.state
                s0 = shard(0)
                mine = [p["SequenceNumber"] for p in puts if p["ShardId"] == s0]
                await wait_for(
                    lambda: (
                        s0 in state.shards
                        and state.shards[s0].status is ShardStatus.ACTIVE
                        and state.shards[s0].checkpoint == Position.after_sequence(mine[-1])
                    ),
                    20,
                    "the consumer's state",
                )
                assert state.shards[s0].records == len(mine)  # this run's count, as it has it
                assert state.shards[s0].lag_ms is not None
                assert state.records_total == 30
                assert any(e.kind == "shard_started" for e in engine.events.since(0))
                assert not state.diagnoses
                # A rewind: the running consumer applies it and reads the shard again.
                result = await engine.control(
                    ControlRequest(Action.REWIND, s0, Position.trim_horizon(), actor="op")
                )
                assert result.ok, result.message
                again = wait_rows(out, 30 + len(mine))[30:]
                assert [r["sequence_number"] for r in again] == mine
                assert (await engine.history(s0))[0].actor == "op"
                stop(proc)
                # Its last snapshot says it stopped: no waiting for the snapshot to go stale.
                await wait_for(
                    lambda: [d.finding for d in state.diagnoses] == [Finding.NOT_RUNNING],
                    2,
                    "not running",
                )
                assert "it stopped" in state.diagnoses[0].text
                # Now the change is applied to the database itself.
                result = await engine.control(ControlRequest(Action.UNDO, actor="op"))
                assert result.ok, result.message
                back = Position.after_sequence(mine[-1])
                assert (await store.load(record.stream))[s0].position == back
                # ... and shown at once: the console says what the next start reads from.
                assert state.shards[s0].checkpoint == back
                assert state.shards[s0].status is ShardStatus.READY
            finally:
                await engine.stop()
        finally:
            await store.close()
        assert len(rows(out)) == 30 + len(mine)
    finally:
        if proc.poll() is None:
            proc.kill()
        async with kinesis.client() as k:
            await k.delete_stream(StreamName=stream)


async def test_attach_db_beside_a_consumer_that_has_not_flushed_yet_knows_it_runs(
    kinesalite: str, tmp_path: Path
) -> None:
    """A consumer has the stream but has published nothing yet (its first flush is a minute
    away): it runs all the same, and a change goes to it, never straight to the database."""
    import dataclasses

    from console.checkpoints.sqlite import SqliteStore
    from console.engine.consume.consumer import Consumer
    from console.engine.observe.database import AttachedDb
    from console.sources.kinesis import KinesisSource
    from tests.conftest import FAST, Collect

    stream = unique("attdb")
    kinesis = Kinesis(kinesalite)
    await kinesis.create(stream, 1)
    await kinesis.put(stream, numbered(5, keys=1))
    db = str(tmp_path / "c.db")
    slow = dataclasses.replace(FAST, flush_interval=600.0)
    ours = await SqliteStore.open(db)
    theirs: SqliteStore | None = None
    try:
        async with KinesisSource(stream, aws(kinesalite)) as source:
            async with Consumer(source, ours, Collect(), slow) as consumer:
                await wait_for(lambda: consumer.state.records_total == 5, what="read")
                theirs = await SqliteStore.open(db, create=False)
                [record] = await theirs.streams()
                assert await theirs.snapshot(record.stream) is None  # nothing published yet
                engine = AttachedDb(theirs, record, interval=0.2, wait=0.5)
                await engine.start()
                try:
                    assert engine.live
                    assert not engine.state.diagnoses  # not "no consumer is running"
                    result = await engine.control(
                        ControlRequest(Action.PAUSE, shard(0), actor="op")
                    )
                    # Handed to the consumer (which applies it between batches), not applied
                    # to the database under it.
                    assert result.ok and "applied by the running consumer" in result.message
                finally:
                    await engine.stop()
        assert not (await AttachedDb(theirs, record)._is_running())
    finally:
        await ours.close()
        if theirs is not None:
            await theirs.close()


def test_a_headless_line_tells_an_event_at_its_own_time() -> None:
    import io

    from console.engine.events import EventLog
    from console.headless import LinePrinter

    out = io.StringIO()
    printer = LinePrinter("json", out)
    events = EventLog()
    printer.event(events.emit("shard_done", "s done", at=1_700_000_000.0))
    assert '"ts": "2023-11-14T22:13:20.000Z"' in out.getvalue()


async def test_history_records_what_the_table_held_when_it_was_rewritten(app: App) -> None:
    """A worker checkpointed between the plan and the write: the history (and so undo) has the
    checkpoint that was overwritten, not the one the plan saw."""
    from console.checkpoints.base import CheckpointChange
    from console.model import Checkpoint, HistoryEntry

    s1 = shard(1)
    seqs = app.puts[s1]
    async with app.writer() as w:
        lease = await app.row(w, s1, seqs[3], owner="w2")
        assert await w.table.checkpoint(lease, seqs[7], 0)  # the worker moved on meanwhile
        stream = "arn-of-the-stream"
        await w.companion.ensure(create=True)
        seen_by_plan = Position.after_sequence(seqs[3], 0)
        target = Position.trim_horizon()
        change = CheckpointChange(
            Checkpoint(s1, target),
            HistoryEntry(s1, "rewind", "op", target, "open", seen_by_plan, "open"),
        )
        await w.save(stream, [change])
        [entry] = await w.history(stream, s1)
        assert entry.old_position == Position.after_sequence(seqs[7], 0)
        assert (await app.lease(w, s1)).checkpoint == "TRIM_HORIZON"


async def test_a_lag_read_after_the_checkpoint_and_its_iterator_kept_while_caught_up(
    app: App,
) -> None:
    from console.engine.observe.lag_probe import LagProbe

    s1 = shard(1)
    seqs = app.puts[s1]
    async with make_source(app.stream, aws(app.kinesalite)) as source:
        probe = LagProbe(source)
        behind = await probe.probe(s1, Position.after_sequence(seqs[4], 0))
        assert behind is not None and not behind.caught_up
        assert behind.next_record is not None and behind.next_record.sequence_number == seqs[5]
        at_tip = Position.after_sequence(seqs[-1], 0)
        first = await probe.probe(s1, at_tip)
        assert first is not None and first.caught_up and first.lag_ms(time.time()) == 0
        assert probe.calls == {"GetShardIterator": 2, "GetRecords": 2}
        again = await probe.probe(s1, at_tip)  # the same checkpoint: the iterator is kept
        assert again is not None and again.caught_up
        assert probe.calls == {"GetShardIterator": 2, "GetRecords": 3}
        # A record arrives: the kept iterator finds it, and is dropped.
        put = await app.kinesis.put(app.stream, numbered(8, keys=8, start=500))
        mine = [p["SequenceNumber"] for p in put if p["ShardId"] == s1]
        assert mine  # eight keys over two shards: the same ones every time
        later = await probe.probe(s1, at_tip)
        assert later is not None and not later.caught_up and later.next_record is not None
        assert later.next_record.sequence_number == mine[0]
        assert probe.calls == {"GetShardIterator": 2, "GetRecords": 4}


def test_a_restarted_consumer_s_events_are_not_taken_for_old_ones() -> None:
    from console.engine.events import EventLog
    from console.engine.snapshot import replay_events

    events = EventLog()
    first = {"events": [{"seq": n, "at": 1.0, "kind": "k", "message": f"a{n}"} for n in (1, 2, 3)]}
    seen = replay_events(first, events, 0)
    assert (seen, [e.message for e in events.since(0)]) == (3, ["a1", "a2", "a3"])
    assert replay_events(first, events, seen) == 3  # nothing new
    # The consumer restarted: its numbering begins again at 1.
    second = {"events": [{"seq": 1, "at": 2.0, "kind": "k", "message": "b1"}]}
    assert replay_events(second, events, seen) == 1
    assert [e.message for e in events.since(0)][-1] == "b1"


async def test_a_kcl_3_worker_s_metric_rows_are_shown_per_worker(app: App) -> None:
    s1 = shard(1)
    async with app.writer() as w:
        await app.row(w, s1, "TRIM_HORIZON", owner="w2")
        client = w.table.client
        await client.create_table(
            TableName=f"{app.table}-WorkerMetricStats",
            KeySchema=[{"AttributeName": "wid", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "wid", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        await client.put_item(
            TableName=f"{app.table}-WorkerMetricStats",
            Item={
                "wid": {"S": "w2"},
                "lut": {"N": str(int(time.time()))},
                "sts": {"M": {"CPU": {"L": [{"N": "12.5"}, {"N": "41"}]}}},
            },
        )
        # KCL 3.5 keeps the same rows in the lease table itself (single-table format).
        await client.put_item(
            TableName=app.table,
            Item={
                "leaseKey": {"S": "w9"},
                "entityType": {"S": "WORKER_METRIC_STATS"},
                "lut": {"N": str(int(time.time()))},
                "sts": {"M": {"MEMORY": {"L": [{"N": "63.5"}]}}},
            },
        )
        async with app.attached() as engine:

            def by_worker() -> dict[str, Any]:
                return {v.worker: v for v in engine.state.workers}

            await wait_for(lambda: by_worker().get("w2") and by_worker()["w2"].metrics, 10, "rows")
            workers = by_worker()
            assert dict(workers["w2"].metrics) == {"CPU": 41.0}
            assert workers["w2"].leases == 1
            assert dict(workers["w9"].metrics) == {"MEMORY": 63.5}
            assert set(engine.state.shards) == {shard(0), s1}  # the metric row is no lease


def test_an_expiry_is_told_once_and_again_after_a_renewal() -> None:
    from console.engine.events import EventLog, ExpiryTeller

    events = EventLog()
    teller = ExpiryTeller(events)
    for expired in (True, True, False, True):
        teller.see("s1", "w1", expired)
    teller.see("s2", None, True)  # nobody's: nothing to say
    assert [e.message for e in events.since(0)] == [
        "lease on s1 expired: worker w1 stopped renewing it"
    ] * 2


async def test_children_of_a_shard_still_being_read_wait_for_their_leases(app: App) -> None:
    """The KCL leases a child when its parent ends: until then a child without a lease waits,
    and is no finding; an open shard nobody leases is one."""
    s0, s1 = shard(0), shard(1)
    await app.kinesis.split(app.stream, s0)
    kids = [s["ShardId"] for s in await app.kinesis.shards(app.stream) if s.get("ParentShardId")]
    async with app.writer() as w:
        await app.row(w, s0, app.puts[s0][3], owner="w1")  # still being read
        async with app.attached() as engine:
            state = engine.state
            for kid in kids:
                assert (state.shards[kid].status, state.shards[kid].last_error) == (
                    ShardStatus.WAITING,
                    None,
                )
            assert state.shards[s1].status is ShardStatus.READY
            assert state.shards[s1].last_error == "no lease: no worker reads it"
            assert {(d.finding, d.subject) for d in state.diagnoses} == {(Finding.NO_LEASE, s1)}


async def test_a_lease_created_and_taken_since_the_preview_is_not_written(app: App) -> None:
    s0, s1 = shard(0), shard(1)
    async with app.writer() as w:
        await app.row(w, s0, "TRIM_HORIZON", owner="w1")
        async with app.attached() as engine:
            request = ControlRequest(Action.REWIND, s1, Position.trim_horizon(), actor="op")
            assert "no lease yet (created by the change)" in (await engine.preview(request)).summary
            await app.row(w, s1, app.puts[s1][-1], owner="w3")  # the application's shard sync
            result = await engine.control(request)
            assert not result.ok
            assert "held by nobody, now w3" in result.message
            lease = await app.lease(w, s1)
            assert (lease.checkpoint, lease.owner) == (app.puts[s1][-1], "w3")


async def test_attach_db_checks_a_rewinds_sequence_number_against_its_shard(
    demo_endpoint: Any, db: str
) -> None:
    """With no consumer running, a change from the attached console is written to the database
    itself: a sequence number of another shard is refused first, as the command line does."""
    from console.checkpoints.sqlite import SqliteStore
    from console.engine.consume.consumer import Consumer
    from console.engine.observe.database import AttachedDb
    from console.sources.kinesis import KinesisSource
    from tests.conftest import FAST, Collect

    e = demo_endpoint
    stream = e.call(e.kinesis.create_stream, "s", 2)
    for i in range(10):
        e.call(e.kinesis.put, "s", f"k{i}", b"x")
    store = await SqliteStore.open(db)
    try:
        async with KinesisSource("s", aws(e.url)) as source:
            processor = Collect()
            async with Consumer(source, store, processor, FAST) as consumer:
                await wait_for(lambda: consumer.state.records_total == 10, what="read")
        [record] = await store.streams()
        before = await store.load(record.stream)
        s0, s1 = sorted(stream.shards)
        theirs = str(stream.shards[s1].seqs[0])
        mine = str(stream.shards[s0].seqs[0])
        engine = AttachedDb(store, record, stream=lambda: KinesisSource("s", aws(e.url)))
        refused = await engine.control(
            ControlRequest(Action.REWIND, s0, Position.at_sequence(theirs), actor="op")
        )
        assert not refused.ok
        assert refused.message.startswith(f"sequence number {theirs} is not one of shard {s0}'s")
        assert await store.load(record.stream) == before
        applied = await engine.control(
            ControlRequest(Action.REWIND, s0, Position.at_sequence(mine), actor="op")
        )
        assert applied.ok, applied.message
        assert (await store.load(record.stream))[s0].position == Position.at_sequence(mine)
    finally:
        await store.close()


async def test_a_kcl_3x_applications_leader_and_its_troubles_are_told(app: App) -> None:
    """The migration state and the leader, as events; a leader's lock nobody renews, and a
    worker whose metric row is fresh while a lease it holds expired, as findings."""
    s1 = shard(1)
    async with app.writer() as w:
        await app.row(w, s1, "TRIM_HORIZON", owner="w2")  # w2 holds it, never renews it
        coordinator = Coordinator(w.table.client, app.table)
        await coordinator.ensure()
        assert await coordinator.set_migration(V3, "w1", Migration(None))
        assert await coordinator.acquire_leader("w1", 2_000, None) is not None  # never renewed
        await coordinator.report("w2", 30.0)
        async with app.attached(sync_interval=0.3) as engine:

            def told(text: str) -> bool:
                return any(text in e.message for e in engine.events.since(0))

            await wait_for(lambda: told("the application runs CLIENT_VERSION_3X"), 10, "version")
            await wait_for(lambda: told("worker w1 leads the assignment of leases"), 10, "leader")

            def findings() -> dict[Finding, str]:
                return {d.finding: d.text for d in engine.state.diagnoses}

            await wait_for(lambda: Finding.LEADER_STALE in findings(), 10, "the stale lock")
            assert "held by w1, has not been renewed" in findings()[Finding.LEADER_STALE]
            await wait_for(lambda: Finding.NOT_RENEWING in findings(), 10, "w2 not renewing")
            assert (
                f"worker w2 writes its metric row but does not renew {s1}"
                in (findings()[Finding.NOT_RENEWING])
            )
