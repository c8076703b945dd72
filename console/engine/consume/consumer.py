"""The consumer: its life-cycle, and the wiring of discovery, workers, checkpoints and changes.

    async with Consumer(source, store, processor, options) as consumer:
        await consumer.run(duration=60)

The parts have modules of their own: :mod:`discovery` lists shards and keeps the lineage,
:mod:`scheduling` decides which shard may read and :mod:`runner` runs its :mod:`worker`,
:mod:`checkpointing` batches checkpoints, console.engine.changes applies operator changes, and
the ownership strategy (console.engine.ownership: a SQLite database's lock, or a fleet's
leases) decides which shards are this process's, when progress is flushed and how a change is
written. The consumer starts and stops them, runs its loops (discovery, rates, following the
ownership) and keeps ``state``, the versioned snapshot front ends read.

``stop()`` is idempotent, and safe at any moment, during ``start()`` too: workers stop fetching,
finish the batch in hand, checkpoints are flushed, the stream is left (a lock given back,
leases given back).
``request_stop()`` is its synchronous form, for signal handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any, cast

from console.checkpoints.base import CheckpointStore, Lockable, LockedStore, StreamRecord
from console.engine.changes.plan import ControlRequest, ControlResult
from console.engine.changes.running import RunningTransport
from console.engine.changes.service import ChangeService, Preview, checkpoint_position
from console.engine.consume.checkpointing import Checkpointer
from console.engine.consume.discovery import Discovery
from console.engine.consume.fanout import FanOut
from console.engine.consume.options import ConsumerOptions as ConsumerOptions  # noqa: PLC0414
from console.engine.consume.options import worker_options
from console.engine.consume.poison import ParkingLot, parked_in
from console.engine.consume.redrive import Redriver
from console.engine.consume.runner import ShardRunner
from console.engine.consume.worker import RecordBudget
from console.engine.events import EventLog, Level
from console.engine.lineage import Lineage
from console.engine.ownership.base import Duties, Ownership
from console.engine.ownership.lock import StreamLock
from console.engine.read.browse import PAGE, Page, browse
from console.engine.retry import Backoff
from console.engine.snapshot import snapshot_doc
from console.engine.state import EngineState, Rates
from console.model import HistoryEntry, Position
from console.processors.base import Processor
from console.sources.base import FatalSourceError, StreamInfo, StreamSource, describe_at_start

log = logging.getLogger("shard_console.engine")


class ConsumerStatus(StrEnum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Consumer:
    confirm_by_name = False  # the console runs this consumer: a yes is enough

    def __init__(
        self,
        source: StreamSource,
        store: CheckpointStore,
        processor: Processor,
        options: ConsumerOptions | None = None,
        events: EventLog | None = None,
        info: StreamInfo | None = None,
        ownership: Callable[[EngineState, EventLog], Ownership] | None = None,
        parking: ParkingLot | None = None,
    ) -> None:
        """``info``: what ``source.describe()`` said, when the caller has asked already.
        ``parking``: where ``--on-failure park`` puts the records it parks (the store, then a
        dead-letter destination: console.engine.consume.poison.Parking; by default the store).
        ``ownership``: makes the strategy that decides who reads which shard, given the
        consumer's snapshot and events (console.cli.wiring chooses it); by default the store's
        whole-stream lock (the store must be a SQLite one: console.engine.ownership.lock)."""
        self.source = source
        self.store = store
        self.processor = processor
        self.options = options or ConsumerOptions()
        self.events = events or EventLog()
        self.state = EngineState(source.stream, source.kind, source.location)
        self.state.info = info
        self.status = ConsumerStatus.CREATED
        self.failure: str | None = None  # why the run failed, if it did
        self.ownership: Ownership = (ownership or self._stream_lock)(self.state, self.events)
        self.checkpointer = Checkpointer(
            self.ownership,
            self.state,
            processor.flush,
            history_interval=self.options.history_interval,
        )
        self.discovery = Discovery(source, self.events)
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._discover_now = asyncio.Event()
        self._starting: asyncio.Task[None] | None = None
        self._opened = False  # the processor: closed at the end only if it was opened
        self._closing: asyncio.Task[None] | None = None
        self._start_cancelled = False
        self._acquired = False
        self._tasks: list[asyncio.Task[None]] = []
        budget = (
            RecordBudget(self.options.max_records, self._budget_spent)
            if self.options.max_records is not None
            else None
        )
        self.fan_out = (
            FanOut(
                source,
                self.options.fan_out,
                self.events,
                self.state,
                deregister_on_exit=self.options.deregister_on_exit,
                options=self.options.fan_out_options,
            )
            if self.options.fan_out
            else None
        )
        self.shards = ShardRunner(
            source=source,
            store=store,
            ownership=self.ownership,
            processor=processor,
            checkpointer=self.checkpointer,
            discovery=self.discovery,
            state=self.state,
            events=self.events,
            options=worker_options(self.options, source),
            budget=budget,
            parking=(parking or parked_in(store)) if self.options.failure.park else None,
            fail=self._fail_run,
            discover_now=self._discover_now.set,
        )
        # Operator changes reach this consumer's shards between its batches, written as its
        # ownership strategy writes (times resolved to records first on a lease table).
        read_only, resolve = self.options.read_only, self.ownership.resolves
        self.transport = RunningTransport(
            self.shards, store, self.checkpointer, self.events, read_only=read_only, resolve=resolve
        )
        # ``parked redrive`` queued by the command line: through this consumer's processor.
        timeout = self.options.processor_timeout
        redrive = Redriver(self.shards, store, processor, self.events, source.stream, timeout)
        self.transport.redrive = redrive
        self.changes = ChangeService(self.transport, events=self.events, read_only=read_only)

    def _stream_lock(self, state: EngineState, events: EventLog) -> Ownership:
        store = self.store
        if not isinstance(store, Lockable):
            raise TypeError(
                f"{type(store).__name__} is not a store one process holds whole: pass the "
                "ownership strategy that goes with it (console.engine.ownership)"
            )
        return StreamLock(
            cast(LockedStore, store),
            events,
            initial=self.options.initial_position,
            flush_interval=self.options.flush_interval,
            command_interval=self.options.command_interval,
        )

    @property
    def key(self) -> str:
        """The store's key for the stream: its ARN once described, else its name."""
        return self.discovery.key

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
        self.shards.running = True
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
            info = self.state.info or await describe_at_start(self.source)
            self.state.info = info
            self.discovery.key = info.arn or self.source.stream
            await self.ownership.join(self.key, self.checkpointer)
            self._acquired = True  # ours to leave (a failed join leaves nothing held)
            if self.fan_out is not None:  # only once the stream is ours to read
                await self.fan_out.register(info)
                self.shards.feed_for = self.fan_out.feed
            record = await self.store.stream_record(self.key)
            checkpoints = await self.store.load(self.key)
            self.checkpointer.load(checkpoints)
            self._opened = True
            for warning in await self.processor.open() or ():
                self.events.emit("processor_warning", warning, level=Level.WARNING)
            backoff = Backoff(self.options.backoff_base, max(self.options.backoff_cap, 1.0))
            shards = await self.discovery.first_list(backoff)
            self.shards.set_lineage(self.discovery.lineage)
            await self.ownership.listed(shards)
            await self.ownership.prime(shards, fresh=record is None and not checkpoints)
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
            # Commands written while no consumer ran are honoured before anything is read (where
            # the store queues them); then the strategy's loops: flushes, renewals, takes.
            await self.ownership.start(
                Duties(
                    publish=lambda: self._publish(running=True),
                    apply_commands=self.transport.apply_pending,
                    fail=self._fail_run,
                )
            )
        except BaseException:
            # The start is over: a stop now must not cancel the clean-up, nor replace the error
            # it is about to raise with a CancelledError.
            self._start_cancelled = True
            await self._shutdown()
            raise
        self.status = ConsumerStatus.RUNNING
        self.shards.enabled = True
        self.shards.reconcile()
        self._tasks = [
            self._loop_task(self._discovery_loop(), "discovery"),
            self._loop_task(Rates(self.state).run(self.options.tick_interval), "rates"),
            self._loop_task(self._ownership_loop(), "ownership"),
        ]
        self.events.emit(
            "started",
            f"consuming '{self.source.stream}' ({self.source.kind}, {self.source.location}): "
            f"{len(self.lineage)} shards, {self.shards.reading} reading"
            + (f"; worker {self.state.worker_id} of the fleet" if self.state.worker_id else ""),
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
        if me is not None and (me is self._closing or self.shards.is_worker(me)):
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
            self.shards.running = self.shards.enabled = False
            self.ownership.quiesce()  # take nothing more
            self._closing = asyncio.create_task(self._close(started), name="consumer stop")
        await asyncio.shield(self._closing)

    async def _close(self, started: bool) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        flushed = False
        try:
            async with self.transport.lock:
                await self.shards.stop_all()
                if self.fan_out is not None and self._acquired:
                    await self.fan_out.close()
                try:
                    if self._opened and self._acquired:
                        await self.checkpointer.flush()
                        flushed = True
                except Exception as exc:
                    self._fail_run(f"the final checkpoint flush failed: {exc}")
                if self._opened and self._acquired:
                    await self._publish(running=False)
        finally:
            try:
                if self._opened:
                    await self.processor.close()
            except Exception as exc:
                self._fail_run(f"the processor failed to close: {type(exc).__name__}: {exc}")
            finally:
                if self._acquired:
                    await self.ownership.leave()
                self._set_stopped()
                if started:
                    how = (
                        "checkpoints flushed"
                        if flushed
                        else "the final checkpoint flush failed: what came after the last "
                        "flushed checkpoint is read again at the next start"
                    )
                    self.events.emit(
                        "stopped", f"stopped after {self.state.records_total} records; {how}"
                    )

    def _set_stopped(self) -> None:
        self.status = ConsumerStatus.STOPPED
        self._stopped.set()

    @property
    def stopped(self) -> asyncio.Event:
        return self._stopped

    @property
    def lineage(self) -> Lineage:
        return self.discovery.lineage

    @property
    def ready(self) -> bool:
        """Started: the stream described, the checkpoints loaded, the workers running."""
        return self.status is ConsumerStatus.RUNNING and self.failure is None

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

    # -- the engine's face to front ends (console.engine.api.Engine) --------------------------

    async def control(self, request: ControlRequest) -> ControlResult:
        return await self.changes.control(request)

    async def preview(self, request: ControlRequest) -> Preview:
        return await self.changes.preview(request)

    async def history(self, shard_id: str | None = None, limit: int = 50) -> list[HistoryEntry]:
        return await self.store.history(self.key, shard_id, limit)

    async def checkpoint_position(self, shard_id: str, entry_id: int) -> Position:
        return await checkpoint_position(self.store, self.key, shard_id, entry_id)

    # -- discovery ----------------------------------------------------------------------------

    async def browse(self, shard_id: str, start: Position | None = None, limit: int = PAGE) -> Page:
        """A page of the shard's records (console.engine.read.browse), read without moving
        anything."""
        view = self.state.shards.get(shard_id)
        return await browse(
            self.source, self.shards.pacers[shard_id], shard_id, start, limit,
            failing=self.shards.failing_record(shard_id),
            error=view.last_error if view is not None else None,
            checkpoint=self.checkpointer.get(shard_id),
        )  # fmt: skip

    def trigger_discovery(self) -> None:
        self._discover_now.set()

    async def _discovery_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.discovery_interval):
                    await self._discover_now.wait()
            self._discover_now.clear()
            try:
                changed, lineage = await self.discovery.refresh()
                if changed:
                    await self.ownership.listed(changed)
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
                self.shards.set_lineage(lineage)
            self.shards.reconcile()

    # -- background loops -------------------------------------------------------------------

    async def _publish(self, running: bool) -> None:
        """The state, for a console in another process (attach --db). A convenience: a failure
        is said, never a reason to stop."""
        try:
            doc = snapshot_doc(self.state, self.events, running=running)
            await self.store.publish(self.key, doc)
        except Exception as exc:
            self.events.emit(
                "publish_error", f"publishing the snapshot failed: {exc}", level=Level.WARNING
            )

    async def _ownership_loop(self) -> None:
        """What this process may read changed (a lease taken or lost, the fleet scanned): the
        workers follow at once."""
        changed = self.ownership.changed
        while True:
            await changed.wait()
            changed.clear()
            self.shards.reconcile()
