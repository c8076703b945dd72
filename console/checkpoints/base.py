"""The store protocol and the values that cross it.

A store keeps a stream's checkpoints, the history of every change and the operator commands:
SQLite (one process holds a stream whole, by a lock: :class:`Lockable`), or a KCL lease table
(console.checkpoints.leases). Stores are passive: the engine's ownership strategy decides who
reads which shard and when progress is written (console.engine.ownership).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from console.errors import Error
from console.model import Checkpoint, HistoryEntry, ParkedRecord, Position, Shard


class StoreError(Error):
    """The store cannot be used: corrupt, foreign, newer, read-only, or unreadable.
    Raised before anything is written."""


class StoreLockedError(StoreError):
    """Another live consumer holds this stream in this store."""


@dataclass(frozen=True, slots=True)
class CheckpointChange:
    """A checkpoint to write, and the history row that explains it (None for routine progress
    that the store does not need to remember)."""

    checkpoint: Checkpoint
    history: HistoryEntry | None = None


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """A stream this database has checkpoints for. ``stream`` is the key: the stream's ARN when
    the service gives one (two streams of one name in two regions never share checkpoints),
    else its name."""

    stream: str
    name: str
    source: str
    initial_position: Position
    created_at: float
    retention_hours: float | None = None


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a stream: shown when a second consumer is refused."""

    pid: int
    host: str
    user: str
    started_at: float

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (user {self.user})"

    def alive(self) -> bool:
        """Whether its process still runs: known on this host; another host's is taken to."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # another user's process: it runs
        return True


@dataclass(frozen=True, slots=True)
class Command:
    """An operator request, durable in the store until a consumer applies it."""

    id: int
    stream: str
    shard_id: str | None
    action: str
    args: dict[str, Any]
    actor: str
    requested_at: float
    state: str = "pending"
    result: str | None = None


@runtime_checkable
class Lockable(Protocol):
    """A store one process holds a stream of whole (SQLite): a lock the kernel drops when the
    holder dies. The consumer holds it while it runs; a change made with no consumer running
    holds it while it is written."""

    async def acquire(self, stream: str) -> None:
        """Take the stream. Raises StoreLockedError naming the holder when another holds it."""
        ...

    async def release(self, stream: str) -> None:
        """Give the stream back. Idempotent."""
        ...

    def holds(self, stream: str) -> bool: ...

    async def owner(self, stream: str) -> Owner | None:
        """Who took the stream last (a crashed holder leaves its row: see Owner.alive)."""
        ...


class CheckpointStore(Protocol):
    """Passive persistence: it keeps what it is given and answers what it is asked. Who may
    read which shard, and when progress is written, is the engine's ownership strategy's
    (console.engine.ownership); nothing here calls the engine."""

    path: str

    async def load(self, stream: str) -> dict[str, Checkpoint]: ...

    async def stream_record(self, stream: str) -> StreamRecord | None: ...

    async def register_stream(self, record: StreamRecord) -> None: ...

    async def save(
        self,
        stream: str,
        changes: Sequence[CheckpointChange],
        finish: tuple[int, str] | None = None,
    ) -> None:
        """Checkpoints and their history in one transaction; ``finish`` marks an operator
        command applied in it."""
        ...

    async def save_shards(self, stream: str, shards: Sequence[Shard]) -> None: ...

    async def shards(self, stream: str) -> list[Shard]: ...

    async def streams(self) -> list[StreamRecord]: ...

    async def history(
        self, stream: str, shard_id: str | None = None, limit: int = 100
    ) -> list[HistoryEntry]: ...

    async def add_history(self, stream: str, entries: Sequence[HistoryEntry]) -> None: ...

    async def history_entry(self, stream: str, entry_id: int) -> HistoryEntry | None: ...

    async def history_for_command(self, stream: str, command_id: int) -> list[HistoryEntry]: ...

    async def last_change_id(self, stream: str, before: int | None = None) -> int | None: ...

    async def add_command(
        self, stream: str, shard_id: str | None, action: str, args: dict[str, Any], actor: str
    ) -> int: ...

    async def command(self, command_id: int) -> Command | None: ...

    async def pending_commands(self, stream: str) -> list[Command]: ...

    async def finish_command(self, command_id: int, ok: bool, result: str) -> None: ...

    async def publish(self, stream: str, doc: Mapping[str, Any]) -> None:
        """The running consumer's snapshot (console.engine.snapshot), for a console in another
        process (``attach --db``). A lease table has heartbeats for that: it keeps nothing."""
        ...

    async def snapshot(self, stream: str) -> tuple[float, dict[str, Any]] | None:
        """The last snapshot published, and when (None: none yet)."""
        ...

    async def close(self) -> None: ...


class LockedStore(CheckpointStore, Lockable, Protocol):
    """A store one process holds a stream of whole (SQLite)."""


@runtime_checkable
class ParkedStore(Protocol):
    """A store that keeps parked records (``--on-failure park``): the SQLite file's ``parked``
    table, or a fleet's companion table."""

    async def park(self, records: Sequence[ParkedRecord]) -> None: ...

    async def parked(
        self, stream: str, shard_id: str | None = None, ids: Sequence[int] | None = None
    ) -> list[ParkedRecord]: ...

    async def unpark(
        self, stream: str, ids: Sequence[int], entries: Sequence[HistoryEntry]
    ) -> int: ...
