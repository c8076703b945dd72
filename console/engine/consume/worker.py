"""One loop per active shard: fetch, process, advance the checkpoint, repeat.

The loop never drops a record. A batch in hand is processed until the processor returns (errors
are retried with backoff, the shard shown as ``failing``); only then does the checkpoint move.
Stopping interrupts a fetch or a sleep, never a processor call, so "stop" always means "finish
the batch in hand, then stop".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

from console.checkpoints.base import CheckpointChange
from console.engine.consume.checkpointing import Checkpointer
from console.engine.consume.feeds import Feed, PollingFeed
from console.engine.consume.poison import (
    Failure,
    FailurePolicy,
    ParkingLot,
    ParkRate,
    announce,
    isolate,
    named,
    parked,
)
from console.engine.events import EventLog, Level
from console.engine.read.pacing import Pacer
from console.engine.read.resume import drop_through, fetch_plan
from console.engine.retry import Backoff
from console.engine.state import EngineState, ShardView
from console.model import (
    Batch,
    Checkpoint,
    CheckpointStatus,
    HistoryEntry,
    Position,
    PositionKind,
    Record,
    Shard,
    ShardContext,
    ShardStatus,
    seq_int,
)
from console.processors.base import ParkRecord, Processor
from console.redact import REDACTOR
from console.settings import default
from console.sources.base import (
    ExpiredIteratorError,
    FatalSourceError,
    RetryableError,
    SourceError,
    StreamSource,
    TrimmedDataError,
)

T = TypeVar("T")


class WorkerExit(Enum):
    ENDED = "ended"  # read to the end of a closed shard; checkpoint written as done
    STOPPED = "stopped"  # asked to stop; the batch in hand was finished
    FAILED = "failed"  # a fatal error; the reason is on the shard's row


class ProcessorHung(Exception):
    """The processor did not return within the timeout. The run must stop: a hung call cannot
    be taken back, and retrying beside it could process the batch twice at once."""


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    limit: int
    min_call_interval: float
    idle_interval: float = default("idle_interval")
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    processor_backoff_cap: float = 30.0
    processor_timeout: float | None = default("processor_timeout")
    failure: FailurePolicy = field(default_factory=FailurePolicy)


class RecordBudget:
    """``--max-records``: the total the whole run may process, taken batch by batch."""

    def __init__(self, limit: int, on_exhausted: Callable[[], None]) -> None:
        self.remaining = limit
        self._on_exhausted = on_exhausted

    def take(self, n: int) -> int:
        k = min(n, self.remaining)
        self.remaining -= k
        if self.remaining == 0:
            self._on_exhausted()
        return k


class ShardWorker:
    def __init__(
        self,
        *,
        shard: Shard,
        start: Position,
        source: StreamSource,
        processor: Processor,
        checkpointer: Checkpointer,
        state: EngineState,
        events: EventLog,
        options: WorkerOptions,
        ctx: ShardContext,
        budget: RecordBudget | None = None,
        on_children: Callable[[tuple[Shard, ...]], None] | None = None,
        on_retention_loss: Callable[[str, Position], None] | None = None,
        pacer: Pacer | None = None,
        feed: Feed | None = None,
        parking: ParkingLot | None = None,
        worker_id: str | None = None,
        key: str | None = None,
    ) -> None:
        """``on_retention_loss(message, position lost)``: the stream no longer holds the
        position; the worker reads on from TRIM_HORIZON (the runner says so and records it).
        ``pacer``: the shard's GetRecords budget, shared with the records browser.
        ``feed``: where batches come from (default: GetRecords polling at the pacer's pace).
        ``parking``: where records the processor keeps failing on go, with ``--on-failure
        park`` (console.engine.consume.poison); ``worker_id`` is written with them, and
        ``key``, the store's key for the stream (its ARN; default: the stream's name)."""
        self.shard = shard  # discovery replaces it when the shard closes
        self.start = start
        self.source = source
        self.processor = processor
        self.checkpointer = checkpointer
        self.state = state
        self.events = events
        self.options = options
        self.ctx = ctx
        self.budget = budget
        self.on_children = on_children
        self.on_retention_loss = on_retention_loss
        self.failing_record: Record | None = None
        self._stop = asyncio.Event()
        self.pacer = pacer or Pacer(options.min_call_interval)
        self.feed: Feed = feed or PollingFeed(source, shard.shard_id, self.pacer, state)
        state.update(shard.shard_id, mode=self.feed.mode)
        self.parking = parking
        self.worker_id = worker_id
        self.key = key or ctx.stream
        self._park_rate = ParkRate()
        self._parked: set[int] = set()  # ids of the batch's records just parked
        self.position = start
        self.arrival: float | None = None

    @property
    def shard_id(self) -> str:
        return self.shard.shard_id

    @property
    def view(self) -> ShardView:
        return self.state.view(self.shard.shard_id)

    def stop(self) -> None:
        self._stop.set()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> WorkerExit:
        try:
            return await self._run()
        finally:
            self._stop.set()
            await self.feed.aclose()

    async def _run(self) -> WorkerExit:
        sid = self.shard_id
        self.state.set_status(sid, ShardStatus.ACTIVE)
        self.state.update(sid, position=self.position)
        if self._past_end():
            await self._finish()
            return WorkerExit.ENDED
        fetch_at, drop = fetch_plan(self.position)
        feed = self.feed
        backoff = Backoff(self.options.backoff_base, self.options.backoff_cap)
        limit = self.options.limit
        while not self._stop.is_set():
            batch: Batch | None
            try:
                batch = await self._until_stopped(feed.read(fetch_at, limit))
                if batch is None:
                    break
            except ExpiredIteratorError:
                # A new iterator after the last record delivered to the processor.
                feed.restart()
                fetch_at, drop = fetch_plan(self.position)
                self.state.count_error(sid, "expired")
                self.events.emit(
                    "iterator_expired",
                    f"{self.shard_id}: iterator expired; renewed {self.position.describe()}",
                    shard_id=self.shard_id,
                )
                continue
            except TrimmedDataError as exc:
                feed.restart()
                lost_at = self.position
                self.position = fetch_at = Position.trim_horizon()
                drop = None
                message = (
                    f"{self.shard_id}: position is older than the stream's retention ({exc}); "
                    "continuing at TRIM_HORIZON, records in between are lost"
                )
                if self.on_retention_loss is not None:
                    self.on_retention_loss(message, lost_at)
                else:
                    self.events.emit(
                        "retention_loss", message, level=Level.ERROR, shard_id=self.shard_id
                    )
                continue
            except RetryableError as exc:
                if await self._retry(exc, backoff):
                    break
                continue
            except FatalSourceError as exc:
                self._fail(exc)
                return WorkerExit.FAILED
            except SourceError as exc:  # pragma: no cover - every SourceError is one of the above
                self._fail(exc)
                return WorkerExit.FAILED

            if self.view.read_failing_since is not None:
                self.state.update(sid, read_failing_since=None)  # a read got through
            if self.view.status is ShardStatus.FAILING and self.failing_record is None:
                self._recovered()
            backoff.reset()
            raw = batch.records
            records = raw
            if drop is not None and records:
                records = drop_through(records, *drop)
                drop = None
            cut = False  # --max-records ended inside this batch: the rest is read next time
            processed = False
            if records:
                if self.budget is not None:
                    n = self.budget.take(len(records))
                    cut = n < len(records)
                    records = records[:n]
                if records:
                    if not await self._process(records):
                        break  # stopped while retrying: this batch is not checkpointed
                    last = records[-1]
                    self.position = Position.after_sequence(
                        last.sequence_number, last.sub_sequence_number
                    )
                    self.arrival = last.approximate_arrival
                    self.checkpointer.advance(self.shard_id, self.position, self.arrival)
                    if self._parked:  # parked, not processed: not counted as such
                        gone, self._parked = self._parked, set()
                        records = [r for r in records if id(r) not in gone]
                    self.state.processed(
                        sid,
                        records=records,
                        position=self.position,
                        arrival=self.arrival,
                        lag_ms=batch.millis_behind_latest,
                    )
                    processed = True
            if not processed:
                self.state.update(sid, lag_ms=batch.millis_behind_latest)
            if cut:
                break  # not the shard's end, whatever the iterator says
            if batch.child_shards and self.on_children is not None:
                self.on_children(batch.child_shards)
            if batch.next_iterator is None or self._past_end():
                await self._finish()
                return WorkerExit.ENDED
            if self.budget is not None and self.budget.remaining == 0:
                break
            caught_up = len(raw) < limit and not batch.millis_behind_latest
            if caught_up and feed.idles and await self._sleep(self.options.idle_interval):
                break
        return WorkerExit.STOPPED

    # -- pieces -----------------------------------------------------------------------------

    def _past_end(self) -> bool:
        """Read through the EndingSequenceNumber of a closed shard (moto never nulls the
        iterator, so a null NextShardIterator alone is not enough)."""
        ending = self.shard.ending_sequence_number
        seq = self.position.sequence_number
        if ending is None or seq is None:
            return False
        if self.position.kind is PositionKind.AT_SEQUENCE_NUMBER:
            return seq_int(seq) > seq_int(ending)
        return seq_int(seq) >= seq_int(ending)

    async def _process(self, records: list[Record]) -> bool:
        """Hand the batch to the processor until it returns. False if stopped while retrying.
        With ``--on-failure park``, after the retries (or at once for a record too old, or one
        the processor parks): the failing records parked, the others processed."""
        backoff = Backoff(self.options.backoff_base, self.options.processor_backoff_cap)
        policy = self.options.failure
        failure: Failure | None = None
        while True:
            exc = await self._deliver(records)
            if exc is None:
                if self.failing_record is not None:
                    self.failing_record = None
                    self._recovered()
                return True
            index = named(records, exc)
            if index:
                # The records before the failing one were processed: keep that progress.
                last = records[index - 1]
                self.position = Position.after_sequence(
                    last.sequence_number, last.sub_sequence_number
                )
                self.arrival = last.approximate_arrival
                self.checkpointer.advance(self.shard_id, self.position, self.arrival)
                records = records[index:]
            now = time.time()
            if failure is None or index:
                failure = Failure(exc, 1, now, now)
            else:
                failure = Failure(exc, failure.attempts + 1, failure.first, now)
            self._processor_failed(records[0], exc)
            if policy.park and self.parking is not None and self._give_up(records, failure):
                return await self._park(records, failure)
            if await self._sleep(backoff.next_delay()):
                return False

    async def _deliver(self, records: list[Record]) -> BaseException | None:
        """One call of the processor: the exception it raised, or None once it returned."""
        timeout = self.options.processor_timeout
        began = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                await self.processor.process(records, self.ctx)
        except TimeoutError:
            raise ProcessorHung(
                f"processor {self.processor.name} did not return within {timeout:g} s on "
                f"{self.shard_id}: the run stops; nothing after the last checkpoint is lost"
            ) from None
        except Exception as exc:
            return exc
        self.state.processor_time(self.shard_id, time.perf_counter() - began)
        return None

    def _give_up(self, records: list[Record], failure: Failure) -> bool:
        """Whether to stop retrying the batch and park what fails in it."""
        policy = self.options.failure
        if isinstance(failure.exc, ParkRecord) or failure.attempts >= policy.retries:
            return True
        oldest = records[0].approximate_arrival
        age = policy.max_record_age
        return age is not None and bool(oldest) and time.time() - oldest > age

    async def _park(self, records: list[Record], failure: Failure) -> bool:
        """The failing records found and parked, the others processed. A parking lot that
        cannot take them blocks the shard (retried with backoff; nothing dropped) until it
        can. False if stopped meanwhile."""
        assert self.parking is not None
        found = await isolate(records, failure, self._deliver)
        sid = self.shard_id
        items = [parked(self.key, sid, r, f, self.worker_id) for r, f in found]
        backoff = Backoff(self.options.backoff_base, self.options.processor_backoff_cap)
        while True:
            try:
                await self.parking.park(items)
                break
            except Exception as exc:
                reason = (f"cannot park {len(items)} record(s): {REDACTOR(str(exc))}; "
                          "blocking until it can")  # fmt: skip
                self.state.set_status(sid, ShardStatus.FAILING, reason)
                self.events.emit("park_failed", f"{sid}: {reason}", level=Level.ERROR,
                                 shard_id=sid)  # fmt: skip
                if await self._sleep(backoff.next_delay()):
                    return False
        self.state.count_parked(sid, len(items))
        self._parked = {id(r) for r, _ in found}
        announce(self.events, sid, items, self._park_rate)
        self.failing_record = None
        self._recovered()
        return True

    def _processor_failed(self, record: Record, exc: BaseException) -> None:
        reason = f"processor raised {type(exc).__name__}: {exc}"
        self.state.count_error(self.shard_id, "processor_error")
        first = self.failing_record is None or self.view.last_error != reason
        self.failing_record = record
        self.state.set_status(self.shard_id, ShardStatus.FAILING, reason)
        if first:
            self.events.emit(
                "processor_error",
                f"{self.shard_id}: {reason} (at {record.sequence_number}); retrying the batch",
                level=Level.ERROR,
                shard_id=self.shard_id,
            )

    async def _retry(self, exc: RetryableError, backoff: Backoff) -> bool:
        """Show the error, wait with jitter. True if stopped meanwhile."""
        reason = str(exc)
        kind = "throttled" if exc.throttled else "source_error"
        self.state.count_error(self.shard_id, kind)
        if self.view.status is not ShardStatus.FAILING or self.view.last_error != reason:
            self.events.emit(
                kind,
                f"{self.shard_id}: {reason}; retrying",
                level=Level.WARNING,
                shard_id=self.shard_id,
            )
        self.state.set_status(self.shard_id, ShardStatus.FAILING, reason)
        # Nothing is read: how far behind the shard is is not known any more (never "0 ms").
        since = self.view.read_failing_since or time.time()
        self.state.update(self.shard_id, lag_ms=None, read_failing_since=since)
        return await self._sleep(backoff.next_delay())

    def _recovered(self) -> None:
        self.state.set_status(self.shard_id, ShardStatus.ACTIVE)
        self.events.emit("recovered", f"{self.shard_id}: recovered", shard_id=self.shard_id)

    def _fail(self, exc: BaseException) -> None:
        reason = str(exc)
        self.state.set_status(self.shard_id, ShardStatus.FAILED, reason)
        self.events.emit(
            "shard_failed",
            f"{self.shard_id} stopped: {reason}",
            level=Level.ERROR,
            shard_id=self.shard_id,
        )

    async def _finish(self) -> None:
        """Shard end: checkpoint as done, now, in one transaction with all pending progress."""
        current = self.checkpointer.get(self.shard_id)
        old_status = current.status.value if current else None
        arrival = self.arrival
        if arrival is None and current is not None:
            arrival = current.arrival
        cp = Checkpoint(
            self.shard_id,
            self.position,
            CheckpointStatus.DONE,
            paused=current.paused if current else False,
            arrival=arrival,
        )
        entry = HistoryEntry(
            shard_id=self.shard_id,
            cause="done",
            actor="engine",
            old_position=current.position if current else None,
            new_position=self.position,
            old_status=old_status,
            new_status=CheckpointStatus.DONE.value,
            note="read to the end of the closed shard",
        )
        await self.checkpointer.write([CheckpointChange(cp, entry)])

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped. True if stopped."""
        if self._stop.is_set():
            return True
        if seconds <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        return self._stop.is_set()

    async def _until_stopped(self, aw: Awaitable[T]) -> T | None:
        """Await ``aw`` unless the worker is stopped first; then cancel it and return None."""
        task = asyncio.ensure_future(aw)
        if self._stop.is_set():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return None
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((task, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, SourceError):
            await task
        return None
