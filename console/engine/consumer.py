"""The consumer: its life-cycle, and the wiring of discovery, workers, checkpoints and changes.

    async with Consumer(source, store, processor, options) as consumer:
        await consumer.run(duration=60)

The parts have modules of their own: :mod:`discovery` lists shards and keeps the lineage,
:mod:`worker` reads one shard, :mod:`checkpointing` batches checkpoints into the store,
:mod:`changes` applies operator changes. The consumer starts and stops them, decides which
shard may read (its parents are done, the store lets this process read it, no operator change
holds it) and keeps ``state``, the versioned snapshot front ends read.

``stop()`` is idempotent, and safe at any moment, during ``start()`` too: workers stop fetching,
finish the batch in hand, checkpoints are flushed, the store's hold on the stream is released.
``request_stop()`` is its synchronous form, for signal handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from console.checkpoints.base import CheckpointStore, StreamRecord
from console.engine.changes import OperatorChanges
from console.engine.checkpointing import Checkpointer
from console.engine.control import ControlRequest, ControlResult, Plan
from console.engine.discovery import Discovery, initial_checkpoints
from console.engine.events import EventLog, Level
from console.engine.lineage import Lineage
from console.engine.retry import Backoff
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
from console.sources.base import FatalSourceError, StreamInfo, StreamSource

log = logging.getLogger("shard_console.engine")


class ConsumerStatus(StrEnum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    initial_position: Position = field(default_factory=Position.trim_horizon)
    discovery_interval: float = 30.0
    flush_interval: float = 5.0
    idle_interval: float = 1.0
    records_per_call: int | None = None  # None: the service's maximum
    max_records: int | None = None  # stop after this many records in all
    processor_timeout: float | None = 300.0
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    processor_backoff_cap: float = 30.0
    history_interval: float = 60.0
    command_interval: float = 1.0
    tick_interval: float = 1.0
    read_only: bool = False  # refuse every operator change


class Consumer:
    def __init__(
        self,
        source: StreamSource,
        store: CheckpointStore,
        processor: Processor,
        options: ConsumerOptions | None = None,
        events: EventLog | None = None,
        info: StreamInfo | None = None,
    ) -> None:
        """``info``: what ``source.describe()`` said, when the caller has asked already."""
        self.source = source
        self.store = store
        self.processor = processor
        self.options = options or ConsumerOptions()
        self.events = events or EventLog()
        self.state = EngineState(source.stream, source.kind, source.location)
        self.state.info = info
        self.status = ConsumerStatus.CREATED
        self.failure: str | None = None  # why the run failed, if it did
        self.key = source.stream  # the store's key for the stream; the ARN once known
        self.checkpointer = Checkpointer(
            store, self.state, processor.flush, history_interval=self.options.history_interval
        )
        self.discovery = Discovery(source, store, self.events)
        self.changes = OperatorChanges(
            self, store, self.checkpointer, self.events, read_only=self.options.read_only
        )
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._discover_now = asyncio.Event()
        self._starting: asyncio.Task[None] | None = None
        self._opened = False  # the processor: closed at the end only if it was opened
        self._closing: asyncio.Task[None] | None = None
        self._start_cancelled = False
        self._acquired = False
        self._workers: dict[str, tuple[ShardWorker, asyncio.Task[WorkerExit]]] = {}
        self._failed: set[str] = set()
        self._lost_reported: set[str] = set()
        self._changing: set[str] = set()  # shards an operator change is rewriting: no worker
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._budget = (
            RecordBudget(self.options.max_records, self._budget_spent)
            if self.options.max_records is not None
            else None
        )
        limit = self.options.records_per_call or source.max_records_per_call
        self._worker_options = WorkerOptions(
            limit=min(limit, source.max_records_per_call),
            min_call_interval=source.min_call_interval,
            idle_interval=self.options.idle_interval,
            backoff_base=self.options.backoff_base,
            backoff_cap=self.options.backoff_cap,
            processor_backoff_cap=self.options.processor_backoff_cap,
            processor_timeout=self.options.processor_timeout,
        )

    # -- life -------------------------------------------------------------------------------

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Describe the stream (unless it was), join its readers in the store, load the
        checkpoints, list the shards, apply the commands left pending, start the workers.

        A ``stop()`` or ``request_stop()`` meanwhile ends the start: it returns with the
        consumer stopped and everything it had taken given back. An error undoes the same
        and is raised."""
        if self.status is not ConsumerStatus.CREATED:
            raise RuntimeError(f"a Consumer starts once (it is {self.status.value})")
        if self._stop_requested.is_set():  # asked to stop before it started
            self._set_stopped()
            return
        self.status = ConsumerStatus.STARTING
        task = asyncio.create_task(self._start(), name="consumer start")
        self._starting = task
        me = asyncio.current_task()
        cancels_before = me.cancelling() if me is not None else 0
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            caller_cancelled = me is not None and me.cancelling() > cancels_before
            if caller_cancelled:
                self._cancel_start()  # our caller is cancelled: so is the start
            await asyncio.wait([task])
            # A start cancelled before its first step never ran its own clean-up.
            await self._shutdown()
            if caller_cancelled:
                raise
            # Otherwise stop() or request_stop() ended the start: the consumer is stopped.
        finally:
            self._starting = None

    async def _start(self) -> None:
        try:
            info = self.state.info or await self.source.describe()
            self.state.info = info
            self.key = self.discovery.key = info.arn or self.source.stream
            await self.store.acquire(self.key)
            self._acquired = True  # ours to release (a failed acquire leaves nothing held)
            record = await self.store.stream_record(self.key)
            checkpoints = await self.store.load(self.key)
            self.checkpointer.load(self.key, checkpoints)
            self._opened = True
            for warning in await self.processor.open() or ():
                self.events.emit("processor_warning", warning, level=Level.WARNING)
            backoff = Backoff(self.options.backoff_base, max(self.options.backoff_cap, 1.0))
            shards = await self.discovery.first_list(backoff)
            self._set_lineage(self.discovery.lineage)
            if record is None and not checkpoints:
                initial = self.options.initial_position
                await self.checkpointer.write(initial_checkpoints(shards, initial, time.time()))
            await self.store.register_stream(
                StreamRecord(
                    self.key,
                    self.source.stream,
                    self.source.kind,
                    record.initial_position if record else self.options.initial_position,
                    record.created_at if record else time.time(),
                    info.retention_hours,
                )
            )
            # Commands written while no consumer ran are honoured before anything is read.
            await self.changes.apply_pending()
        except BaseException:
            # The start is over: a stop now must not cancel the clean-up, nor replace the error
            # it is about to raise with a CancelledError.
            self._start_cancelled = True
            await self._shutdown()
            raise
        self.status = ConsumerStatus.RUNNING
        self._reconcile()
        self._tasks = [
            self._loop_task(self._discovery_loop(), "discovery"),
            self._loop_task(self._flush_loop(), "checkpoint flush"),
            self._loop_task(self._tick_loop(), "rates"),
            self._loop_task(self._command_loop(), "operator commands"),
        ]
        self.events.emit(
            "started",
            f"consuming '{self.source.stream}' ({self.source.kind}, {self.source.location}): "
            f"{len(self.lineage)} shards, {len(self._workers)} reading",
        )

    def request_stop(self, reason: str | None = None) -> None:
        """Ask the run to end; safe from a signal handler. ``run()`` returns, then ``stop()``;
        a start under way ends at once."""
        if reason and not self._stop_requested.is_set():
            self.events.emit("stopping", reason)
        self._stop_requested.set()
        self._cancel_start()

    def _cancel_start(self) -> None:
        """End a start under way, once: its clean-up must not be cancelled in turn."""
        if self._starting is not None and not self._starting.done() and not self._start_cancelled:
            self._start_cancelled = True
            self._starting.cancel()

    async def run(self, duration: float | None = None) -> None:
        """Consume until stopped, failed, out of ``max_records`` or past ``duration``."""
        if self.status is ConsumerStatus.CREATED:
            await self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration):
                await self._stop_requested.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop and wait until everything is given back. From inside the consumer (a
        processor, an event subscriber: code the stop itself waits for) it asks for the stop
        and returns at once, as ``request_stop()`` does."""
        me = asyncio.current_task()
        if me is not None and (
            me is self._closing or any(me is task for _, task in self._workers.values())
        ):
            self.request_stop()
            return
        if self.status is ConsumerStatus.CREATED:
            self._set_stopped()
            return
        if self.status is ConsumerStatus.STOPPED:
            return
        self._stop_requested.set()
        starting = self._starting
        if starting is not None and not starting.done():
            self._cancel_start()  # its clean-up gives back what it took
            await asyncio.wait([starting])
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop the loops and the workers (each finishes its batch), flush, close, release:
        from a stop, or from a start that failed or was stopped, whatever it had reached.
        Runs once and to its end, in a task of its own: a caller cancelled meanwhile (a stop
        under a timeout, a start cancelled again) leaves it running, and every caller waits
        for the same end."""
        if self._closing is None:
            started = self.status is ConsumerStatus.RUNNING
            self.status = ConsumerStatus.STOPPING
            self._closing = asyncio.create_task(self._close(started), name="consumer stop")
        await asyncio.shield(self._closing)

    async def _close(self, started: bool) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            async with self.changes.lock:
                for worker, _ in list(self._workers.values()):
                    worker.stop()
                running = [task for _, task in self._workers.values()]
                if running:
                    await asyncio.wait(running)
                if self._background:
                    await asyncio.gather(*self._background, return_exceptions=True)
                try:
                    if self._opened and self._acquired:
                        await self.checkpointer.flush()
                except Exception as exc:
                    self._fail_run(f"the final checkpoint flush failed: {exc}")
        finally:
            try:
                if self._opened:
                    await self.processor.close()
            except Exception as exc:
                self._fail_run(f"the processor failed to close: {type(exc).__name__}: {exc}")
            finally:
                if self._acquired:
                    await self.store.release(self.key)
                self._set_stopped()
                if started:
                    self.events.emit(
                        "stopped",
                        f"stopped after {self.state.records_total} records; checkpoints flushed",
                    )

    def _set_stopped(self) -> None:
        self.status = ConsumerStatus.STOPPED
        self._stopped.set()

    @property
    def stopped(self) -> asyncio.Event:
        return self._stopped

    @property
    def running(self) -> bool:
        """Running, or starting far enough to apply operator commands."""
        return self.status in (ConsumerStatus.STARTING, ConsumerStatus.RUNNING)

    @property
    def lineage(self) -> Lineage:
        return self.discovery.lineage

    @property
    def read_only(self) -> bool:
        return self.options.read_only

    @property
    def retention_hours(self) -> float | None:
        info = self.state.info
        return info.retention_hours if info is not None else None

    def _fail_run(self, reason: str) -> None:
        """The first reason is the run's failure, one ERROR line; what fails after it while
        the run stops (the other shards of a hung processor) is told as a warning."""
        if self.failure is None:
            self.failure = reason
            self.events.emit("run_failed", reason, level=Level.ERROR)
        else:
            self.events.emit("run_failed", f"also: {reason}", level=Level.WARNING)
        self._stop_requested.set()

    def _budget_spent(self) -> None:
        self.request_stop(f"--max-records {self.options.max_records} reached")

    def _loop_task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background loop. Each handles its own expected errors; one that dies anyway fails
        the run loudly rather than leaving a consumer that silently stopped discovering or
        flushing."""
        task = asyncio.create_task(coro, name=name)

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                log.error("the %s loop crashed", name, exc_info=exc)
                self._fail_run(f"internal error in the {name} loop: {type(exc).__name__}: {exc}")

        task.add_done_callback(done)
        return task

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        task = asyncio.create_task(coro, name=what)
        self._background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self.events.emit("error", f"{what} failed: {t.exception()}", level=Level.ERROR)

        task.add_done_callback(done)

    # -- the engine's face to front ends (console.engine.api.Engine) --------------------------

    async def control(self, request: ControlRequest) -> ControlResult:
        return await self.changes.control(request)

    async def preview(self, request: ControlRequest) -> Plan:
        return await self.changes.preview(request)

    async def history(self, shard_id: str | None = None, limit: int = 50) -> list[HistoryEntry]:
        return await self.changes.history(shard_id, limit)

    async def checkpoint_position(self, shard_id: str, entry_id: int) -> Position:
        return await self.changes.checkpoint_position(shard_id, entry_id)

    # -- discovery ----------------------------------------------------------------------------

    def trigger_discovery(self) -> None:
        self._discover_now.set()

    async def _discovery_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.discovery_interval):
                    await self._discover_now.wait()
            self._discover_now.clear()
            try:
                _, lineage = await self.discovery.refresh()
            except FatalSourceError as exc:
                self._fail_run(f"shard discovery failed: {exc}")
                return
            except Exception as exc:  # retryable, or the store: try again next round
                self.events.emit(
                    "discovery_error",
                    f"shard discovery failed, will retry: {exc}",
                    level=Level.WARNING,
                )
                continue
            if lineage is not None:
                self._set_lineage(lineage)
            self._reconcile()

    def _on_children(self, children: tuple[Shard, ...]) -> None:
        lineage = self.discovery.learn(children)
        if lineage is not None:
            self._set_lineage(lineage)
            self._discover_now.set()

    def _set_lineage(self, lineage: Lineage) -> None:
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

    def _reconcile(self) -> None:
        """Give every shard the status its checkpoint and parents call for, and start a worker
        for each shard that may read and has none."""
        if self.status is not ConsumerStatus.RUNNING:
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
            ctx=ShardContext(self.source.stream, sid, shard.parents),
            budget=self._budget,
            on_children=self._on_children,
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
            self._fail_run(str(exc))
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
            self._reconcile()
            self._discover_now.set()
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
        self._reconcile()

    # -- background loops -------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.flush_interval)
            try:
                await self.checkpointer.flush()
            except Exception as exc:
                self.events.emit(
                    "flush_error",
                    f"checkpoint flush failed, will retry: {exc}",
                    level=Level.ERROR,
                )

    async def _tick_loop(self) -> None:
        """Rates, once a tick, from counters the workers bump per batch."""
        last = time.monotonic()
        previous: dict[str, int] = {}
        previous_total = self.state.records_total
        while True:
            await asyncio.sleep(self.options.tick_interval)
            now = time.monotonic()
            dt = max(now - last, 1e-6)
            last = now
            state = self.state
            for sid, view in state.shards.items():
                rate = (view.records - previous.get(sid, view.records)) / dt
                previous[sid] = view.records
                if rate != view.rate:
                    view.rate = rate
                    state.touch(view)
            state.rate = (state.records_total - previous_total) / dt
            previous_total = state.records_total

    async def _command_loop(self) -> None:
        """Commands written by other processes (the CLI) are applied here, between batches."""
        while True:
            await asyncio.sleep(self.options.command_interval)
            try:
                await asyncio.shield(self.changes.apply_pending())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.events.emit(
                    "command_error", f"reading operator commands failed: {exc}", level=Level.ERROR
                )
