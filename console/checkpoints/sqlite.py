"""Checkpoints in a local SQLite file: WAL, one writer, schema versioned by ``PRAGMA user_version``.

The file is ours only if its ``application_id`` says so. Before anything is written the file is
inspected read-only (header, application id, schema version, ``quick_check``); a corrupt,
foreign or newer file is refused with one line and left exactly as it was.

One consumer per stream per database: an exclusive ``flock`` on a small lock file next to the
database. The kernel drops it when the holder dies, even by SIGKILL, so a restart after a crash
never waits for a lease to time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import socket
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import aiosqlite

from console.checkpoints.base import (
    CheckpointChange,
    Command,
    Owner,
    StoreError,
    StoreLockedError,
    StreamRecord,
)
from console.identity import user_name
from console.model import Checkpoint, CheckpointStatus, HistoryEntry, Position, Shard
from console.tasks import run_to_end

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

APPLICATION_ID = 0x53434F4E  # "SCON"
_HEADER = b"SQLite format 3\x00"

_SCHEMA_V1 = """
CREATE TABLE streams (
    stream TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    initial_position TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE shards (
    stream TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    parent_id TEXT,
    adjacent_parent_id TEXT,
    starting_hash_key TEXT,
    ending_hash_key TEXT,
    starting_sequence_number TEXT,
    ending_sequence_number TEXT,
    first_seen REAL NOT NULL,
    PRIMARY KEY (stream, shard_id)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    stream TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    position TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'skipped')),
    paused INTEGER NOT NULL DEFAULT 0,
    arrival REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (stream, shard_id)
) WITHOUT ROWID;
CREATE TABLE history (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    at REAL NOT NULL,
    cause TEXT NOT NULL,
    actor TEXT NOT NULL,
    old_position TEXT,
    new_position TEXT,
    old_status TEXT,
    new_status TEXT,
    command_id INTEGER,
    note TEXT
);
CREATE INDEX history_by_shard ON history (stream, shard_id, id);
CREATE TABLE commands (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    shard_id TEXT,
    action TEXT NOT NULL,
    args TEXT NOT NULL DEFAULT '{}',
    actor TEXT NOT NULL,
    requested_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'applied', 'failed')),
    applied_at REAL,
    result TEXT
);
CREATE INDEX commands_by_state ON commands (stream, state, id);
CREATE TABLE owners (
    stream TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    user TEXT NOT NULL,
    started_at REAL NOT NULL
);
"""

# Version 2: the stream's retention, so offline commands can refuse a time before it.
_SCHEMA_V2 = """
ALTER TABLE streams ADD COLUMN retention_hours REAL;
"""

# MIGRATIONS[i] moves a database from schema version i to i + 1, in one transaction.
MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _SCHEMA_V2)
SCHEMA_VERSION = len(MIGRATIONS)


def lock_path(db_path: str, stream: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]", "_", stream)[:48]
    digest = hashlib.sha1(stream.encode(), usedforsecurity=False).hexdigest()[:8]
    return f"{db_path}.{slug}-{digest}.lock"


def _writable(path: str) -> bool:
    p = Path(path)
    return os.access(p, os.W_OK) and os.access(p.parent, os.W_OK)


def _read_only(path: str) -> StoreError:
    return StoreError(
        f"database {path} is read-only: make it and its folder writable, or use another database"
    )


def _explain(path: str, exc: sqlite3.Error) -> StoreError:
    """One line for what SQLite said, in the operator's terms."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreError(
            f"database {path} is locked by another process: wait for it, or use another database"
        )
    if "readonly" in text or "read-only" in text or (Path(path).exists() and not _writable(path)):
        return _read_only(path)
    if "unable to open" in text:
        return StoreError(
            f"cannot open database {path} ({text}): check the path, or use another database"
        )
    return StoreError(
        f"database {path} is corrupt ({text}): refusing to touch it; restore it from a backup "
        "or use another database"
    )


