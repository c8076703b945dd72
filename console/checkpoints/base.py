"""The store protocol and the values that cross it.

A store keeps a stream's checkpoints, the history of every change and the operator commands,
and it answers *who may read which shard*: the SQLite store by a whole-stream lock (one process
reads the stream), a lease table by per-shard leases (many processes share it). The engine asks
the store; it never assumes it is alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from console.errors import Error
from console.model import Checkpoint, HistoryEntry, Position, Shard


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


@dataclass(frozen=True, slots=True)
class LeaseView:
    """One shard's lease as a shared store last saw it: for the fleet view."""

    shard_id: str
    owner: str | None
    counter: int
    counter_age: float | None  # seconds since the counter was last seen to move (None: never)
    expired: bool  # nobody renews it (or nobody owns it): any worker may take it
    checkpoint: Checkpoint


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker of the fleet, from its last heartbeat."""

    worker: str
    host: str
    pid: int
    leases: int
    records: int
    rate: float
    heartbeat_age: float  # seconds since its last heartbeat
    shards: Mapping[str, Mapping[str, float | None]]  # per shard it reads: lag_ms, rate
    # A KCL 3.x worker's metric row (WorkerMetricStats): each metric's latest value.
    metrics: Mapping[str, float] = field(default_factory=dict)


class OwnershipListener(Protocol):
    """What a shared store tells the engine between its calls (console.engine.shards)."""

    def taken(self, shard_id: str, checkpoint: Checkpoint, previous: str | None) -> None:
        """This process holds the shard now; read it from ``checkpoint``. ``previous``: the
        worker it was stolen from, None for a lease nobody held (or nobody renewed)."""
        ...

    def lost(self, shard_id: str, owner: str | None) -> None:
        """Another worker (``owner``, when known) holds the shard now, or an operator changed
        it: stop reading it at once, without a checkpoint."""
        ...

    def observed(self, leases: Mapping[str, LeaseView], workers: Sequence[WorkerView]) -> None:
        """Every lease of the stream as last scanned, and the workers' last heartbeats."""
        ...

    def report(self) -> dict[str, Any]:
        """This process's records, rates and per-shard lag, for its heartbeat."""
        ...

    async def flush(self) -> None:
        """Write the progress of the shards this process reads, now (the store renews the
        leases no checkpoint wrote just after)."""
        ...

    def taking(self) -> bool:
        """Whether to take more leases (not while stopping)."""
        ...

    def released(self, shard_ids: Sequence[str]) -> None:
        """This process gave these leases back (it is stopping)."""
        ...

    def trouble(self, message: str) -> None:
        """The store's own loops failed (renewing, taking) and will try again."""
        ...


class ShardOwnership(Protocol):
    """Who may read which shard of a stream. ``shared``: several processes read the stream
    through this store (a lease table), so it says where each shard starts, and operator
    changes are fencing writes; False for a store one process holds whole (SQLite)."""

    shared: bool

    async def acquire(self, stream: str) -> None:
        """Join the stream's readers. Raises StoreLockedError when the store admits no more
        (SQLite: another process holds the stream)."""
        ...

    async def release(self, stream: str) -> None:
        """Leave: give back every shard this process holds. Idempotent."""
        ...

    def holds(self, stream: str) -> bool:
        """Whether this process has joined the stream's readers and not left."""
        ...

    def may_read(self, stream: str, shard_id: str) -> bool:
        """Whether this process may read the shard now (SQLite: every shard, while it holds
        the stream; a lease table: the shards it holds a lease on)."""
        ...

    def watch(self, stream: str, listener: OwnershipListener) -> None:
        """Start telling ``listener`` of shards taken and lost (a store one process holds
        whole has nothing to tell)."""
        ...


class CheckpointStore(ShardOwnership, Protocol):
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
