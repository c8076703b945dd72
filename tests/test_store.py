"""The SQLite store: a real file, refused when it is not ours, never touched when refused."""

import contextlib
import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from console.checkpoints.base import CheckpointChange, StoreError, StoreLockedError
from console.checkpoints.sqlite import SqliteStore
from console.checkpoints.sqlite_file import SCHEMA_VERSION, inspect_database
from console.checkpoints.sqlite_lock import lock_path
from console.model import Checkpoint, CheckpointStatus, HistoryEntry, Position, Shard
from tests.conftest import read_only


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


async def test_new_database_is_private_and_versioned(db: str) -> None:
    store = await SqliteStore.open(db)
    await store.close()
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA application_id").fetchone()[0] != 0
    conn.close()


async def test_checkpoints_history_and_shards_round_trip(store: SqliteStore) -> None:
    cp = Checkpoint("s1", Position.after_sequence("42", 1), arrival=123.0)
    done = Checkpoint("s0", Position.after_sequence("7"), CheckpointStatus.DONE, paused=True)
    entry = HistoryEntry("s0", "done", "engine", Position.after_sequence("7"), "done", note="end")
    await store.save("arn:s", [CheckpointChange(cp), CheckpointChange(done, entry)])
    loaded = await store.load("arn:s")
    assert loaded["s1"].position == cp.position and loaded["s1"].arrival == 123.0
    assert loaded["s0"].status is CheckpointStatus.DONE and loaded["s0"].paused
    assert await store.load("other") == {}
    [h] = await store.history("arn:s")
    assert (h.shard_id, h.cause, h.note, h.new_position) == ("s0", "done", "end", done.position)
    await store.save_shards("arn:s", [Shard("s2", parent_id="s0", starting_sequence_number="1")])
    await store.save_shards("arn:s", [Shard("s2", parent_id="s0", ending_sequence_number="9")])
    [shard] = await store.shards("arn:s")
    assert (shard.starting_sequence_number, shard.ending_sequence_number) == ("1", "9")


async def test_commands_are_durable_until_finished(store: SqliteStore) -> None:
    cid = await store.add_command("s", "shard-1", "pause", {}, "me@host")
    [pending] = await store.pending_commands("s")
    assert pending.id == cid and pending.action == "pause"
    await store.finish_command(cid, True, "paused")
    assert await store.pending_commands("s") == []


def test_a_file_that_is_not_sqlite_is_refused_untouched(db: str) -> None:
    Path(db).write_bytes(b"hello, I am a spreadsheet\n" * 100)
    before = digest(db)
    with pytest.raises(StoreError, match="not an SQLite database"):
        inspect_database(db)
    assert digest(db) == before


async def test_a_foreign_sqlite_database_is_refused_untouched(db: str) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    before = digest(db)
    with pytest.raises(StoreError, match=r"another application.*invoices"):
        await SqliteStore.open(db)
    assert digest(db) == before
    assert not Path(db + "-wal").exists()


async def test_a_corrupt_database_is_refused_untouched(db: str) -> None:
    store = await SqliteStore.open(db)
    await store.save(
        "s", [CheckpointChange(Checkpoint(f"s{i}", Position.trim_horizon())) for i in range(300)]
    )
    await store.close()
    data = bytearray(Path(db).read_bytes())
    page = 4096
    data[page * 2 : page * 3] = b"\xff" * page  # smash a b-tree page
    Path(db).write_bytes(bytes(data))
    before = digest(db)
    with pytest.raises(StoreError, match="corrupt"):
        await SqliteStore.open(db)
    assert digest(db) == before


async def test_a_newer_schema_is_refused(db: str) -> None:
    store = await SqliteStore.open(db)
    await store.close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this shard-console"):
        await SqliteStore.open(db)


async def test_a_read_only_database_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "c.db"
    store = await SqliteStore.open(str(db))
    await store.save("s", [CheckpointChange(Checkpoint("s0", Position.trim_horizon()))])
    await store.close()
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    before = digest(str(db))
    with read_only(db, folder):
        with pytest.raises(StoreError, match="read-only"):
            await SqliteStore.open(str(db))
        assert digest(str(db)) == before


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        inspect_database(str(tmp_path / "nope" / "c.db"))


async def test_one_consumer_per_stream_per_database(db: str) -> None:
    """A second process is refused while the first holds the stream; the lock dies with it."""
    store = await SqliteStore.open(db)
    await store.acquire("stream-a")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import asyncio, sys
            from console.checkpoints.sqlite import SqliteStore
            async def main():
                s = await SqliteStore.open({db!r})
                await s.acquire("stream-b")
                print("held", flush=True)
                await asyncio.sleep(60)
            asyncio.run(main())
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid}"):
            await store.acquire("stream-b")
        holder.kill()  # SIGKILL: no clean-up code runs
        holder.wait()
        await store.acquire("stream-b")  # the kernel released the lock
    finally:
        holder.kill()
        await store.close()
    assert stat.S_IMODE(os.stat(lock_path(db, "stream-a")).st_mode) == 0o600


async def test_a_cancelled_write_never_leaves_a_transaction_open(store: SqliteStore) -> None:
    """Cancel writers at every point of their transaction; the store stays usable and every
    write is either whole or absent."""
    import asyncio

    changes = [
        CheckpointChange(Checkpoint(f"s{i}", Position.after_sequence(str(i)))) for i in range(200)
    ]
    for round_ in range(30):
        task = asyncio.create_task(store.save("s", changes))
        for _ in range(round_ % 6):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.save("t", [CheckpointChange(Checkpoint("x", Position.trim_horizon()))])
    assert len(await store.load("s")) in (0, 200)


async def test_a_version_1_database_is_migrated_in_place(db: str) -> None:
    """Built the way version 1 built it, then opened by this version: data kept, schema moved."""
    from console.checkpoints.sqlite_file import APPLICATION_ID, MIGRATIONS, statements

    conn = sqlite3.connect(db)
    for statement in statements(MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO streams VALUES ('arn:s', 's', 'kinesis', 'trim_horizon', 1.0)")
    conn.execute(
        "INSERT INTO checkpoints VALUES ('arn:s', 'sh0', 'after_sequence:5', 'open', 0, NULL, 2.0)"
    )
    conn.commit()
    conn.close()
    store = await SqliteStore.open(db)
    try:
        [record] = await store.streams()
        assert record.name == "s" and record.retention_hours is None
        assert (await store.load("arn:s"))["sh0"].position == Position.after_sequence("5")
        # Version 3's snapshot table is there and works.
        assert await store.snapshot("arn:s") is None
        await store.publish("arn:s", {"version": 7})
        published = await store.snapshot("arn:s")
        assert published is not None and published[1] == {"version": 7}
        # Version 4's parked table too.
        assert await store.parked("arn:s") == []
    finally:
        await store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    conn.close()


def test_a_full_disk_is_said_as_such_not_as_a_corrupt_database(tmp_path: Path) -> None:
    import sqlite3

    from console.checkpoints.sqlite_file import explain

    db = str(tmp_path / "c.db")
    for message in ("database or disk is full", "disk I/O error"):
        text = str(explain(db, sqlite3.OperationalError(message)))
        assert "corrupt" not in text and "checkpoints are intact" in text, text
        assert "free space" in text
    assert "corrupt" in str(explain(db, sqlite3.DatabaseError("file is not a database")))
