"""Parked records in the SQLite file (schema version 4's ``parked`` table): written before the
checkpoint moves past them, listed, and removed once redriven or dropped."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import aiosqlite

from console.model import HistoryEntry, ParkedRecord
from console.tasks import runs_to_end

_COLUMNS = (
    "stream, shard_id, sequence_number, sub_sequence_number, partition_key, "
    "approximate_arrival, data, error_type, error_message, traceback, attempts, "
    "first_failure, last_failure, worker_id, parked_at"
)
SELECT = f"SELECT id, {_COLUMNS} FROM parked"
# Parked again (the worker died before its checkpoint moved past the record, or a dead-letter
# write failed and the whole park is tried again): one row still, its last failure brought up
# to date.
INSERT = (
    f"INSERT INTO parked ({_COLUMNS}) VALUES ({', '.join('?' * 15)}) "
    "ON CONFLICT (stream, shard_id, sequence_number, sub_sequence_number) DO UPDATE SET "
    "attempts = max(parked.attempts, excluded.attempts), last_failure = excluded.last_failure, "
    "error_type = excluded.error_type, error_message = excluded.error_message, "
    "traceback = excluded.traceback"
)


def row_of(p: ParkedRecord) -> tuple[Any, ...]:
    sub = -1 if p.sub_sequence_number is None else p.sub_sequence_number
    return (
        p.stream, p.shard_id, p.sequence_number, sub, p.partition_key, p.approximate_arrival,
        p.data, p.error_type, p.error_message, p.traceback, p.attempts, p.first_failure,
        p.last_failure, p.worker_id, p.parked_at,
    )  # fmt: skip


def parked_of(r: Sequence[Any]) -> ParkedRecord:
    return ParkedRecord(
        id=r[0], stream=r[1], shard_id=r[2], sequence_number=r[3],
        sub_sequence_number=None if r[4] < 0 else r[4], partition_key=r[5],
        approximate_arrival=r[6], data=bytes(r[7]), error_type=r[8], error_message=r[9],
        traceback=r[10], attempts=r[11], first_failure=r[12], last_failure=r[13],
        worker_id=r[14], parked_at=r[15],
    )  # fmt: skip


def query(stream: str, shard_id: str | None, ids: Sequence[int] | None) -> tuple[str, list[Any]]:
    """The SELECT of a stream's parked records (one shard's; those ``ids``), oldest first."""
    sql = f"{SELECT} WHERE stream = ?"
    args: list[Any] = [stream]
    if shard_id is not None:
        sql += " AND shard_id = ?"
        args.append(shard_id)
    if ids is not None:
        sql += f" AND id IN ({', '.join('?' * len(ids))})"
        args.extend(ids)
    return sql + " ORDER BY id", args


class ParkedRows:
    """The parked records' methods of :class:`~console.checkpoints.sqlite.SqliteStore`, which
    gives them its connection, its transactions and its history rows."""

    _conn: aiosqlite.Connection

    if TYPE_CHECKING:  # SqliteStore's own, declared for the type checker only

        def _transaction(self) -> contextlib.AbstractAsyncContextManager[aiosqlite.Connection]: ...

        async def _insert_history(
            self,
            conn: aiosqlite.Connection,
            stream: str,
            entries: Iterable[HistoryEntry],
            now: float,
        ) -> None: ...

    @runs_to_end
    async def park(self, records: Sequence[ParkedRecord]) -> None:
        """Committed before the checkpoint moves past them."""
        if records:
            async with self._transaction() as conn:
                await conn.executemany(INSERT, [row_of(p) for p in records])

    async def parked(
        self, stream: str, shard_id: str | None = None, ids: Sequence[int] | None = None
    ) -> list[ParkedRecord]:
        cur = await self._conn.execute(*query(stream, shard_id, ids))
        return [parked_of(r) for r in await cur.fetchall()]

    @runs_to_end
    async def unpark(self, stream: str, ids: Sequence[int], entries: Sequence[HistoryEntry]) -> int:
        """Parked records removed (redriven or dropped), with their history, in one
        transaction. How many were still there."""
        async with self._transaction() as conn:
            marks = ", ".join("?" * len(ids))
            cur = await conn.execute(
                f"DELETE FROM parked WHERE stream = ? AND id IN ({marks})", (stream, *ids)
            )
            await self._insert_history(conn, stream, entries, time.time())
            return int(cur.rowcount or 0)
