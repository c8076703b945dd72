"""The whole stream to one process: a SQLite database's lock (console.checkpoints.sqlite).

Every shard is this process's to read while it holds the lock. Progress is flushed in one
transaction every ``flush_interval`` (and at a shard's end, before a change, at shutdown: the
consumer's), the snapshot published with it for ``attach --db``. An operator change from another
process arrives as a command queued in the database, applied between batches every
``command_interval``; the ones left pending while no consumer ran are applied before anything is
read. The first start of a stream writes a checkpoint for every shard at the initial position.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable, Sequence

from console.checkpoints.base import CheckpointChange, LockedStore
from console.engine.events import EventLog, Level
from console.engine.ownership.base import Allowance, Duties, Progress, start_loops
from console.model import Checkpoint, CheckpointStatus, HistoryEntry, Position, PositionKind, Shard


def initial_checkpoints(
    shards: Iterable[Shard], initial: Position, now: float
) -> list[CheckpointChange]:
    """The first start of a stream in a store: a checkpoint for every shard.

    LATEST is stored as AT_TIMESTAMP(now): a restart before the first record then resumes from
    the same instant instead of skipping what arrived meanwhile. With LATEST, closed shards are
    not read at all."""
    latest = initial.kind is PositionKind.LATEST
    position = Position.at_timestamp(now) if latest else initial
    changes = []
    for shard in shards:
        if latest and shard.is_closed:
            cp = Checkpoint(shard.shard_id, position, CheckpointStatus.DONE)
            note = "closed before the first start; initial position is latest"
        else:
            cp = Checkpoint(shard.shard_id, position)
            note = f"first start; initial position {initial.encode()}"
        entry = HistoryEntry(
            shard_id=shard.shard_id,
            cause="start",
            actor="engine",
            new_position=cp.position,
            new_status=cp.status.value,
            note=note,
        )
        changes.append(CheckpointChange(cp, entry))
    return changes


class StreamLock:
    worker_id = None
    resolves = False

    def __init__(
        self,
        store: LockedStore,
        events: EventLog,
        *,
        initial: Position,
        flush_interval: float,
        command_interval: float,
    ) -> None:
        self.store = store
        self.events = events
        self.initial = initial
        self.flush_interval = flush_interval
        self.command_interval = command_interval
        self.changed = asyncio.Event()
        self._key: str | None = None
        self._progress: Progress | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def join(self, key: str, progress: Progress) -> None:
        await self.store.acquire(key)
        self._key, self._progress = key, progress

    async def prime(self, shards: Sequence[Shard], fresh: bool) -> None:
        if fresh and self._progress is not None:
            await self._progress.write(initial_checkpoints(shards, self.initial, time.time()))

    async def start(self, duties: Duties) -> None:
        await duties.apply_commands()  # left pending while no consumer ran
        self._tasks = start_loops(
            [
                ("checkpoint flush", self._flush_loop(duties)),
                ("operator commands", self._command_loop(duties)),
            ],
            duties.fail,
        )

    def allowance(self, shard_id: str) -> Allowance:
        held = self._key is not None and self.store.holds(self._key)
        return Allowance.READ if held else Allowance.NOBODY

    def claims(self) -> Collection[str]:
        return ()

    def problem(self, shard_id: str) -> str | None:
        return None

    async def listed(self, shards: Sequence[Shard]) -> None:
        if self._key is not None:
            await self.store.save_shards(self._key, shards)

    async def write(
        self, changes: Sequence[CheckpointChange], finish: tuple[int, str] | None
    ) -> set[str]:
        assert self._key is not None
        await self.store.save(self._key, changes, finish)
        return {c.checkpoint.shard_id for c in changes}

    async def hand_over(self, shard_id: str) -> None:
        """Never asked: this strategy allows no HAND_OFF."""

    def quiesce(self) -> None:
        """One process holds the stream whole: nothing is taken."""

    async def leave(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._key is not None:
            await self.store.release(self._key)

    async def _flush_loop(self, duties: Duties) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            if self._progress is not None:
                try:
                    await self._progress.flush()
                except Exception as exc:
                    self.events.emit(
                        "flush_error",
                        f"checkpoint flush failed, will retry: {exc}",
                        level=Level.ERROR,
                    )
            await duties.publish()

    async def _command_loop(self, duties: Duties) -> None:
        """Commands written by other processes (the CLI, an attached console), between
        batches."""
        while True:
            await asyncio.sleep(self.command_interval)
            try:
                await asyncio.shield(duties.apply_commands())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.events.emit(
                    "command_error", f"reading operator commands failed: {exc}", level=Level.ERROR
                )
