"""The database file: its schema and migrations, the checks made before it is used, and how
its rows read as values.

The file is ours only if its ``application_id`` says so. Before anything is written it is
inspected read-only (header, application id, schema version, ``quick_check``); a corrupt,
foreign or newer file is refused with one line and left exactly as it was. A new file is
created 0600 before SQLite sees it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from console.checkpoints.base import StoreError, StreamRecord
from console.model import HistoryEntry, Position

APPLICATION_ID = 0x53434F4E  # "SCON"
HEADER = b"SQLite format 3\x00"

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

# Version 3: the running consumer's snapshot (JSON), published at each flush, so a console in
# another process (``attach --db``) shows its live state.
_SCHEMA_V3 = """
CREATE TABLE snapshots (
    stream TEXT PRIMARY KEY,
    at REAL NOT NULL,
    doc TEXT NOT NULL
);
"""

# Version 4: records parked by ``--on-failure park`` (console.checkpoints.sqlite_parked), one
# row per record: parked again (a crash before the checkpoint moved past it), it stays one.
_SCHEMA_V4 = """
CREATE TABLE parked (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    sequence_number TEXT NOT NULL,
    sub_sequence_number INTEGER NOT NULL DEFAULT -1,
    partition_key TEXT NOT NULL,
    approximate_arrival REAL,
    data BLOB NOT NULL,
    error_type TEXT NOT NULL,
    error_message TEXT NOT NULL,
    traceback TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_failure REAL NOT NULL,
    last_failure REAL NOT NULL,
    worker_id TEXT,
    parked_at REAL NOT NULL,
    UNIQUE (stream, shard_id, sequence_number, sub_sequence_number)
);
"""

# MIGRATIONS[i] moves a database from schema version i to i + 1, in one transaction.
MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4)
SCHEMA_VERSION = len(MIGRATIONS)


def writable(path: str) -> bool:
    p = Path(path)
    return os.access(p, os.W_OK) and os.access(p.parent, os.W_OK)


def read_only_error(path: str) -> StoreError:
    return StoreError(
        f"database {path} is read-only: make it and its folder writable, or use another database"
    )


def explain(path: str, exc: sqlite3.Error) -> StoreError:
    """One line for what SQLite said, in the operator's terms."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StoreError(
            f"database {path} is locked by another process: wait for it, or use another database"
        )
    if "readonly" in text or "read-only" in text or (Path(path).exists() and not writable(path)):
        return read_only_error(path)
    if "unable to open" in text:
        return StoreError(
            f"cannot open database {path} ({text}): check the path, or use another database"
        )
    if "disk is full" in text or "disk I/O error" in text:
        # SQLITE_FULL, SQLITE_IOERR: the file is intact (the transaction was rolled back).
        return StoreError(
            f"cannot write database {path}: {text}; its checkpoints are intact: free space on "
            "its disk (or fix the disk), then start again"
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
            header = fh.read(len(HEADER))
    except PermissionError:
        raise StoreError(
            f"cannot read database {path}: permission denied; fix its permissions or use "
            "another database"
        ) from None
    if not header:
        return 0
    if header != HEADER:
        raise StoreError(
            f"{path} is not an SQLite database (corrupt or another kind of file): refusing to "
            "touch it; restore it or use another database"
        )
    try:
        conn = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise explain(path, exc) from None
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise explain(path, exc) from None
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


def create_private(path: str) -> None:
    """Create the database file with mode 0600 before SQLite sees it; SQLite then gives its
    -wal and -shm files the same mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def statements(script: str) -> list[str]:
    """Split a migration script into statements (ours hold no semicolons in literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]


STREAM_SELECT = (
    "SELECT stream, name, source, initial_position, created_at, retention_hours FROM streams"
)


def stream_row(r: Sequence[Any]) -> StreamRecord:
    return StreamRecord(r[0], r[1], r[2], Position.decode(r[3]), r[4], r[5])


HISTORY_SELECT = (
    "SELECT id, shard_id, at, cause, actor, old_position, new_position, old_status, "
    "new_status, command_id, note FROM history"
)


def history_row(r: Sequence[Any]) -> HistoryEntry:
    return HistoryEntry(
        id=r[0],
        shard_id=r[1],
        at=r[2],
        cause=r[3],
        actor=r[4],
        old_position=position_or_none(r[5]),
        new_position=position_or_none(r[6]),
        old_status=r[7],
        new_status=r[8],
        command_id=r[9],
        note=r[10],
    )


def position_or_none(text: str | None) -> Position | None:
    return Position.decode(text) if text else None


def encode_or_none(position: Position | None) -> str | None:
    return position.encode() if position is not None else None
