"""Who may read which shard: one strategy, chosen once at wiring, owned by the consumer as the
KCL's Scheduler owns its LeaseCoordinator.

An :class:`Ownership` decides three things and nothing else decides them: which shards this
process may read (:meth:`Ownership.allowance`), when and how progress reaches the store (the
loops :meth:`Ownership.start` starts flush it; :meth:`Ownership.write` writes it), and how an
operator's change is written (:attr:`Ownership.resolves`, and the fencing of leases inside
:meth:`Ownership.write`). Two exist: the whole-stream lock of a SQLite database
(console.engine.ownership.lock) and the KCL 2.x lease coordinator (console.engine.ownership.leases).

The consumer calls down into it; it calls nothing back. What it learns (a lease taken, lost, the
fleet as scanned) it writes into the engine's snapshot and the checkpointer below it, and it sets
:attr:`Ownership.changed`, which the consumer waits on to reconcile its workers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from console.checkpoints.base import CheckpointChange
from console.model import Checkpoint, Shard

log = logging.getLogger("shard_console.engine")


class Allowance(StrEnum):
    """Whether this process may read a shard now."""

    READ = "read"  # ours to read
    ELSEWHERE = "elsewhere"  # another worker of the fleet holds it
    NOBODY = "nobody"  # nobody holds it yet: the next worker to look takes it
    # Ours until handed over (a KCL 3.x graceful handoff): the batch in hand is finished and
    # checkpointed, then Ownership.hand_over lets it go.
    HAND_OFF = "hand off"


class Progress(Protocol):
    """What an ownership strategy needs of the consumer's checkpoints
    (console.engine.consume.checkpointing.Checkpointer)."""

    def adopt(self, shard_id: str, checkpoint: Checkpoint) -> None:
        """A shard this process takes: read it from ``checkpoint``."""
        ...

    def forget(self, shard_id: str) -> None:
        """A shard lost: what was read since its last checkpoint is not ours to write."""
        ...

    def observe(self, shard_id: str, checkpoint: Checkpoint) -> None:
        """Another worker's checkpoint of a shard this process does not read."""
        ...

    async def write(
        self, changes: Sequence[CheckpointChange], finish: tuple[int, str] | None = None
    ) -> int:
        """Pending progress and ``changes``, written now."""
        ...

    async def flush(self) -> int:
        """Pending progress, written now."""
        ...


@dataclass(frozen=True, slots=True)
class Duties:
    """What the strategy's loops do with the rest of the engine, handed to it by the consumer
    when it starts them."""

    publish: Callable[[], Awaitable[None]]  # the snapshot, for a console in another process
    apply_commands: Callable[[], Awaitable[None]]  # changes other processes queued in the store
    fail: Callable[[str], None]  # a loop died (a bug): the run fails, loudly


class Ownership(Protocol):
    @property
    def worker_id(self) -> str | None:
        """This process's name among the stream's readers (a fleet's worker id); None when it
        holds the stream whole."""
        ...

    @property
    def resolves(self) -> bool:
        """Positions an operator's change writes must be records or sentinels (a lease table
        holds nothing else): times and "at" positions are resolved to the record before them
        first."""
        ...

    @property
    def changed(self) -> asyncio.Event:
        """Set when what this process may read changed (a lease taken or lost, the fleet
        scanned)."""
        ...

    async def join(self, key: str, progress: Progress) -> None:
        """Join the stream's readers. Raises StoreLockedError (SQLite: another process holds
        the stream) or LeaseConflictError (live workers that are not shard-console's)."""
        ...

    async def prime(self, shards: Sequence[Shard], fresh: bool) -> None:
        """The stream as first listed; ``fresh``: the store has never seen it (a first start
        writes a checkpoint for every shard, where the store keeps them that way)."""
        ...

    async def start(self, duties: Duties) -> None:
        """Before any worker reads: what the store holds for the start (commands left pending
        while no consumer ran); then the loops that run until :meth:`leave` (flushes; renewals
        and takes)."""
        ...

    def allowance(self, shard_id: str) -> Allowance: ...

    def claims(self) -> Collection[str]:
        """The shards this process holds by name (a fleet's leases); empty when it holds the
        stream whole."""
        ...

    def problem(self, shard_id: str) -> str | None:
        """What keeps the shard from being read by anyone, when something is wrong with it in
        the store (a malformed lease); None when nothing is."""
        ...

    async def listed(self, shards: Sequence[Shard]) -> None:
        """Shards new or changed in a listing (the KCL's shard sync: leases for new shards)."""
        ...

    async def write(
        self,
        changes: Sequence[CheckpointChange],
        finish: tuple[int, str] | None,
    ) -> set[str]:
        """Write a batch of checkpoints (progress, shard ends, operator changes) as this
        strategy writes them; ``finish`` marks an operator command applied with it. Returns
        the shards whose checkpoint was written (progress of a shard lost meanwhile is not)."""
        ...

    async def hand_over(self, shard_id: str) -> None:
        """A shard allowed HAND_OFF whose reader has stopped: its progress written, let go to
        the worker it goes to. Never called for a strategy that allows no HAND_OFF."""
        ...

    def quiesce(self) -> None:
        """The consumer stops: take nothing more."""
        ...

    async def leave(self) -> None:
        """Give back everything held. Idempotent."""
        ...


def start_loops(
    loops: Iterable[tuple[str, Coroutine[Any, Any, None]]], fail: Callable[[str], None]
) -> list[asyncio.Task[None]]:
    """Each loop in a task of its own. One that dies (a bug) fails the run, loudly, rather
    than leave a consumer whose leases expire or whose checkpoints stop in silence."""

    def ended(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("the %s loop died", task.get_name(), exc_info=exc)
            fail(f"internal error in the {task.get_name()} loop: {type(exc).__name__}: {exc}")

    tasks = []
    for name, loop in loops:
        task = asyncio.create_task(loop, name=name)
        task.add_done_callback(ended)
        tasks.append(task)
    return tasks