def inspect_database(path: str) -> int | None:
    """Check a database file without writing to it.

    Returns its schema version (0 for a file that is empty or an empty SQLite database), or None
    when there is no file. Raises StoreError when the file must not be used."""
    p = Path(path)
    if not p.exists():
        if not p.parent.exists():
            raise StoreError(f"cannot create database {path}: folder {p.parent} does not exist")
        return None
    if not p.is_file():
        raise StoreError(f"database path {path} is not a file: use another database")
    try:
        with p.open("rb") as fh:
            header = fh.read(len(_HEADER))
    except PermissionError:
        raise StoreError(
            f"cannot read database {path}: permission denied; fix its permissions or use "
            "another database"
        ) from None
    if not header:
        return 0
    if header != _HEADER:
        raise StoreError(
            f"{path} is not an SQLite database (corrupt or another kind of file): refusing to "
            "touch it; restore it or use another database"
        )
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise _explain(path, exc) from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise _explain(path, exc) from None
    finally:
        conn.close()
    if app_id != APPLICATION_ID:
        if app_id == 0 and not tables:
            return 0
        shown = ", ".join(tables[:4]) or "none"
        raise StoreError(
            f"{path} belongs to another application (application_id {app_id}, tables: {shown}): "
            "refusing to touch it; use another database"
        )
    if check != "ok":
        raise StoreError(
            f"database {path} is corrupt (quick_check: {check}): refusing to touch it; restore it "
            "from a backup or use another database"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database {path} has schema version {version}, newer than this shard-console "
            f"understands ({SCHEMA_VERSION}): upgrade shard-console"
        )
    return int(version)


