"""Checkpoints kept in memory per batch and written in batches.

Workers call :meth:`Checkpointer.advance` once per processed batch: a dict assignment, no await.
:meth:`Checkpointer.flush` writes every shard that moved at once (when the ownership strategy
says: on an interval, at each lease renewal; and at shard end, before any control change, at
shutdown), after the processor's own ``flush`` so output is durable before the checkpoint that
covers it. How a batch reaches the store is the strategy's (:class:`Sink`): one transaction, or a
conditional write per held lease, whose progress is dropped when the lease was lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from console.checkpoints.base import CheckpointChange
from console.engine.state import EngineState
from console.model import Checkpoint, CheckpointStatus, HistoryEntry, Position
from console.tasks import run_to_end


class Sink(Protocol):
    """Where a batch of checkpoints goes (console.engine.ownership.base.Ownership.write)."""

    async def write(
        self, changes: Sequence[CheckpointChange], finish: tuple[int, str] | None
    ) -> set[str]:
        """Write them; returns the shards whose checkpoint was written."""
        ...


class Checkpointer:
    def __init__(
        self,
        sink: Sink,
        state: EngineState,
        before_write: Callable[[], Awaitable[None]],
        *,
        history_interval: float = 60.0,
    ) -> None:
        self._sink = sink
        self._state = state
        self._before_write = before_write
        self._history_interval = history_interval
        self._saved: dict[str, Checkpoint] = {}
        self._pending: dict[str, tuple[Position, float | None]] = {}
        # What a write in progress carries, until the store has it: still the truth meanwhile.
        self._inflight: dict[str, tuple[Position, float | None]] = {}
        self._history_at: dict[str, float] = {}
        self._history_pos: dict[str, Position] = {}
        self._lock = asyncio.Lock()
        # Shards whose checkpoint says done or skipped: what lineage readiness is computed from.
        self.finished: set[str] = set()

    def load(self, checkpoints: Mapping[str, Checkpoint]) -> None:
        """What the store holds for the stream, before any write."""
        self._saved = dict(checkpoints)
        self.finished = {sid for sid, cp in checkpoints.items() if cp.status.finished}
        now = time.time()
        for sid, cp in checkpoints.items():
            self._history_pos[sid] = cp.position
            self._history_at[sid] = now
            self._state.update(
                sid,
                checkpoint=cp.position,
                checkpoint_at=cp.updated_at or None,  # a lease table keeps no time
                position=cp.position,
            )

    def adopt(self, shard_id: str, cp: Checkpoint) -> None:
        """A shard this process takes over in a shared store: ``cp`` is the truth now, and
        progress of an earlier hold is forgotten."""
        self._pending.pop(shard_id, None)
        self._inflight.pop(shard_id, None)
        self._saved[shard_id] = cp
        self._history_pos[shard_id] = cp.position
        self._history_at.setdefault(shard_id, time.time())
        self._mark_finished(shard_id, cp)
        self._state.update(
            shard_id, checkpoint=cp.position, position=cp.position, checkpoint_at=time.time()
        )

    def forget(self, shard_id: str) -> None:
        """A shard lost to another worker: what it read since its last checkpoint is not ours
        to write."""
        self._pending.pop(shard_id, None)
        self._inflight.pop(shard_id, None)

    def observe(self, shard_id: str, cp: Checkpoint) -> None:
        """Another worker's checkpoint of a shard this process does not read, as last seen in
        a shared store: what readiness and the fleet view go by."""
        if shard_id in self._pending or shard_id in self._inflight:
            return
        old = self._saved.get(shard_id)
        if old is not None and old.position == cp.position and old.status == cp.status:
            return
        self._saved[shard_id] = cp
        self._mark_finished(shard_id, cp)
        self._state.update(shard_id, checkpoint=cp.position, position=cp.position)

    def _mark_finished(self, shard_id: str, cp: Checkpoint) -> None:
        if cp.status.finished:
            self.finished.add(shard_id)
        else:
            self.finished.discard(shard_id)

    def advance(self, shard_id: str, position: Position, arrival: float | None) -> None:
        """The per-batch call: remember, write later."""
        self._pending[shard_id] = (position, arrival)

    def get(self, shard_id: str) -> Checkpoint | None:
        """The current truth for a shard: saved, with any progress not written yet (or being
        written) applied."""
        saved = self._saved.get(shard_id)
        pending = self._pending.get(shard_id) or self._inflight.get(shard_id)
        if pending is None:
            return saved
        position, arrival = pending
        if saved is None:
            return Checkpoint(shard_id, position, arrival=arrival)
        return replace(saved, position=position, arrival=arrival)

    def all(self) -> dict[str, Checkpoint]:
        out = dict(self._saved)
        for sid in {**self._inflight, **self._pending}:
            cp = self.get(sid)
            assert cp is not None
            out[sid] = cp
        return out

    async def flush(self) -> int:
        """Write every shard that moved since the last flush. Returns how many."""
        return await self.write(())

    async def write(
        self, changes: Sequence[CheckpointChange], finish: tuple[int, str] | None = None
    ) -> int:
        """Write pending progress and ``changes`` in one transaction; a change for a shard
        replaces that shard's pending progress. ``finish`` marks an operator command applied
        in that same transaction.

        A write runs to its end in a task of its own: a caller cancelled meanwhile (a loop
        stopped at shutdown) leaves what is in memory agreeing with what the store has."""
        return await run_to_end(self._write(changes, finish))

    async def _write(
        self, changes: Sequence[CheckpointChange], finish: tuple[int, str] | None
    ) -> int:
        async with self._lock:
            pending, self._pending = self._pending, {}
            if not pending and not changes and finish is None:
                return 0
            now = time.time()
            explicit = {c.checkpoint.shard_id for c in changes}
            batch: list[CheckpointChange] = []
            for sid, (position, arrival) in pending.items():
                if sid in explicit:
                    continue
                base = self._saved.get(sid)
                cp = (
                    Checkpoint(sid, position, arrival=arrival, updated_at=now)
                    if base is None
                    else replace(base, position=position, arrival=arrival, updated_at=now)
                )
                batch.append(CheckpointChange(cp, self._progress_entry(sid, position, now)))
            for change in changes:
                batch.append(
                    CheckpointChange(replace(change.checkpoint, updated_at=now), change.history)
                )
            self._inflight = pending
            try:
                await self._before_write()
                written = await self._sink.write(batch, finish)
            except BaseException:
                for sid, value in pending.items():
                    self._pending.setdefault(sid, value)
                raise
            finally:
                self._inflight = {}
            rows: list[tuple[str, Position, bool]] = []
            for change in batch:
                cp = change.checkpoint
                if cp.shard_id not in written:
                    continue  # a lease lost meanwhile: its progress is not ours to write
                self._saved[cp.shard_id] = cp
                self._mark_finished(cp.shard_id, cp)
                if change.history is not None:
                    self._history_at[cp.shard_id] = now
                    self._history_pos[cp.shard_id] = cp.position
                rows.append((cp.shard_id, cp.position, cp.shard_id in explicit))
            self._state.checkpointed(rows, now)
            return len(batch)

    def _progress_entry(self, sid: str, position: Position, now: float) -> HistoryEntry | None:
        """Routine progress goes into history at most once per ``history_interval`` per shard,
        so "rewind to a previous checkpoint" has points to offer without a row per flush."""
        if now - self._history_at.get(sid, 0.0) < self._history_interval:
            return None
        return HistoryEntry(
            shard_id=sid,
            cause="progress",
            actor="engine",
            old_position=self._history_pos.get(sid),
            new_position=position,
            old_status=CheckpointStatus.OPEN.value,
            new_status=CheckpointStatus.OPEN.value,
        )
