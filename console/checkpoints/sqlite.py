"""Checkpoints in a local SQLite file: WAL, one writer, schema versioned by ``PRAGMA user_version``.

The file's schema, migrations and the checks before it is used are in sqlite_file.py; who may
read a stream (one process, by a lock file) in sqlite_lock.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import aiosqlite

from console.checkpoints.base import (
    CheckpointChange,
    Command,
    Owner,
    StoreError,
    StoreLockedError,
    StreamRecord,
)
from console.checkpoints.sqlite_file import (
    APPLICATION_ID,
    HISTORY_SELECT,
    MIGRATIONS,
    SCHEMA_VERSION,
    STREAM_SELECT,
    create_private,
    encode_or_none,
    explain,
    history_row,
    inspect_database,
    read_only_error,
    statements,
    stream_row,
    writable,
)
from console.checkpoints.sqlite_lock import LockFiles
from console.checkpoints.sqlite_parked import ParkedRows
from console.identity import user_name
from console.model import Checkpoint, CheckpointStatus, HistoryEntry, Position, Shard
from console.tasks import runs_to_end

log = logging.getLogger(__name__)


class SqliteStore(ParkedRows):
    """Use :meth:`open`; one instance per process and database."""

    def __init__(self, path: str, conn: aiosqlite.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock_files = LockFiles(path)
        self._closed = False
        # One connection serves every coroutine: transactions must not interleave on it.
        self._tx_lock = asyncio.Lock()
        self._cleanups: set[asyncio.Future[None]] = set()

    @classmethod
    async def open(cls, path: str, *, create: bool = True) -> SqliteStore:
        version = inspect_database(path)
        if version is None:
            if not create:
                raise StoreError(f"no database at {path}")
            try:
                create_private(path)
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(f"cannot create database {path}: {exc.strerror}") from None
        elif not writable(path):
            # Checked before SQLite is asked: it would open such a file and fail at the first
            # write, halfway into a run.
            raise read_only_error(path)
        try:
            conn = await aiosqlite.connect(path, timeout=10, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        store = cls(path, conn)
        try:
            await store._prepare()
        except sqlite3.DatabaseError as exc:
            await conn.close()
            raise explain(path, exc) from None
        except BaseException:
            await conn.close()
            raise
        return store

    async def _prepare(self) -> None:
        conn = self._conn
        await conn.execute("PRAGMA busy_timeout = 10000")
        version = (await (await conn.execute("PRAGMA user_version")).fetchone() or (0,))[0]
        if version < SCHEMA_VERSION:
            # The journal mode is changed outside a transaction; it is persistent.
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for step in range(version, SCHEMA_VERSION):
                    for statement in statements(MIGRATIONS[step]):
                        await conn.execute(statement)
                await conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                await conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
        else:
            await conn.execute("PRAGMA journal_mode = WAL")
        # WAL + NORMAL: a committed transaction survives the process being killed; only a power
        # cut can lose the last few, which at-least-once then replays.
        await conn.execute("PRAGMA synchronous = NORMAL")

    # -- transactions -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _transaction(self) -> Any:
        """BEGIN IMMEDIATE ... COMMIT, one at a time. Every method that uses it is
        :func:`_atomic`, so a cancelled caller never leaves a transaction open half-way."""
        async with self._tx_lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    # -- streams ----------------------------------------------------------------------------

    async def stream_record(self, stream: str) -> StreamRecord | None:
        cur = await self._conn.execute(f"{STREAM_SELECT} WHERE stream = ?", (stream,))
        row = await cur.fetchone()
        return stream_row(row) if row is not None else None

    @runs_to_end
    async def register_stream(self, record: StreamRecord) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO streams (stream, name, source, initial_position, created_at, "
                "retention_hours) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (stream) DO UPDATE SET "
                "retention_hours = excluded.retention_hours",
                (
                    record.stream,
                    record.name,
                    record.source,
                    record.initial_position.encode(),
                    record.created_at,
                    record.retention_hours,
                ),
            )

    async def streams(self) -> list[StreamRecord]:
        cur = await self._conn.execute(f"{STREAM_SELECT} ORDER BY name, stream")
        return [stream_row(r) for r in await cur.fetchall()]

    # -- the running consumer's snapshot ------------------------------------------------------

    @runs_to_end
    async def publish(self, stream: str, doc: Mapping[str, Any]) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO snapshots (stream, at, doc) VALUES (?, ?, ?) ON CONFLICT (stream) "
                "DO UPDATE SET at = excluded.at, doc = excluded.doc",
                (stream, time.time(), json.dumps(doc, separators=(",", ":"))),
            )

    async def snapshot(self, stream: str) -> tuple[float, dict[str, Any]] | None:
        cur = await self._conn.execute("SELECT at, doc FROM snapshots WHERE stream = ?", (stream,))
        row = await cur.fetchone()
        return (float(row[0]), json.loads(row[1])) if row is not None else None

    # -- checkpoints ------------------------------------------------------------------------

    async def load(self, stream: str) -> dict[str, Checkpoint]:
        cur = await self._conn.execute(
            "SELECT shard_id, position, status, paused, arrival, updated_at FROM checkpoints "
            "WHERE stream = ?",
            (stream,),
        )
        return {
            r[0]: Checkpoint(
                shard_id=r[0],
                position=Position.decode(r[1]),
                status=CheckpointStatus(r[2]),
                paused=bool(r[3]),
                arrival=r[4],
                updated_at=r[5],
            )
            for r in await cur.fetchall()
        }

    @runs_to_end
    async def save(
        self,
        stream: str,
        changes: Sequence[CheckpointChange],
        finish: tuple[int, str] | None = None,
    ) -> None:
        """All changes in one transaction: the store moves between consistent states.

        ``finish`` marks an operator command applied in the same transaction, so a command
        is either applied and recorded, or neither: a crash cannot apply it twice."""
        if not changes and finish is None:
            return
        now = time.time()
        rows = [
            (
                stream,
                c.checkpoint.shard_id,
                c.checkpoint.position.encode(),
                c.checkpoint.status.value,
                int(c.checkpoint.paused),
                c.checkpoint.arrival,
                c.checkpoint.updated_at or now,
            )
            for c in changes
        ]
        history = [c.history for c in changes if c.history is not None]
        async with self._transaction() as conn:
            await conn.executemany(
                "INSERT INTO checkpoints (stream, shard_id, position, status, paused, arrival, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (stream, shard_id) DO UPDATE SET position = excluded.position, "
                "status = excluded.status, paused = excluded.paused, arrival = excluded.arrival, "
                "updated_at = excluded.updated_at",
                rows,
            )
            if history:
                await self._insert_history(conn, stream, history, now)
            if finish is not None:
                await conn.execute(
                    "UPDATE commands SET state = 'applied', applied_at = ?, result = ? "
                    "WHERE id = ?",
                    (now, finish[1], finish[0]),
                )

    async def _insert_history(
        self,
        conn: aiosqlite.Connection,
        stream: str,
        entries: Iterable[HistoryEntry],
        now: float,
    ) -> None:
        await conn.executemany(
            "INSERT INTO history (stream, shard_id, at, cause, actor, old_position, new_position, "
            "old_status, new_status, command_id, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    stream,
                    h.shard_id,
                    h.at or now,
                    h.cause,
                    h.actor,
                    encode_or_none(h.old_position),
                    encode_or_none(h.new_position),
                    h.old_status,
                    h.new_status,
                    h.command_id,
                    h.note,
                )
                for h in entries
            ],
        )

    @runs_to_end
    async def add_history(self, stream: str, entries: Sequence[HistoryEntry]) -> None:
        """History rows without a checkpoint change (events such as data lost to retention)."""
        if entries:
            async with self._transaction() as conn:
                await self._insert_history(conn, stream, entries, time.time())

    async def history(
        self, stream: str, shard_id: str | None = None, limit: int = 100
    ) -> list[HistoryEntry]:
        sql = f"{HISTORY_SELECT} WHERE stream = ?"
        args: list[Any] = [stream]
        if shard_id is not None:
            sql += " AND shard_id = ?"
            args.append(shard_id)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        cur = await self._conn.execute(sql, args)
        return [history_row(r) for r in await cur.fetchall()]

    async def history_entry(self, stream: str, entry_id: int) -> HistoryEntry | None:
        cur = await self._conn.execute(
            f"{HISTORY_SELECT} WHERE stream = ? AND id = ?", (stream, entry_id)
        )
        r = await cur.fetchone()
        return history_row(r) if r else None

    async def history_for_command(self, stream: str, command_id: int) -> list[HistoryEntry]:
        """The rows one operator change wrote (a rewind may reset several shards)."""
        cur = await self._conn.execute(
            f"{HISTORY_SELECT} WHERE stream = ? AND command_id = ? ORDER BY id",
            (stream, command_id),
        )
        return [history_row(r) for r in await cur.fetchall()]

    async def last_change_id(self, stream: str, before: int | None = None) -> int | None:
        """The newest applied operator command that changed something."""
        sql = (
            "SELECT c.id FROM commands c WHERE c.stream = ? AND c.state = 'applied' "
            "AND EXISTS (SELECT 1 FROM history h WHERE h.command_id = c.id)"
        )
        args: list[Any] = [stream]
        if before is not None:
            sql += " AND c.id < ?"
            args.append(before)
        cur = await self._conn.execute(sql + " ORDER BY c.id DESC LIMIT 1", args)
        row = await cur.fetchone()
        return int(row[0]) if row else None

    # -- shards -----------------------------------------------------------------------------

    @runs_to_end
    async def save_shards(self, stream: str, shards: Sequence[Shard]) -> None:
        """Remember the shard map so offline commands can check lineage and ranges."""
        if not shards:
            return
        now = time.time()
        async with self._transaction() as conn:
            await conn.executemany(
                "INSERT INTO shards (stream, shard_id, parent_id, adjacent_parent_id, "
                "starting_hash_key, ending_hash_key, starting_sequence_number, "
                "ending_sequence_number, first_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (stream, shard_id) DO UPDATE SET "
                "starting_sequence_number = COALESCE(excluded.starting_sequence_number, "
                "starting_sequence_number), "
                "ending_sequence_number = COALESCE(excluded.ending_sequence_number, "
                "ending_sequence_number)",
                [
                    (
                        stream,
                        s.shard_id,
                        s.parent_id,
                        s.adjacent_parent_id,
                        s.starting_hash_key,
                        s.ending_hash_key,
                        s.starting_sequence_number,
                        s.ending_sequence_number,
                        now,
                    )
                    for s in shards
                ],
            )

    async def shards(self, stream: str) -> list[Shard]:
        cur = await self._conn.execute(
            "SELECT shard_id, parent_id, adjacent_parent_id, starting_hash_key, ending_hash_key, "
            "starting_sequence_number, ending_sequence_number FROM shards WHERE stream = ? "
            "ORDER BY shard_id",
            (stream,),
        )
        return [Shard(*r) for r in await cur.fetchall()]

    # -- commands ---------------------------------------------------------------------------

    @runs_to_end
    async def add_command(
        self, stream: str, shard_id: str | None, action: str, args: dict[str, Any], actor: str
    ) -> int:
        async with self._transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO commands (stream, shard_id, action, args, actor, requested_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (stream, shard_id, action, json.dumps(args), actor, time.time()),
            )
            return int(cur.lastrowid or 0)

    async def command(self, command_id: int) -> Command | None:
        cur = await self._conn.execute(
            "SELECT id, stream, shard_id, action, args, actor, requested_at, state, result "
            "FROM commands WHERE id = ?",
            (command_id,),
        )
        r = await cur.fetchone()
        return (
            Command(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8]) if r else None
        )

    async def pending_commands(self, stream: str) -> list[Command]:
        cur = await self._conn.execute(
            "SELECT id, stream, shard_id, action, args, actor, requested_at, state, result "
            "FROM commands WHERE stream = ? AND state = 'pending' ORDER BY id",
            (stream,),
        )
        return [
            Command(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8])
            for r in await cur.fetchall()
        ]

    @runs_to_end
    async def finish_command(self, command_id: int, ok: bool, result: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE commands SET state = ?, applied_at = ?, result = ? WHERE id = ?",
                ("applied" if ok else "failed", time.time(), result, command_id),
            )

    # -- ownership --------------------------------------------------------------------------

    async def acquire(self, stream: str) -> None:
        """Take the stream for this process, or raise StoreLockedError naming the holder.
        The CLI takes it too, for the moment it applies a command with no consumer running."""
        if self._lock_files.holds(stream):
            raise StoreLockedError(
                f"stream '{stream}' in {self.path} is already being consumed by this process"
            )
        if not self._lock_files.take(stream):
            holder = await self.owner(stream)
            who = holder.describe() if holder else "another process"
            raise StoreLockedError(
                f"stream '{stream}' in {self.path} is being consumed by {who}: stop that "
                "consumer first, or use another database"
            )
        try:
            await self._record_owner(stream)
        except BaseException as exc:
            # Locked by another process past busy_timeout, say, or the caller cancelled: an
            # acquire either holds the stream or holds nothing.
            self._lock_files.give_back(stream)
            if isinstance(exc, sqlite3.Error):
                raise explain(self.path, exc) from None
            # Cancelled: the owner row is still being written; take it back after it.
            cleanup = asyncio.ensure_future(self._forget_owner(stream))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            raise

    @runs_to_end
    async def _record_owner(self, stream: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT OR REPLACE INTO owners (stream, pid, host, user, started_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (stream, os.getpid(), socket.gethostname(), user_name(), time.time()),
            )

    async def owner(self, stream: str) -> Owner | None:
        cur = await self._conn.execute(
            "SELECT pid, host, user, started_at FROM owners WHERE stream = ?", (stream,)
        )
        row = await cur.fetchone()
        return Owner(*row) if row else None

    def holds(self, stream: str) -> bool:
        return self._lock_files.holds(stream)

    async def release(self, stream: str) -> None:
        if not self._lock_files.holds(stream):
            return
        try:
            await self._forget_owner(stream)
        except sqlite3.Error as exc:
            # The flock below is what excludes; a stale owner row is only a name to show,
            # replaced by the next owner. Never let it mask why we are closing.
            log.warning("could not clear the owner of %s in %s: %s", stream, self.path, exc)
        finally:
            self._lock_files.give_back(stream)

    @runs_to_end
    async def _forget_owner(self, stream: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "DELETE FROM owners WHERE stream = ? AND pid = ?", (stream, os.getpid())
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for stream in self._lock_files.held():
                await self.release(stream)
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        finally:
            await self._conn.close()
