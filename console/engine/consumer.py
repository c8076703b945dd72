"""The consumer: owns discovery, workers, checkpoints and control for one stream.

    async with Consumer(source, store, processor, options) as consumer:
        await consumer.run(duration=60)

``stop()`` is idempotent: workers stop fetching, finish the batch in hand, the checkpoints are
flushed, the stream's lock is released. ``request_stop()`` is the synchronous form for signal
handlers. What the consumer is doing is always in ``consumer.state`` (a versioned snapshot) and
``consumer.events``.
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

from console.checkpoints.base import (
    CheckpointChange,
    CheckpointStore,
    HistoryEntry,
    StreamRecord,
)
from console.engine.checkpointing import Checkpointer
from console.engine.control import (
    Action,
    ControlError,
    ControlRequest,
    ControlResult,
    Plan,
    plan_change,
)
from console.engine.events import EventLog, Level
from console.engine.lineage import Lineage
from console.engine.offline import checkpoint_position, undo_scope
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
    Position,
    PositionKind,
    Record,
    Shard,
    ShardContext,
    ShardStatus,
    format_ts,
)
from console.processors.base import Processor
from console.sources.base import (
    FatalSourceError,
    RetryableError,
    StreamInfo,
    StreamSource,
)

log = logging.getLogger("shard_console.engine")


class ConsumerStatus(StrEnum):
    CREATED = "created"
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
    ) -> None:
        self.source = source
        self.store = store
        self.processor = processor
        self.options = options or ConsumerOptions()
        self.events = events or EventLog()
        self.state = EngineState(source.stream, source.kind, source.location)
        self.status = ConsumerStatus.CREATED
        self.failure: str | None = None  # why the run failed, if it did
        self.key = source.stream  # the store's key for the stream; the ARN once known
        self.checkpointer = Checkpointer(
            store,
            self.key,
            self.state,
            processor.flush,
            history_interval=self.options.history_interval,
        )
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._discover_now = asyncio.Event()
        self._control_lock = asyncio.Lock()
        self._workers: dict[str, tuple[ShardWorker, asyncio.Task[WorkerExit]]] = {}
        self._failed: set[str] = set()
        self._lineage = Lineage.build(())
        self._fingerprint: tuple[tuple[str, str | None], ...] | None = None
        self._learned: dict[str, Shard] = {}  # children seen in ChildShards, not listed yet
        self._lost_reported: set[str] = set()
        self._holding = False  # start-up: no workers until pending commands are applied
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

    async def start(self, info: StreamInfo | None = None) -> None:
        """Describe the stream (unless ``info`` is given), take its lock in the store, load
        checkpoints, discover shards and start workers."""
        if self.status is not ConsumerStatus.CREATED:
            raise RuntimeError(f"a Consumer starts once (it is {self.status.value})")
        self.status = ConsumerStatus.STOPPING  # until running; a concurrent stop() waits
        try:
            if info is None:
                info = await self.source.describe()
            self.state.info = info
            self.key = info.arn or self.source.stream
            self.checkpointer = Checkpointer(
                self.store,
                self.key,
                self.state,
                self.processor.flush,
                history_interval=self.options.history_interval,
            )
            await self.store.acquire(self.key)
        except BaseException:
            self.status = ConsumerStatus.STOPPED
            self._stopped.set()
            raise
        try:
            record = await self.store.stream_record(self.key)
            checkpoints = await self.store.load(self.key)
            self.checkpointer.load(checkpoints)
            fresh = record is None and not checkpoints
            await self.processor.open()
            self.status = ConsumerStatus.RUNNING
            # Workers wait until the commands written while no consumer ran are applied: the
            # next start honours them before reading anything.
            self._holding = True
            await self._first_discovery(fresh)
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
            await self._apply_pending()
            self._holding = False
            self._reconcile()
        except BaseException:
            await self._shutdown()
            raise
        self._tasks = [
            self._loop_task(self._discovery_loop(), "discovery"),
            self._loop_task(self._flush_loop(), "checkpoint flush"),
            self._loop_task(self._tick_loop(), "rates"),
            self._loop_task(self._command_loop(), "operator commands"),
        ]
        self.events.emit(
            "started",
            f"consuming '{self.source.stream}' ({self.source.kind}, {self.source.location}): "
            f"{len(self._lineage)} shards, {len(self._workers)} reading",
        )

    def request_stop(self, reason: str | None = None) -> None:
        """Ask the run to end; safe from a signal handler. ``run()`` returns, then ``stop()``."""
        if reason and not self._stop_requested.is_set():
            self.events.emit("stopping", reason)
        self._stop_requested.set()

    async def run(self, duration: float | None = None) -> None:
        """Consume until stopped, failed, out of ``max_records`` or past ``duration``."""
        if self.status is ConsumerStatus.CREATED:
            await self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration):
                await self._stop_requested.wait()
        await self.stop()

    async def stop(self) -> None:
        if self.status is ConsumerStatus.CREATED:
            self.status = ConsumerStatus.STOPPED
            self._stopped.set()
            return
        if self.status is ConsumerStatus.STOPPED:
            return
        if self.status is ConsumerStatus.STOPPING and self._tasks == []:
            # start() failed half-way and is cleaning up, or a second stop() is waiting.
            await self._stopped.wait()
            return
        self.status = ConsumerStatus.STOPPING
        self._stop_requested.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Stop workers (each finishes its batch), flush, close, release. Runs once."""
        try:
            async with self._control_lock:
                for worker, _ in list(self._workers.values()):
                    worker.stop()
                running = [task for _, task in self._workers.values()]
                if running:
                    await asyncio.wait(running)
                if self._background:
                    await asyncio.gather(*self._background, return_exceptions=True)
                try:
                    if self.store_held:
                        await self.checkpointer.flush()
                except Exception as exc:
                    self._fail_run(f"the final checkpoint flush failed: {exc}")
        finally:
            try:
                await self.processor.close()
            except Exception as exc:
                self._fail_run(f"the processor failed to close: {type(exc).__name__}: {exc}")
            finally:
                await self.store.release(self.key)
                self.status = ConsumerStatus.STOPPED
                self._stopped.set()
                self.events.emit(
                    "stopped",
                    f"stopped after {self.state.records_total} records; checkpoints flushed",
                )

    @property
    def store_held(self) -> bool:
        holds = getattr(self.store, "holds", None)
        return bool(holds(self.key)) if callable(holds) else True

    @property
    def stopped(self) -> asyncio.Event:
        return self._stopped

    @property
    def lineage(self) -> Lineage:
        return self._lineage

    @property
    def read_only(self) -> bool:
        return self.options.read_only

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

    # -- discovery --------------------------------------------------------------------------

    async def _discovery_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.discovery_interval):
                    await self._discover_now.wait()
            self._discover_now.clear()
            try:
                await self._discover()
            except FatalSourceError as exc:
                self._fail_run(f"shard discovery failed: {exc}")
                return
            except Exception as exc:  # retryable, or the store: try again next round
                self.events.emit(
                    "discovery_error",
                    f"shard discovery failed, will retry: {exc}",
                    level=Level.WARNING,
                )

    async def _first_discovery(self, fresh: bool) -> None:
        """The first listing must succeed before anything runs: throttling or a 5xx at start-up
        is retried with backoff (about half a minute in all) before the start fails."""
        backoff = Backoff(self.options.backoff_base, max(self.options.backoff_cap, 1.0))
        for attempt in range(1, 9):
            try:
                await self._discover(fresh=fresh)
                return
            except RetryableError as exc:
                if attempt == 8:
                    raise
                self.events.emit(
                    "discovery_error",
                    f"listing shards failed, retrying: {exc}",
                    level=Level.WARNING,
                )
                await asyncio.sleep(backoff.next_delay())

    def trigger_discovery(self) -> None:
        self._discover_now.set()

    async def _discover(self, fresh: bool = False) -> None:
        shards = await self.source.list_shards()
        fingerprint = tuple((s.shard_id, s.ending_sequence_number) for s in shards)
        if fingerprint == self._fingerprint:
            self._reconcile()  # an unchanged shard list costs no rework
            return
        first = self._fingerprint is None
        self._fingerprint = fingerprint
        known = self._lineage.shards
        changed = [s for s in shards if known.get(s.shard_id) != s]
        if changed:
            await self.store.save_shards(self.key, changed)
        listed = {s.shard_id for s in shards}
        for sid in [sid for sid in self._learned if sid in listed]:
            del self._learned[sid]
        self._set_lineage(Lineage.build([*shards, *self._learned.values()]))
        if not first:
            new = [s for s in changed if s.shard_id not in known]
            closed = [
                s.shard_id
                for s in changed
                if s.is_closed and s.shard_id in known and not known[s.shard_id].is_closed
            ]
            if new or closed:
                parts = []
                if new:
                    parts.append(
                        "new "
                        + ", ".join(
                            f"{s.shard_id} (from {'+'.join(s.parents) or 'none'})" for s in new
                        )
                    )
                if closed:
                    parts.append("closed " + ", ".join(closed))
                self.events.emit("resharded", "resharding: " + "; ".join(parts))
        if fresh:
            await self._write_initial_positions(shards)
        self._reconcile()

    async def _write_initial_positions(self, shards: list[Shard]) -> None:
        """First start of this stream in this database: every shard gets a checkpoint, so a
        shard without one later is new and starts at TRIM_HORIZON.

        LATEST is stored as AT_TIMESTAMP(now): a restart before the first record then resumes
        from the same instant instead of skipping what arrived meanwhile. With LATEST, closed
        shards are not read at all."""
        initial = self.options.initial_position
        now = time.time()
        position = Position.at_timestamp(now) if initial.kind is PositionKind.LATEST else initial
        changes = []
        for shard in shards:
            if initial.kind is PositionKind.LATEST and shard.is_closed:
                cp = Checkpoint(shard.shard_id, position, CheckpointStatus.DONE)
                note = "closed before the first start; initial position is latest"
            else:
                cp = Checkpoint(shard.shard_id, position)
                note = f"first start; initial position {initial.encode()}"
            changes.append(
                CheckpointChange(
                    cp,
                    HistoryEntry(
                        shard_id=shard.shard_id,
                        cause="start",
                        actor="engine",
                        new_position=cp.position,
                        new_status=cp.status.value,
                        note=note,
                    ),
                )
            )
        await self.checkpointer.write(changes)

    def _set_lineage(self, lineage: Lineage) -> None:
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
            if cp is not None and not cp.status.finished and sid not in self._lost_reported:
                self._report_lost(sid, cp)
            del state.shards[sid]
        self._lineage = lineage
        state.set_lineage(lineage)

    def _report_lost(self, sid: str, cp: Checkpoint) -> None:
        self._lost_reported.add(sid)
        message = (
            f"{sid} left the stream (retention) before it was read to the end; records after "
            f"{cp.position.describe()} are lost"
        )
        self.events.emit("retention_loss", message, level=Level.ERROR, shard_id=sid)
        self._spawn(
            self.store.add_history(
                self.key,
                [
                    HistoryEntry(
                        shard_id=sid,
                        cause="retention",
                        actor="engine",
                        old_position=cp.position,
                        new_position=None,
                        new_status=None,
                        note=message,
                    )
                ],
            ),
            "recording a retention loss",
        )

    def _on_children(self, children: tuple[Shard, ...]) -> None:
        """ChildShards at a shard's end: known at once, without waiting for a listing."""
        new = [c for c in children if c.shard_id not in self._lineage]
        if not new:
            return
        for child in new:
            self._learned[child.shard_id] = child
        self._set_lineage(Lineage.build([*self._lineage.shards.values(), *new]))
        self.events.emit(
            "resharded",
            "resharding: new "
            + ", ".join(f"{c.shard_id} (from {'+'.join(c.parents) or 'none'})" for c in new),
        )
        self._discover_now.set()

    # -- workers ----------------------------------------------------------------------------

    def _reconcile(self) -> None:
        """Give every shard the status its checkpoint and parents call for, and start a worker
        for each shard that may read and has none."""
        if self.status is not ConsumerStatus.RUNNING or self._holding:
            return
        lineage = self._lineage
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
            else:
                self._start_worker(shard, cp)

    def _start_worker(self, shard: Shard, cp: Checkpoint | None) -> None:
        sid = shard.shard_id
        position = cp.position if cp is not None else Position.trim_horizon()
        info = self.state.info
        if (
            cp is not None
            and cp.arrival is not None
            and info is not None
            and position.sequence_number is not None
            and cp.arrival < time.time() - info.retention_hours * 3600
        ):
            message = (
                f"{sid}: checkpoint from {format_ts(cp.arrival)} is older than the stream's "
                f"retention ({info.retention_hours:g} h); continuing at TRIM_HORIZON: records "
                "after it may have been lost"
            )
            self.events.emit("retention_loss", message, level=Level.ERROR, shard_id=sid)
            self._spawn(
                self.store.add_history(
                    self.key,
                    [
                        HistoryEntry(
                            shard_id=sid,
                            cause="retention",
                            actor="engine",
                            old_position=position,
                            new_position=Position.trim_horizon(),
                            new_status=CheckpointStatus.OPEN.value,
                            note=message,
                        )
                    ],
                ),
                "recording a retention loss",
            )
            position = Position.trim_horizon()
        for parent in self._lineage.gone_parents(sid):
            parent_cp = self.checkpointer.get(parent)
            if (
                parent_cp is not None
                and not parent_cp.status.finished
                and parent not in self._lost_reported
            ):
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
            kids = self._lineage.children.get(sid, ())
            self.events.emit(
                "shard_done",
                f"{sid} done" + (f"; children: {', '.join(kids)}" if kids else ""),
                shard_id=sid,
            )
            self._reconcile()
            self._discover_now.set()
        elif outcome is WorkerExit.FAILED:
            self._failed.add(sid)

    async def _stop_worker(self, sid: str) -> ShardWorker | None:
        entry = self._workers.get(sid)
        if entry is None:
            return None
        worker, task = entry
        worker.stop()
        await asyncio.wait([task])
        return worker

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
                await asyncio.shield(self._apply_pending())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.events.emit(
                    "command_error", f"reading operator commands failed: {exc}", level=Level.ERROR
                )

    async def _apply_pending(self) -> None:
        if self.options.read_only:
            return  # a read-only console applies nothing; a writable consumer will
        async with self._control_lock:
            if self.status is not ConsumerStatus.RUNNING:
                return
            for command in await self.store.pending_commands(self.key):
                try:
                    request = ControlRequest.from_command(command)
                except ControlError as exc:
                    await self.store.finish_command(command.id, False, str(exc))
                    continue
                await self._apply_locked(command.id, request)

    # -- control ----------------------------------------------------------------------------

    async def control(self, request: ControlRequest) -> ControlResult:
        """Apply an operator request now: it is recorded as a command, applied between
        batches, and its result recorded. The TUI and the CLI both end here."""
        if self.options.read_only:
            return ControlResult(0, False, "read-only: operator changes are refused")
        async with self._control_lock:
            if self.status is not ConsumerStatus.RUNNING:
                raise ControlError(f"the consumer is {self.status.value}")
            command_id = await self.store.add_command(
                self.key, request.shard_id, request.action.value, request.to_args(), request.actor
            )
            return await self._apply_locked(command_id, request)

    async def preview(self, request: ControlRequest) -> Plan:
        """What ``request`` would write, validated, without writing it (dialogs, --dry-run)."""
        affected, undo_entries = await self._scope(request, None)
        del affected
        entry = self._workers.get(request.shard_id or "")
        failing = entry[0].failing_record if entry is not None else None
        return self._plan(request, None, undo_entries, failing)

    async def history(self, shard_id: str | None = None, limit: int = 50) -> list[HistoryEntry]:
        return await self.store.history(self.key, shard_id, limit)

    async def checkpoint_position(self, shard_id: str, entry_id: int) -> Position:
        return await checkpoint_position(self.store, self.key, shard_id, entry_id)

    def _default_position(self, sid: str) -> Position:
        return Position.trim_horizon()

    async def _scope(
        self, request: ControlRequest, command_id: int | None
    ) -> tuple[set[str], list[HistoryEntry]]:
        """The shards a request touches (their workers stop first), and for an undo the rows
        of the change it takes back."""
        if request.action is Action.UNDO:
            entries = await undo_scope(self.store, self.key, request, command_id)
            return {h.shard_id for h in entries}, entries
        if request.action is Action.REPLAY:
            return set(self._lineage.shards), []
        sid = request.shard_id or ""
        if sid not in self._lineage and self.checkpointer.get(sid) is None:
            raise ControlError(f"unknown shard '{sid}': it is not in stream '{self.source.stream}'")
        affected = {sid}
        if request.action is Action.REWIND:
            affected.update(self._lineage.descendants(sid))
        return affected, []

    def _plan(
        self,
        request: ControlRequest,
        command_id: int | None,
        undo_entries: list[HistoryEntry],
        failing: Record | None,
    ) -> Plan:
        info = self.state.info
        return plan_change(
            request,
            checkpoints=self.checkpointer.all(),
            lineage=self._lineage,
            default_position=self._default_position,
            now=time.time(),
            command_id=command_id,
            failing_record=failing,
            undo_entries=undo_entries,
            retention_hours=info.retention_hours if info is not None else None,
        )

    async def _apply_locked(self, command_id: int, request: ControlRequest) -> ControlResult:
        affected: set[str] = set()
        try:
            affected, undo_entries = await self._scope(request, command_id)
            # Held from here until the change is written: discovery and finishing workers
            # reconcile while we await, and must not restart a shard from its old position.
            self._changing = affected
            failing = None
            for sid in affected:
                worker = await self._stop_worker(sid)
                if worker is not None and sid == request.shard_id:
                    failing = worker.failing_record
            plan = self._plan(request, command_id, undo_entries, failing)
            await self.checkpointer.write(plan.changes, finish=(command_id, plan.summary))
            self._failed.difference_update(affected)
            for sid in affected:
                view = self.state.view(sid)
                if view.status is ShardStatus.FAILED:
                    self.state.set_status(view, ShardStatus.READY)
            self.events.emit("operator", f"{request.actor}: {plan.summary}")
            return ControlResult(command_id, True, plan.summary)
        except ControlError as exc:
            await self.store.finish_command(command_id, False, str(exc))
            self.events.emit("operator", f"{request.actor}: refused: {exc}", level=Level.WARNING)
            return ControlResult(command_id, False, str(exc))
        finally:
            self._changing = set()
            self._reconcile()
