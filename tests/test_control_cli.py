"""The control plane from the command line: a headless consumer in one process, commands from
another, a kinesalite stream between them."""

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from console.checkpoints.sqlite import SqliteStore
from console.engine.changes.plan import Action, ControlRequest
from console.engine.consume.consumer import Consumer
from console.model import ShardStatus
from console.sources.kinesis import KinesisSource
from tests.conftest import (
    FAST,
    Collect,
    Kinesis,
    aws,
    numbered,
    run_cli,
    unique,
    wait_flushed_through,
    wait_for,
)


def consumer_process(stream: str, url: str, db: Path, out: Path) -> subprocess.Popen:
    log = (out.parent / "consumer.log").open("a")  # a pipe nobody reads would fill and block it
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "console",
            "run",
            stream,
            "--endpoint-url",
            url,
            "--db",
            str(db),
            "--processor",
            f"jsonl:{out}",
            "--flush-interval",
            "0.3",
            "--idle-interval",
            "0.1",
            "--discovery-interval",
            "0.5",
            "--no-ui",
        ],
        stderr=log,
        text=True,
    )


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def wait_rows(out: Path, n: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = rows(out)
        if len(got) >= n:
            return got
        time.sleep(0.05)
    log = out.parent / "consumer.log"
    tail = log.read_text()[-3000:] if log.exists() else ""
    raise AssertionError(f"{len(rows(out))} of {n} rows in {out}; consumer log:\n{tail}")


def wait_until_status(db: Path, shard: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute(
                "SELECT status FROM checkpoints WHERE shard_id = ?", (shard,)
            ).fetchone()
        except sqlite3.OperationalError:
            row = None
        finally:
            conn.close()
        if row == (status,):
            return
        time.sleep(0.05)
    raise AssertionError(f"{shard} never became {status} in {db}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def consumed(stream: str, url: str, tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    """The database and output of a consumer that read the fixture's 60 records and stopped."""
    db, out = tmp_path / "c.db", tmp_path / "out.jsonl"
    proc = consumer_process(stream, url, db, out)
    first = wait_rows(out, 60)
    stop(proc)
    return db, out, first


def tables(db: Path) -> tuple:
    conn = sqlite3.connect(db)
    try:
        return tuple(
            conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
            for t in ("checkpoints", "history", "commands")
        )
    finally:
        conn.close()


@pytest.fixture
async def stream(kinesalite: str) -> str:
    name = unique("ctl")
    await Kinesis(kinesalite).create(name, 2)
    await Kinesis(kinesalite).put(name, numbered(60, keys=6))
    return name


def test_a_running_consumer_applies_cli_commands_and_replays_exactly(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    db, out = tmp_path / "c.db", tmp_path / "out.jsonl"
    proc = consumer_process(stream, kinesalite, db, out)
    try:
        first = wait_rows(out, 60)
        shard = first[0]["shard_id"]
        on_shard = sum(1 for r in first if r["shard_id"] == shard)
        t0 = time.monotonic()
        result = run_cli("rewind", shard, "--to", "trim_horizon", "--db", str(db), "--yes")
        assert result.returncode == 0, result.stderr
        assert "applied by the running consumer" in result.stdout
        assert time.monotonic() - t0 < 5  # picked up between batches, within a second or two
        wait_rows(out, 60 + on_shard)
        wait_flushed_through(db, Kinesis.tips[stream])  # back at the tip: nothing more comes
        after = rows(out)
        assert len(after) == 60 + on_shard  # that shard again, exactly, nothing else
        replayed = Counter(r["data"] for r in after[60:])
        assert set(replayed.values()) == {1}
        assert all(r["shard_id"] == shard for r in after[60:])
        # Pause through the CLI, then undo it: records written meanwhile arrive after the undo.
        assert run_cli("pause", shard, "--db", str(db), "--yes").returncode == 0
        asyncio.run(Kinesis(kinesalite).put(stream, numbered(30, keys=6, start=60)))
        tips = Kinesis.tips[stream]
        other = next(sid for sid in tips if sid != shard)
        # The other shard reads all it was given and flushes (several polls of its own): a
        # worker on the paused one would have read its share by then too.
        wait_flushed_through(db, {other: tips[other]})
        held = rows(out)
        assert all(r["shard_id"] != shard for r in held[len(after) :])
        undo = run_cli("undo", "--db", str(db), "--yes")
        assert undo.returncode == 0 and "undo change" in undo.stdout, undo.stdout + undo.stderr
        wait_rows(out, 60 + on_shard + 30)
        wait_flushed_through(db, tips)
        assert len(rows(out)) == 60 + on_shard + 30  # the held ones, once
    finally:
        stop(proc)
    history = run_cli("checkpoints", "history", "--db", str(db), "--json")
    import getpass
    import socket

    changes = [h for h in json.loads(history.stdout) if h["cause"] in ("undo", "pause", "rewind")]
    assert [h["cause"] for h in changes][:3] == ["undo", "pause", "rewind"]
    # user@host of whoever ran the CLI
    assert {h["who"] for h in changes} == {f"{getpass.getuser()}@{socket.gethostname()}"}


def test_with_no_consumer_the_store_changes_and_the_next_start_honours_it(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    db, out, first = consumed(stream, kinesalite, tmp_path)
    shard = first[0]["shard_id"]
    on_shard = sum(1 for r in first if r["shard_id"] == shard)
    before = tables(db)
    dry = run_cli("rewind", shard, "--to", "trim_horizon", "--db", str(db), "--dry-run")
    assert dry.returncode == 0 and "dry run: nothing changed" in dry.stdout
    assert f"rewind {shard} to the start (TRIM_HORIZON)" in dry.stdout  # the plan, shown
    assert tables(db) == before  # checkpoints, history and commands: not a row moved
    result = run_cli("rewind", shard, "--to", "-1h", "--db", str(db), "--yes")
    assert result.returncode == 0, result.stderr
    assert "the next start honours it" in result.stdout
    listing = json.loads(run_cli("checkpoints", "list", "--db", str(db), "--json").stdout)
    assert next(r for r in listing if r["shard"] == shard)["position"].startswith("at_timestamp:")
    proc = consumer_process(stream, kinesalite, db, out)
    try:
        wait_rows(out, 60 + on_shard)
        wait_flushed_through(db, Kinesis.tips[stream])  # at the tip: nothing more comes
        assert len(rows(out)) == 60 + on_shard
    finally:
        stop(proc)


def test_a_command_left_pending_by_a_crash_is_applied_at_the_next_start(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    db, out = tmp_path / "c.db", tmp_path / "out.jsonl"
    proc = consumer_process(stream, kinesalite, db, out)
    first = wait_rows(out, 60)
    shard = first[0]["shard_id"]
    proc.send_signal(signal.SIGSTOP)  # alive (it holds the lock) but not applying anything
    try:
        queued = run_cli("pause", shard, "--db", str(db), "--yes", "--wait", "1")
        # Queued, not applied: its own exit code, neither success nor failure.
        assert queued.returncode == 3 and "is queued, not applied yet" in queued.stdout, (
            queued.stdout + queued.stderr
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    asyncio.run(Kinesis(kinesalite).put(stream, numbered(40, keys=6, start=60)))
    tips = Kinesis.tips[stream]
    other = next(sid for sid in tips if sid != shard)
    proc = consumer_process(stream, kinesalite, db, out)
    try:
        # The other shard reads all it was given, and flushes: had the paused shard started
        # before the pause was applied, its records would be in the file by now.
        wait_flushed_through(db, {other: tips[other]})
        later = rows(out)[len(first) :]
        assert later and all(r["shard_id"] != shard for r in later)  # paused before any read
    finally:
        stop(proc)
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT state FROM commands").fetchall() == [("applied",)]


def test_rewinding_a_closed_parent_replays_it_before_its_children(
    kinesalite: str, tmp_path: Path
) -> None:
    name = unique("lin")
    k = Kinesis(kinesalite)
    asyncio.run(k.create(name, 1))
    asyncio.run(k.put(name, numbered(20, keys=4)))
    parent = asyncio.run(k.shards(name))[0]["ShardId"]
    asyncio.run(k.split(name, parent))
    asyncio.run(k.put(name, numbered(20, keys=4, start=20)))
    db, out = tmp_path / "c.db", tmp_path / "out.jsonl"
    proc = consumer_process(name, kinesalite, db, out)
    try:
        wait_rows(out, 40)
        wait_until_status(db, parent, "done")  # the parent's end is flushed
        result = run_cli("rewind", parent, "--to", "trim_horizon", "--db", str(db), "--yes")
        assert result.returncode == 0, result.stderr
        assert "reset 2 descendant(s)" in result.stdout
        second = wait_rows(out, 80)[40:]
    finally:
        stop(proc)
    shards = [r["shard_id"] for r in second]
    last_parent = max(i for i, s in enumerate(shards) if s == parent)
    first_child = min(i for i, s in enumerate(shards) if s != parent)
    assert last_parent < first_child  # the parent again, all of it, then its children
    assert Counter(r["data"] for r in second) == Counter(
        d.decode() for _, d in numbered(40, keys=4)
    )


def test_every_validation_error_is_one_line_exit_2_and_changes_nothing(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    db, _, first = consumed(stream, kinesalite, tmp_path)
    shard = first[0]["shard_id"]
    # Mark one shard done, offline, to have something a skip must refuse.
    assert run_cli("skip", shard, "--to", "done", "--db", str(db), "--yes").returncode == 0
    other = next(r["shard_id"] for r in first if r["shard_id"] != shard)
    before = tables(db)
    cases = [
        (["pause", "shardId-000000000042"], "unknown shard"),
        (["rewind", other, "--to", "sequence:1"], "before the first"),
        (["rewind", other, "--to", "sequence:12ab"], "not a sequence number"),
        (["rewind", other, "--to", "timestamp:2999-01-01T00:00:00Z"], "in the future"),
        (["rewind", other, "--to", "-3d"], "older than the stream's retention"),
        (["replay", "--since", "-2d"], "older than the stream's retention"),
        (["replay", "--since", "soon"], "not a time"),
        (["skip", shard, "--to", "latest"], "already skipped"),
        (["skip", other, "--to", "next-record"], "needs the running consumer"),
        (["rewind", other, "--to", "checkpoint:999"], "not a checkpoint"),
        (["pause", other, "--stream", "elsewhere"], "holds no stream 'elsewhere'"),
        (["undo", "4242"], "no change #4242"),
        (["pause", other, "--read-only"], "read-only"),
        (["rewind", other, "--to", "trim_horizon"], "no terminal to confirm on"),
    ]
    for args, needle in cases:
        extra = [] if "--to" in args and args[-1] == "trim_horizon" else ["--yes"]
        result = run_cli(*args, "--db", str(db), *extra)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, result.stderr)
        after = tables(db)
        # Refused commands may be recorded as failed; checkpoints and history never move.
        assert after[0] == before[0] and after[1] == before[1], args
    missing = run_cli("checkpoints", "list", "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 2 and "no database at" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    config = tmp_path / "ro.toml"
    config.write_text("read_only = true\n")
    refused = run_cli("pause", other, "--db", str(db), "--yes", "--config", str(config))
    assert refused.returncode == 2 and "read-only" in refused.stderr


def _ask(db: Path, args: list[str], answer: str) -> subprocess.CompletedProcess:
    """Run a change on a terminal; at its question, check that it holds no lock, then answer."""
    import os
    import pty
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", *args, "--db", str(db)],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    try:
        seen = b""
        deadline = time.monotonic() + 30
        while b"Apply?" not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, seen
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                seen += os.read(proc.stdout.fileno(), 4096)

        async def lock_is_free() -> None:
            store = await SqliteStore.open(str(db), create=False)
            try:
                (record,) = await store.streams()
                await store.acquire(record.stream)  # raises if the question held it
                await store.release(record.stream)
            finally:
                await store.close()

        asyncio.run(lock_is_free())
        os.write(master, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=30)
        return subprocess.CompletedProcess(
            args, proc.returncode, (seen + out).decode(), err.decode()
        )
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()


def test_a_change_asks_on_a_terminal_defaults_to_no_and_holds_no_lock_meanwhile(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    db, _, first = consumed(stream, kinesalite, tmp_path)
    shard = first[0]["shard_id"]
    before = tables(db)
    declined = _ask(db, ["pause", shard], "")
    assert declined.returncode == 0 and "nothing changed" in declined.stdout, declined
    assert tables(db) == before
    accepted = _ask(db, ["pause", shard], "y")
    assert accepted.returncode == 0 and "the next start honours it" in accepted.stdout, accepted
    listing = json.loads(run_cli("checkpoints", "list", "--db", str(db), "--json").stdout)
    assert next(r for r in listing if r["shard"] == shard)["status"].endswith("paused")


def test_a_rewind_to_a_checkpoint_of_the_history_goes_back_to_its_position(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    db, _, first = consumed(stream, kinesalite, tmp_path)
    shard = first[0]["shard_id"]
    other = next(r["shard_id"] for r in first if r["shard_id"] != shard)

    def history(sid: str) -> list[dict]:
        return json.loads(run_cli("checkpoints", "history", sid, "--db", str(db), "--json").stdout)

    (start,) = [h for h in history(shard) if h["cause"] == "start"]
    assert run_cli("skip", shard, "--to", "latest", "--db", str(db), "--yes").returncode == 0
    back = run_cli(
        "rewind", shard, "--to", f"checkpoint:{start['entry']}", "--db", str(db), "--yes"
    )
    assert back.returncode == 0, back.stderr
    listing = json.loads(run_cli("checkpoints", "list", "--db", str(db), "--json").stdout)
    assert next(r for r in listing if r["shard"] == shard)["position"] == start["to"]
    foreign = run_cli(
        "rewind", other, "--to", f"checkpoint:{start['entry']}", "--db", str(db), "--yes"
    )
    assert foreign.returncode == 2 and "not a checkpoint of" in foreign.stderr


def test_info_lists_where_things_live(tmp_path: Path) -> None:
    result = run_cli("info", "--db", str(tmp_path / "x.db"))
    assert result.returncode == 0
    for word in ("config file", "database", "data folder", "logs", "themes", "shard-dark"):
        assert word in result.stdout


async def test_pending_commands_are_applied_before_any_worker_reads(demo_endpoint, db) -> None:
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 2)
    for i in range(10):
        demo_endpoint.call(demo_endpoint.kinesis.put, "s", f"k{i}", b"x")
    store = await SqliteStore.open(db)
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        first = Collect()
        async with Consumer(source, store, first, FAST) as consumer:
            await wait_for(lambda: len(first.seen) == 10)
        key = consumer.key
        # Written while no consumer runs and never applied (a crash after writing it).
        await store.add_command(
            key, "shardId-000000000000", "rewind", {"position": "trim_horizon"}, "ops@host"
        )
        await store.add_command(key, "shardId-000000000001", "pause", {}, "ops@host")
        second = Collect()
        consumer = Consumer(source, store, second, FAST)
        async with consumer:
            await wait_for(
                lambda: consumer.state.shards["shardId-000000000001"].status is ShardStatus.PAUSED
            )
            await wait_for(
                lambda: (
                    len(second.seen) == sum(1 for s, _ in first.seen if s == "shardId-000000000000")
                )
            )
            # Paused before any read: no worker ever started on shard 1.
            started = {e.shard_id for e in consumer.events.since(0) if e.kind == "shard_started"}
            assert started == {"shardId-000000000000"}
            assert {s for s, _ in second.seen} == {"shardId-000000000000"}
            assert await store.pending_commands(key) == []
            refused = await consumer.control(ControlRequest(Action.PAUSE, "shardId-000000000001"))
            assert not refused.ok
    await store.close()


def test_wait_is_ten_seconds_unless_told() -> None:
    from console.cli.commands import build_parser

    parser = build_parser()
    for args in (["pause", "s"], ["rewind", "s", "--to", "latest"], ["undo"]):
        assert parser.parse_args(args).wait == 10.0, args
    assert parser.parse_args(["pause", "s", "--wait", "2.5"]).wait == 2.5


def test_a_sequence_number_of_another_shard_is_refused_before_it_is_written(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    """Kinesis says whose a sequence number is only when it is read: asked before the rewind
    is written, or the next start would stop the shard."""
    db, _, first = consumed(stream, kinesalite, tmp_path)
    shard = first[0]["shard_id"]
    mine = next(r["sequence_number"] for r in first if r["shard_id"] == shard)
    theirs = next(r["sequence_number"] for r in first if r["shard_id"] != shard)
    before = tables(db)
    where = ("--db", str(db), "--endpoint-url", kinesalite)
    wrong = run_cli("rewind", shard, "--to", f"sequence:{theirs}", *where, "--yes")
    assert wrong.returncode == 2, wrong.stderr
    assert wrong.stderr.startswith(f"shard-console: error: sequence number {theirs} is not one ")
    assert len(wrong.stderr.strip().splitlines()) == 1
    unreachable = run_cli(
        "rewind", shard, "--to", f"sequence:{mine}", "--db", str(db), "--endpoint-url",
        "http://127.0.0.1:9", "--yes",
    )  # fmt: skip
    assert unreachable.returncode == 2 and "could not check sequence number" in unreachable.stderr
    assert tables(db)[0] == before[0]  # no checkpoint moved
    right = run_cli("rewind", shard, "--to", f"sequence:{mine}", *where, "--yes")
    assert right.returncode == 0, right.stderr
    listing = json.loads(run_cli("checkpoints", "list", "--db", str(db), "--json").stdout)
    assert next(r for r in listing if r["shard"] == shard)["position"] == f"at_sequence:{mine}"


def test_a_dry_run_always_prints_what_it_would_do(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    """With a consumer running, a skip past the failing record is the consumer's to plan: the
    dry run says what it would ask, and changes nothing."""
    db, out = tmp_path / "c.db", tmp_path / "out.jsonl"
    proc = consumer_process(stream, kinesalite, db, out)
    try:
        first = wait_rows(out, 60)
        shard = first[0]["shard_id"]
        before = tables(db)[1:]  # history and commands (checkpoints move with the run)
        dry = run_cli("skip", shard, "--to", "next-record", "--db", str(db), "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.splitlines() == [
            f"skip {shard} past the record its processor fails on",
            "dry run: nothing changed",
        ]
        assert tables(db)[1:] == before
    finally:
        stop(proc)
