"""The shards and their workers: which shard may read now, and the one worker reading it.

A shard reads when its checkpoint is not finished or paused, every parent is done (or left
the stream), the store lets this process read it, no operator change holds it, and it has not
failed. :meth:`ShardRunner.reconcile` gives each shard the status that follows and starts a
worker where one may read; it runs after every listing, shard end and operator change. It also
stops and holds shards for operator changes (console.engine.changes.Runner), and tells loudly of
data lost to retention: a checkpoint older than the stream keeps, a shard that left the stream
before it was read to its end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from console.checkpoints.base import CheckpointStore, LeaseView, WorkerView
from console.engine.checkpointing import Checkpointer
from console.engine.discovery import Discovery
from console.engine.events import EventLog, ExpiryTeller, Level
from console.engine.feeds import Feed
from console.engine.lineage import Lineage
from console.engine.pacing import Pacers
from console.engine.state import EngineState
from console.engine.worker import (
    ProcessorHung,
    RecordBudget,
    ShardWorker,
    WorkerExit,
    WorkerOptions,
)
from console.model import (
    Checkpoint,
    CheckpointStatus,
    HistoryEntry,
    Position,
    Record,
    Shard,
    ShardContext,
    ShardStatus,
    format_ts,
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
        processor: Processor,
        checkpointer: Checkpointer,
        discovery: Discovery,
        state: EngineState,
        events: EventLog,
        options: WorkerOptions,
        budget: RecordBudget | None,
        fail: Callable[[str], None],
        discover_now: Callable[[], None],
    ) -> None:
        """``fail(reason)`` fails the whole run; ``discover_now()`` asks for a listing."""
        self.source = source
        self.store = store
        self.processor = processor
        self.checkpointer = checkpointer
        self.discovery = discovery
        self.state = state
        self.events = events
        self._worker_options = options
        self.pacers = Pacers(options.min_call_interval)  # shared with the records browser
        self._budget = budget
        self._fail = fail
        self._discover_now = discover_now
        # Off until the consumer runs (start applies pending commands before any read) and
        # off again once it stops: reconcile then starts nothing.
        self.enabled = False
        self.running = False  # changes.Runner: far enough into the start to apply commands
        self._workers: dict[str, tuple[ShardWorker, asyncio.Task[WorkerExit]]] = {}
        self._failed: set[str] = set()
        self._lost_reported: set[str] = set()
        self._changing: set[str] = set()  # shards an operator change is rewriting: no worker
        self._background: set[asyncio.Task[Any]] = set()
        self.worker_id: str | None = None  # fleet mode: this process's name in the lease table
        self._expiries = ExpiryTeller(self.events)
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
            view = state.view(sid)
            if view.parents != shard.parents or view.closed != shard.is_closed:
                view.parents = shard.parents
                view.closed = shard.is_closed
                state.touch(view)
            entry = self._workers.get(sid)
            if entry is not None:
                entry[0].shard = shard
        for sid in [sid for sid in state.shards if sid not in lineage.shards]:
            if sid in self._workers:
                continue
            cp = self.checkpointer.get(sid)
            if cp is not None and not cp.status.finished:
                self._report_lost(sid, cp)
            del state.shards[sid]
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
        """Give every shard the status its checkpoint and parents call for, and start a worker
        for each shard that may read and has none."""
        if not self.enabled:
            return
        lineage = self.lineage
        finished = self.checkpointer.finished
        state = self.state
        for sid, shard in lineage.shards.items():
            if sid in self._workers or sid in self._changing:
                continue
            view = state.view(sid)
            cp = self.checkpointer.get(sid)
            if cp is not None and cp.status.finished:
                status = (
                    ShardStatus.DONE if cp.status is CheckpointStatus.DONE else ShardStatus.SKIPPED
                )
                state.set_status(view, status)
            elif sid in self._failed:
                continue
            elif cp is not None and cp.paused:
                state.set_status(view, ShardStatus.PAUSED)
            elif not lineage.is_ready(sid, finished):
                state.set_status(view, ShardStatus.WAITING)
            elif self.store.may_read(self.key, sid):
                self._start_worker(shard, cp)
            elif self.store.shared:  # another worker of the fleet reads it, or will
                state.set_status(view, ShardStatus.LEASED if view.owner else ShardStatus.READY)

    def _start_worker(self, shard: Shard, cp: Checkpoint | None) -> None:
        sid = shard.shard_id
        position = cp.position if cp is not None else Position.trim_horizon()
        retention = self.retention_hours
        if (
            cp is not None
            and cp.arrival is not None
            and retention is not None
            and position.sequence_number is not None
            and cp.arrival < time.time() - retention * 3600
        ):
            message = (
                f"{sid}: checkpoint from {format_ts(cp.arrival)} is older than the stream's "
                f"retention ({retention:g} h); continuing at TRIM_HORIZON: records "
                "after it may have been lost"
            )
            self._retention_loss(sid, message, position, Position.trim_horizon())
            position = Position.trim_horizon()
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
        view = self.state.view(sid)
        exc = task.exception()
        if isinstance(exc, ProcessorHung):
            self._failed.add(sid)
            self.state.set_status(view, ShardStatus.FAILED, str(exc))
            self._fail(str(exc))
            return
        if exc is not None:
            self._failed.add(sid)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            self.state.set_status(view, ShardStatus.FAILED, reason)
            log.error("worker for %s crashed", sid, exc_info=exc)
            self.events.emit("shard_failed", f"{sid} stopped: {reason}", level=Level.ERROR)
            return
        outcome = task.result()
        if outcome is WorkerExit.ENDED:
            view.lag_ms = None  # nothing left to be behind on
            self.state.set_status(view, ShardStatus.DONE)
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

    # -- what operator changes need (console.engine.changes.Runner) ---------------------------

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
                view = self.state.view(sid)
                if view.status is ShardStatus.FAILED:
                    self.state.set_status(view, ShardStatus.READY)
        self.reconcile()

    # -- leases (a shared store's console.checkpoints.base.OwnershipListener) ---------------

    def taken(self, shard_id: str, checkpoint: Checkpoint, previous: str | None) -> None:
        self.checkpointer.adopt(shard_id, checkpoint)
        if shard_id not in self.lineage:
            self._discover_now()  # a shard no listing has shown yet: list, then read it
        view = self.state.view(shard_id)
        view.owner, view.lease_expired = self.worker_id, False
        self._failed.discard(shard_id)
        self.state.touch(view)
        how = f"stolen from worker {previous}" if previous else "taken"
        self.events.emit(
            "lease_taken",
            f"lease on {shard_id} {how}; reading {checkpoint.position.describe()}",
            shard_id=shard_id,
        )
        self.reconcile()

    def lost(self, shard_id: str, owner: str | None) -> None:
        """At once and without a checkpoint: the batch in hand is the new owner's to read."""
        entry = self._workers.pop(shard_id, None)
        if entry is not None:
            entry[1].cancel()
        self.checkpointer.forget(shard_id)
        view = self.state.view(shard_id)
        view.owner = owner
        view.lag_ms = None
        self.state.set_status(view, ShardStatus.LEASED if owner else ShardStatus.READY)
        self.state.touch(view)
        whom = (
            f"to worker {owner}"
            if owner
            else "(an operator changed it, or it expired: nobody holds it now)"
        )
        self.events.emit(
            "lease_lost",
            f"lease on {shard_id} lost {whom}; stopped without a checkpoint",
            level=Level.WARNING,
            shard_id=shard_id,
        )

    def observed(self, leases: Mapping[str, LeaseView], workers: Sequence[WorkerView]) -> None:
        state = self.state
        if workers:
            state.workers = tuple(workers)
        reported = {sid: (w, figures) for w in workers for sid, figures in w.shards.items()}
        for sid, lease in leases.items():
            view = state.view(sid)
            mine = sid in self._workers or lease.owner == self.worker_id
            if not mine:
                self.checkpointer.observe(sid, lease.checkpoint)
                # Lag and rate of a shard another worker reads: from that worker's heartbeat.
                holder = reported.get(sid)
                lag, rate = None, 0.0
                if holder is not None and holder[0].worker == lease.owner:
                    lag = holder[1].get("lag_ms")
                    rate = holder[1].get("rate") or 0.0
                if (view.lag_ms, view.rate) != (lag, rate):
                    view.lag_ms = None if lag is None else int(lag)
                    view.rate = rate
                    state.touch(view)
            self._expiries.see(sid, lease.owner, lease.expired)
            changed = (view.owner, view.lease_counter, view.lease_expired) != (
                lease.owner,
                lease.counter,
                lease.expired,
            )
            view.owner, view.lease_counter = lease.owner, lease.counter
            view.counter_age, view.lease_expired = lease.counter_age, lease.expired
            if changed:
                state.touch(view)
        self.reconcile()

    def released(self, shard_ids: Sequence[str]) -> None:
        for sid in shard_ids:
            view = self.state.view(sid)
            view.owner = None
            self.state.touch(view)
        self.events.emit(
            "lease_released", f"gave back {len(shard_ids)} lease(s): {', '.join(sorted(shard_ids))}"
        )

    async def flush(self) -> None:
        await self.checkpointer.flush()

    def taking(self) -> bool:
        return self.running

    def trouble(self, message: str) -> None:
        self.events.emit("lease_error", message, level=Level.WARNING)

    def report(self) -> dict[str, Any]:
        shards = {
            sid: {"lag_ms": view.lag_ms, "rate": view.rate}
            for sid in self._workers
            if (view := self.state.shards.get(sid)) is not None
        }
        return {"records": self.state.records_total, "rate": self.state.rate, "shards": shards}

    # -- background loops -------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        task = asyncio.create_task(coro, name=what)
        self._background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.events.emit("error", f"{what} failed: {t.exception()}", level=Level.ERROR)

        task.add_done_callback(done)
