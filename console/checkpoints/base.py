"""The checkpoint store protocol and the values that cross it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from console.errors import UsageError
from console.model import Checkpoint, Position, Shard


class StoreError(UsageError):
    """The database cannot be used: corrupt, foreign, newer, read-only, or unreadable.
    Raised before anything is written."""


class StoreLockedError(UsageError):
    """Another live consumer holds this stream in this database."""


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change of one shard's checkpoint or status, with its cause.

    ``cause`` is a short word (start, progress, done, rewind, skip, pause, resume, undo,
    retention, reset); ``actor`` is who did it: the engine, ``user@host``, or ``tui``."""

    shard_id: str
    cause: str
    actor: str
    new_position: Position | None
    new_status: str | None
    old_position: Position | None = None
    old_status: str | None = None
    note: str | None = None
    at: float = 0.0
    id: int | None = None
    command_id: int | None = None


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


class CheckpointStore(Protocol):
    path: str

    async def load(self, stream: str) -> dict[str, Checkpoint]: ...

    async def stream_record(self, stream: str) -> StreamRecord | None: ...

    async def register_stream(self, record: StreamRecord) -> None: ...

    async def save(
        self,
        stream: str,
        changes: Sequence[CheckpointChange],
        finish: tuple[int, str] | None = None,
    ) -> None: ...

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

    async def acquire(self, stream: str) -> None: ...

    async def release(self, stream: str) -> None: ...

    async def close(self) -> None: ...
