"""SIGINT and SIGTERM on the real program, from its first moments to its last batch.

A proxy holds one call so the signal lands while the program waits on it: describing the stream
(nothing opened yet), or listing shards (the database open, the stream's lock held).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from console.checkpoints.sqlite import SqliteStore
from tests.conftest import Kinesis, numbered, unique
from tests.proxy import HOLD, proxy


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    import os

    return subprocess.Popen(
        [sys.executable, "-m", "console", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_until(predicate: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def stream(kinesalite: str) -> str:
    name = unique("sig")
    asyncio.run(Kinesis(kinesalite).create(name, 2))
    asyncio.run(Kinesis(kinesalite).put(name, numbered(20)))
    return name


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_stream_is_described_stops_cleanly_and_writes_nothing(
    kinesalite: str, stream: str, tmp_path: Path, sig: signal.Signals
) -> None:
    db = tmp_path / "c.db"

    def hold_describe(operation: str, body: dict, headers: dict) -> str | None:
        return HOLD if operation == "DescribeStreamSummary" else None

    with proxy(kinesalite, hold_describe) as p:
        proc = start("run", stream, "--endpoint-url", p.url, "--db", str(db), "--no-ui")
        wait_until(lambda: "DescribeStreamSummary" in p.seen, "the describe call")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"{sig.name} during start-up: stopped before reading anything" in err
    assert "Traceback" not in err
    assert not db.exists()


def test_a_signal_while_shards_are_listed_releases_the_stream_and_the_database(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    db = tmp_path / "c.db"

    def hold_listing(operation: str, body: dict, headers: dict) -> str | None:
        return HOLD if operation == "ListShards" else None

    with proxy(kinesalite, hold_listing) as p:
        proc = start("run", stream, "--endpoint-url", p.url, "--db", str(db), "--no-ui")
        wait_until(lambda: "ListShards" in p.seen, "the shard listing")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "SIGTERM: stopping" in err and "Traceback" not in err
    assert "consuming" not in err  # it never started reading
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM owners").fetchone()[0] == 0
    conn.close()

    async def lock_is_free() -> None:
        store = await SqliteStore.open(str(db))
        try:
            arn = f"arn:aws:kinesis:us-east-1:000000000000:stream/{stream}"
            await store.acquire(arn)
        finally:
            await store.close()

    asyncio.run(lock_is_free())


def test_sigint_while_running_finishes_flushes_and_exits_0(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    import os

    db, out = tmp_path / "c.db", tmp_path / "out.txt"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "console", "run", stream, "--endpoint-url", kinesalite,
                "--db", str(db), "--no-ui", "--processor", "print", "--flush-interval", "3600",
            ],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
        )  # fmt: skip
        wait_until(lambda: len(out.read_text().splitlines()) == 20, "20 records printed")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "SIGINT: stopping" in err
    last = {}
    for line in out.read_text().splitlines():
        shard_id, seq = line.split()[:2]
        last[shard_id] = seq
    saved = dict(sqlite3.connect(db).execute("SELECT shard_id, position FROM checkpoints"))
    # The flush interval is an hour: only the graceful stop can have written these.
    assert {sid: f"after_sequence:{seq}" for sid, seq in last.items()} == {
        sid: saved[sid] for sid in last
    }


def test_a_second_signal_exits_at_once_while_a_batch_is_in_hand(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    import os

    entered = tmp_path / "entered"
    (tmp_path / "stuck_proc.py").write_text(
        "import asyncio, pathlib\n"
        f"MARK = pathlib.Path({str(entered)!r})\n"
        "async def handle(records, ctx):\n"
        "    MARK.touch()\n"
        "    await asyncio.sleep(3600)\n"
    )
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "console", "run", stream, "--endpoint-url", kinesalite,
                "--db", str(tmp_path / "c.db"), "--no-ui", "--processor", "stuck_proc:handle",
                "--processor-timeout", "0",
            ],
            stderr=err,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
        )  # fmt: skip
        try:
            wait_until(entered.exists, "the processor to hold a batch")
            proc.send_signal(signal.SIGINT)
            wait_until(lambda: "SIGINT: stopping" in log.read_text(), "the graceful stop")
            # It waits for the batch in hand, which never returns...
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
            proc.wait(10)  # ...the second signal does not wait
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert proc.returncode == 130, text
    assert "second SIGINT: exiting now; checkpoints hold the last flush" in text


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_before_the_event_loop_runs_ends_the_command_cleanly(
    kinesalite: str, stream: str, tmp_path: Path, sig: signal.Signals
) -> None:
    """The command is still importing the processor (nothing open yet): exit 0, one line."""
    entered = tmp_path / "importing"
    (tmp_path / "slow_import.py").write_text(
        "import pathlib, time\n"
        f"pathlib.Path({str(entered)!r}).touch()\n"
        "time.sleep(30)\n"
        "def handle(records, ctx):\n"
        "    pass\n"
    )
    db = tmp_path / "c.db"
    proc = start(
        "run", stream, "--endpoint-url", kinesalite, "--db", str(db), "--no-ui",
        "--processor", "slow_import:handle",
        env={"PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    wait_until(entered.exists, "the processor's import")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert (
        err.strip() == f"shard-console: {sig.name} during start-up: stopped before reading anything"
    )
    assert not db.exists()