def _create_private(path: str) -> None:
    """Create the database file with mode 0600 before SQLite sees it; SQLite then gives its
    -wal and -shm files the same mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


_STREAM_SELECT = (
    "SELECT stream, name, source, initial_position, created_at, retention_hours FROM streams"
)


def _stream_row(r: Sequence[Any]) -> StreamRecord:
    return StreamRecord(r[0], r[1], r[2], Position.decode(r[3]), r[4], r[5])


_HISTORY_SELECT = (
    "SELECT id, shard_id, at, cause, actor, old_position, new_position, old_status, "
    "new_status, command_id, note FROM history"
)


def _history_row(r: Sequence[Any]) -> HistoryEntry:
    return HistoryEntry(
        id=r[0],
        shard_id=r[1],
        at=r[2],
        cause=r[3],
        actor=r[4],
        old_position=_position(r[5]),
        new_position=_position(r[6]),
        old_status=r[7],
        new_status=r[8],
        command_id=r[9],
        note=r[10],
    )


def _position(text: str | None) -> Position | None:
    return Position.decode(text) if text else None


def _encode(position: Position | None) -> str | None:
    return position.encode() if position is not None else None


def _atomic(method: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Run a writing method to its end even if its caller is cancelled meanwhile.

    aiosqlite runs each statement on its own thread; cancelling the coroutine between BEGIN
    and COMMIT (a loop stopped at shutdown, a worker group cancelled by the UI) would leave the
    shared connection inside an open transaction. Shielded, the transaction commits or rolls
    back whatever happens to the caller."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return await run_to_end(method(*args, **kwargs))

    return wrapper


class SqliteStore:
    """Use :meth:`open`; one instance per process and database."""

    def __init__(self, path: str, conn: aiosqlite.Connection) -> None:
        self.path = path
        self._conn = conn
        self._locks: dict[str, int] = {}
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
                _create_private(path)
            except FileExistsError:
                pass
            except OSError as exc:
                raise StoreError(f"cannot create database {path}: {exc.strerror}") from None
        elif not _writable(path):
            # Checked before SQLite is asked: it would open such a file and fail at the first
            # write, halfway into a run.
            raise _read_only(path)
        try:
            conn = await aiosqlite.connect(path, timeout=10, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        store = cls(path, conn)
        try:
            await store._prepare()
        except sqlite3.DatabaseError as exc:
            await conn.close()
            raise _explain(path, exc) from None
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
                    for statement in _statements(MIGRATIONS[step]):
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
        cur = await self._conn.execute(f"{_STREAM_SELECT} WHERE stream = ?", (stream,))
        row = await cur.fetchone()
        return _stream_row(row) if row is not None else None

    @_atomic
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
        cur = await self._conn.execute(f"{_STREAM_SELECT} ORDER BY name, stream")
        return [_stream_row(r) for r in await cur.fetchall()]

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

    @_atomic
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
                    _encode(h.old_position),
                    _encode(h.new_position),
                    h.old_status,
                    h.new_status,
                    h.command_id,
                    h.note,
                )
                for h in entries
            ],
        )

    @_atomic
    async def add_history(self, stream: str, entries: Sequence[HistoryEntry]) -> None:
        """History rows without a checkpoint change (events such as data lost to retention)."""
        if entries:
            async with self._transaction() as conn:
                await self._insert_history(conn, stream, entries, time.time())

    async def history(
        self, stream: str, shard_id: str | None = None, limit: int = 100
    ) -> list[HistoryEntry]:
        sql = f"{_HISTORY_SELECT} WHERE stream = ?"
        args: list[Any] = [stream]
        if shard_id is not None:
            sql += " AND shard_id = ?"
            args.append(shard_id)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        cur = await self._conn.execute(sql, args)
        return [_history_row(r) for r in await cur.fetchall()]

    async def history_entry(self, stream: str, entry_id: int) -> HistoryEntry | None:
        cur = await self._conn.execute(
            f"{_HISTORY_SELECT} WHERE stream = ? AND id = ?", (stream, entry_id)
        )
        r = await cur.fetchone()
        return _history_row(r) if r else None

    async def history_for_command(self, stream: str, command_id: int) -> list[HistoryEntry]:
        """The rows one operator change wrote (a rewind may reset several shards)."""
        cur = await self._conn.execute(
            f"{_HISTORY_SELECT} WHERE stream = ? AND command_id = ? ORDER BY id",
            (stream, command_id),
        )
        return [_history_row(r) for r in await cur.fetchall()]

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

    @_atomic
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

    @_atomic
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

    @_atomic
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
        if stream in self._locks:
            raise StoreLockedError(
                f"stream '{stream}' in {self.path} is already being consumed by this process"
            )
        path = lock_path(self.path, stream)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = await self.owner(stream)
            who = holder.describe() if holder else "another process"
            raise StoreLockedError(
                f"stream '{stream}' in {self.path} is being consumed by {who}: stop that "
                "consumer first, or use another database"
            ) from None
        self._locks[stream] = fd
        try:
            await self._record_owner(stream)
        except BaseException as exc:
            # Locked by another process past busy_timeout, say, or the caller cancelled: an
            # acquire either holds the stream or holds nothing.
            self._locks.pop(stream, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            if isinstance(exc, sqlite3.Error):
                raise _explain(self.path, exc) from None
            # Cancelled: the owner row is still being written; take it back after it.
            cleanup = asyncio.ensure_future(self._forget_owner(stream))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            raise

    @_atomic
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
        return stream in self._locks

    def may_read(self, stream: str, shard_id: str) -> bool:
        """One process reads the whole stream: every shard, while it holds the lock."""
        return stream in self._locks

    async def release(self, stream: str) -> None:
        fd = self._locks.pop(stream, None)
        if fd is None:
            return
        try:
            await self._forget_owner(stream)
        except sqlite3.Error as exc:
            # The flock below is what excludes; a stale owner row is only a name to show,
            # replaced by the next owner. Never let it mask why we are closing.
            log.warning("could not clear the owner of %s in %s: %s", stream, self.path, exc)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @_atomic
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
            for stream in list(self._locks):
                await self.release(stream)
            await asyncio.gather(*self._cleanups, return_exceptions=True)
        finally:
            await self._conn.close()


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (ours hold no semicolons in literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]
