"""The shards' workers: the one task reading each shard, started and stopped as the scheduling
decision (console.engine.consume.scheduling) says.

:meth:`ShardRunner.reconcile` gathers each shard's facts (checkpoint, parents, what the
ownership strategy allows, its worker, an operator change holding it, a failure) and applies
the decision; it runs after every listing, shard end, operator change and change of ownership.
The runner also stops and holds shards for operator changes (console.engine.changes.running
.Runner), and tells loudly of data lost to retention: a checkpoint older than the stream keeps,
a shard that left the stream before it was read to its end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from console.checkpoints.base import CheckpointStore
from console.engine.consume.checkpointing import Checkpointer
from console.engine.consume.discovery import Discovery
from console.engine.consume.feeds import Feed
from console.engine.consume.poison import ParkingLot
from console.engine.consume.scheduling import Act, ShardFacts, decide, start_position
from console.engine.consume.worker import (
    ProcessorHung,
    RecordBudget,
    ShardWorker,
    WorkerExit,
    WorkerOptions,
)
from console.engine.events import EventLog, Level
from console.engine.lineage import Lineage
from console.engine.ownership.base import Allowance, Ownership
from console.engine.read.pacing import Pacers
from console.engine.state import EngineState
from console.model import (
    Checkpoint,
    CheckpointStatus,
    HistoryEntry,
    Position,
    Record,
    Shard,
    ShardContext,
    ShardStatus,
)
from console.processors.base import Processor
from console.sources.base import StreamSource

log = logging.getLogger("shard_console.engine")


class ShardRunner:
    def __init__(
        self,
        *,
        source: StreamSource,
        store: CheckpointStore,
        ownership: Ownership,
        processor: Processor,
        checkpointer: Checkpointer,
        discovery: Discovery,
        state: EngineState,
        events: EventLog,
        options: WorkerOptions,
        budget: RecordBudget | None,
        fail: Callable[[str], None],
        parking: ParkingLot | None = None,
        discover_now: Callable[[], None],
    ) -> None:
        """``fail(reason)`` fails the whole run; ``discover_now()`` asks for a listing."""
        self.source = source
        self.store = store
        self.ownership = ownership
        self.processor = processor
        self.checkpointer = checkpointer
        self.discovery = discovery
        self.state = state
        self.events = events
        self._worker_options = options
        self.pacers = Pacers(options.min_call_interval)  # shared with the records browser
        self._budget = budget
        self._parking = parking
        self._fail = fail
        self._discover_now = discover_now
        # Off until the consumer runs (start applies pending commands before any read) and
        # off again once it stops: reconcile then starts nothing.
        self.enabled = False
        self.running = False  # changes.Runner: far enough into the start to apply commands
        self._workers: dict[str, tuple[ShardWorker, asyncio.Task[WorkerExit]]] = {}
        self._failed: set[str] = set()
        self._allowed: set[str] = set()  # shards ours to read at the last reconcile
        self._lost_reported: set[str] = set()
        self._changing: set[str] = set()  # shards an operator change is rewriting: no worker
        self._handing: set[str] = set()  # shards being handed over (console.engine.ownership)
        self._background: set[asyncio.Task[Any]] = set()
        # Enhanced fan-out: each worker's feed (None: GetRecords polling).
        self.feed_for: Callable[[str], Feed] | None = None

    @property
    def key(self) -> str:
        return self.discovery.key

    @property
    def lineage(self) -> Lineage:
        return self.discovery.lineage

    @property
    def retention_hours(self) -> float | None:
        info = self.state.info
        return info.retention_hours if info is not None else None

    @property
    def reading(self) -> int:
        """Shards with a worker now."""
        return len(self._workers)

    def is_worker(self, task: asyncio.Task[Any] | None) -> bool:
        return any(task is t for _, t in self._workers.values())

    async def stop_all(self) -> None:
        """Every worker stops (each finishes its batch in hand); what they spawned settles."""
        self.enabled = False
        for worker, _ in list(self._workers.values()):
            worker.stop()
        running = [task for _, task in self._workers.values()]
        if running:
            await asyncio.wait(running)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    def _on_children(self, children: tuple[Shard, ...]) -> None:
        lineage = self.discovery.learn(children)
        if lineage is not None:
            self.set_lineage(lineage)
            self._discover_now()

    def set_lineage(self, lineage: Lineage) -> None:
        """Show the shard tree as listed: each row's parents and whether it is closed; hand a
        closed shard's range to its worker; forget shards that left the stream."""
        state = self.state
        for sid, shard in lineage.shards.items():
            state.update(sid, parents=shard.parents, closed=shard.is_closed)
            entry = self._workers.get(sid)
            if entry is not None:
                entry[0].shard = shard
        for sid in [sid for sid in state.shards if sid not in lineage.shards]:
            if sid in self._workers:
                continue
            cp = self.checkpointer.get(sid)
            if cp is not None and not cp.status.finished:
                self._report_lost(sid, cp)
            state.remove(sid)
        state.set_lineage(lineage)

    def _report_lost(self, sid: str, cp: Checkpoint) -> None:
        """A shard that left the stream (retention) before it was read to its end."""
        if sid in self._lost_reported:
            return
        self._lost_reported.add(sid)
        message = (
            f"{sid} left the stream (retention) before it was read to the end; records after "
            f"{cp.position.describe()} are lost"
        )
        self._retention_loss(sid, message, cp.position, None)

    def _retention_loss(
        self, sid: str, message: str, old: Position | None, new: Position | None
    ) -> None:
        """Data lost to retention is loud: an ERROR event and a row in the history."""
        self.events.emit("retention_loss", message, level=Level.ERROR, shard_id=sid)
        entry = HistoryEntry(
            shard_id=sid,
            cause="retention",
            actor="engine",
            old_position=old,
            new_position=new,
            new_status=None if new is None else CheckpointStatus.OPEN.value,
            note=message,
        )
        self._spawn(self.store.add_history(self.key, [entry]), "recording a retention loss")

    # -- workers ----------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Every shard as the scheduling decision says: a worker started where one may read,
        stopped where the shard is no longer ours, the status shown otherwise."""
        if not self.enabled:
            return
        lineage = self.lineage
        finished = self.checkpointer.finished
        ownership = self.ownership
        allowed: set[str] = set()
        for sid, shard in lineage.shards.items():
            allowance = ownership.allowance(sid)
            if allowance is Allowance.READ:
                allowed.add(sid)
                if sid not in self._allowed:
                    self._failed.discard(sid)  # taken anew: it may read again
            facts = ShardFacts(
                checkpoint=self.checkpointer.get(sid),
                ready=lineage.is_ready(sid, finished),
                allowance=allowance,
                reading=sid in self._workers,
                changing=sid in self._changing,
                failed=sid in self._failed,
                problem=ownership.problem(sid),
            )
            decision = decide(facts)
            if decision.act is Act.START:
                self._start_worker(shard, facts.checkpoint)
            elif decision.act is Act.ABANDON:
                self._abandon(sid)
            elif decision.act is Act.HAND_OFF and sid not in self._handing:
                self._handing.add(sid)
                self._spawn(self._hand_off(sid), f"handing {sid} over")
            if decision.status is not None:
                self.state.set_status(sid, decision.status, decision.error)
        self._allowed = allowed
        if any(sid not in lineage for sid in ownership.claims()):
            self._discover_now()  # a shard no listing has shown yet: list, then read it

    def _abandon(self, sid: str) -> None:
        """At once and without a checkpoint: the batch in hand is the next holder's to read."""
        entry = self._workers.pop(sid, None)
        if entry is not None:
            entry[1].cancel()

    async def _hand_off(self, sid: str) -> None:
        """The batch in hand finished and checkpointed, then the lease let go: the next holder
        reads on from exactly there."""
        try:
            await self.stop_shard(sid)
            await self.ownership.hand_over(sid)
        finally:
            self._handing.discard(sid)
            self.reconcile()

    def _start_worker(self, shard: Shard, cp: Checkpoint | None) -> None:
        sid = shard.shard_id
        position, lost = start_position(sid, cp, self.retention_hours, time.time())
        if lost is not None:
            assert cp is not None
            self._retention_loss(sid, lost, cp.position, position)
        for parent in self.lineage.gone_parents(sid):
            parent_cp = self.checkpointer.get(parent)
            if parent_cp is not None and not parent_cp.status.finished:
                self._report_lost(parent, parent_cp)
        worker = ShardWorker(
            shard=shard,
            start=position,
            source=self.source,
            processor=self.processor,
            checkpointer=self.checkpointer,
            state=self.state,
            events=self.events,
            options=self._worker_options,
            pacer=self.pacers[sid],
            feed=self.feed_for(sid) if self.feed_for is not None else None,
            ctx=ShardContext(self.source.stream, sid, shard.parents),
            budget=self._budget,
            parking=self._parking,
            worker_id=getattr(self.ownership, "worker_id", None),
            key=self.key,
            on_children=self._on_children,
            on_retention_loss=lambda message, lost: self._retention_loss(
                sid, message, lost, Position.trim_horizon()
            ),
        )
        task = asyncio.create_task(worker.run(), name=f"shard {sid}")
        self._workers[sid] = (worker, task)
        task.add_done_callback(lambda t: self._worker_done(sid, t))
        self.events.emit("shard_started", f"{sid}: reading {position.describe()}", shard_id=sid)

    def _worker_done(self, sid: str, task: asyncio.Task[WorkerExit]) -> None:
        entry = self._workers.get(sid)
        if entry is not None and entry[1] is task:
            del self._workers[sid]
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, ProcessorHung):
            self._failed.add(sid)
            self.state.set_status(sid, ShardStatus.FAILED, str(exc))
            self._fail(str(exc))
            return
        if exc is not None:
            self._failed.add(sid)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            self.state.set_status(sid, ShardStatus.FAILED, reason)
            log.error("worker for %s crashed", sid, exc_info=exc)
            self.events.emit("shard_failed", f"{sid} stopped: {reason}", level=Level.ERROR)
            return
        outcome = task.result()
        if outcome is WorkerExit.ENDED:
            self.state.update(sid, lag_ms=None)  # nothing left to be behind on
            self.state.set_status(sid, ShardStatus.DONE)
            kids = self.lineage.children.get(sid, ())
            self.events.emit(
                "shard_done",
                f"{sid} done" + (f"; children: {', '.join(kids)}" if kids else ""),
                shard_id=sid,
            )
            self.reconcile()
            self._discover_now()
        elif outcome is WorkerExit.FAILED:
            self._failed.add(sid)

    # -- what operator changes need (console.engine.changes.running.Runner) ----------------

    def failing_record(self, shard_id: str) -> Record | None:
        entry = self._workers.get(shard_id)
        return entry[0].failing_record if entry is not None else None

    async def stop_shard(self, shard_id: str) -> Record | None:
        entry = self._workers.get(shard_id)
        if entry is None:
            return None
        worker, task = entry
        worker.stop()
        await asyncio.wait([task])
        return worker.failing_record

    def hold(self, shard_ids: set[str]) -> None:
        self._changing |= shard_ids

    def release(self, shard_ids: set[str], changed: bool) -> None:
        self._changing -= shard_ids
        if changed:
            self._failed -= shard_ids
            for sid in shard_ids:
                if self.state.view(sid).status is ShardStatus.FAILED:
                    self.state.set_status(sid, ShardStatus.READY)
        self.reconcile()

    # -- background work --------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        task = asyncio.create_task(coro, name=what)
        self._background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.events.emit("error", f"{what} failed: {t.exception()}", level=Level.ERROR)

        task.add_done_callback(done)
