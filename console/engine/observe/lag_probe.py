"""Lag of a consumer we do not run: one small read after each shard's checkpoint.

The first record after the checkpoint is the oldest one the consumer has not processed: its
age is the consumer's lag on that shard, and ``MillisBehindLatest`` of the same read tells how
far that record is from the stream's tip. Each shard is read once per ``interval`` (10 s by
default), the shards spread evenly over it, with at most ``concurrency`` reads in flight: one
GetShardIterator and one GetRecords(Limit=1) per shard per interval, 2% of the 5 reads a second
a Kinesis shard allows (and the iterator is kept, saving the first call, while a shard is
caught up at an unchanged checkpoint). ``calls`` counts them for the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from console.model import Position, PositionKind, Record
from console.settings import default
from console.sources.base import (
    ExpiredIteratorError,
    FatalSourceError,
    SourceError,
    StreamSource,
    TrimmedDataError,
)

ITERATOR_LIFE = 240.0  # Kinesis iterators last 5 minutes: renew well before


@dataclass(frozen=True, slots=True)
class Probe:
    """What one read after a shard's checkpoint found."""

    after: Position  # the checkpoint it read after
    at: float  # wall time of the read
    next_record: Record | None  # the oldest record not processed yet
    millis_behind: int | None  # that read's distance from the stream's tip
    caught_up: bool  # nothing after the checkpoint
    lost: str | None = None  # the records after the checkpoint are gone (retention)
    error: str | None = None

    def lag_ms(self, now: float) -> int | None:
        """The consumer's lag on the shard: the age of its oldest unprocessed record."""
        if self.error is not None or self.lost is not None:
            return None
        if self.next_record is not None and self.next_record.approximate_arrival is not None:
            return max(0, int((now - self.next_record.approximate_arrival) * 1000))
        return 0 if self.caught_up else self.millis_behind


def start_of(checkpoint: Position) -> Position | None:
    """Where the first unprocessed record is, for a checkpoint; None when no read can tell
    (LATEST: nothing processed, starting at the tip; an AT_TIMESTAMP without its time)."""
    kind = checkpoint.kind
    if kind is PositionKind.AFTER_SEQUENCE_NUMBER and checkpoint.sequence_number is not None:
        if checkpoint.sub_sequence_number:  # the aggregate's later records are not processed
            return Position.at_sequence(checkpoint.sequence_number)
        return checkpoint
    if kind in (PositionKind.TRIM_HORIZON, PositionKind.AT_SEQUENCE_NUMBER):
        return checkpoint
    if kind is PositionKind.AT_TIMESTAMP and checkpoint.timestamp is not None:
        return checkpoint
    return None


class LagProbe:
    def __init__(
        self,
        source: StreamSource,
        *,
        interval: float = default("lag_interval"),
        concurrency: int = 4,
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.source = source
        self.interval = interval
        self.clock = clock
        self.mono = mono
        self.sleep = sleep
        self.calls: Counter[str] = Counter()
        self.results: dict[str, Probe] = {}
        self.targets: dict[str, Position] = {}
        self._slots = asyncio.Semaphore(concurrency)
        # A caught-up shard's iterator, while its checkpoint stays: (checkpoint, iterator, when).
        self._kept: dict[str, tuple[Position, str, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def set_targets(self, targets: Mapping[str, Position]) -> None:
        """The shards to read and the checkpoint of each (only shards a read can tell of)."""
        self.targets = dict(targets)
        for sid in list(self.results):
            if sid not in self.targets:
                del self.results[sid]
        for sid in list(self._kept):
            if sid not in self.targets:
                del self._kept[sid]

    async def run(self) -> None:
        """Rounds of one read per shard, spread over the interval, for ever."""
        try:
            while True:
                started = self.mono()
                shards = sorted(self.targets)
                step = self.interval / max(len(shards), 1)
                for i, sid in enumerate(shards):
                    await self._until(started + i * step)
                    checkpoint = self.targets.get(sid)
                    if checkpoint is None:
                        continue
                    await self._slots.acquire()
                    task = asyncio.create_task(self._probe_released(sid, checkpoint))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                await self._until(started + self.interval)
        finally:
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _until(self, when: float) -> None:
        delay = when - self.mono()
        if delay > 0:
            await self.sleep(delay)

    async def _probe_released(self, sid: str, checkpoint: Position) -> None:
        try:
            result = await self.probe(sid, checkpoint)
        finally:
            self._slots.release()
        if result is not None and self.targets.get(sid) == checkpoint:
            self.results[sid] = result  # shown at the next scan's rebuild

    async def probe(self, sid: str, checkpoint: Position) -> Probe | None:
        """One read after ``checkpoint`` (None: a passing error; the next round tries again)."""
        start = start_of(checkpoint)
        if start is None:
            return None
        try:
            iterator = self._iterator_kept(sid, checkpoint)
            if iterator is None:
                self.calls["GetShardIterator"] += 1
                iterator = await self.source.get_iterator(sid, start)
            self.calls["GetRecords"] += 1
            batch = await self.source.get_records(iterator, 1)
        except ExpiredIteratorError:
            self._kept.pop(sid, None)
            return None
        except TrimmedDataError:
            return Probe(
                checkpoint,
                self.clock(),
                None,
                None,
                False,
                lost="its checkpoint is older than the stream's retention: the records after "
                "it are gone (rewind it to trim_horizon to read what is left)",
            )
        except FatalSourceError as exc:
            return Probe(checkpoint, self.clock(), None, None, False, error=str(exc))
        except SourceError:
            return None  # throttled, a dropped connection: the next round
        first = batch.records[0] if batch.records else None
        at_end = batch.next_iterator is None
        caught_up = first is None and (at_end or not batch.millis_behind_latest)
        if caught_up and batch.next_iterator is not None:
            self._kept[sid] = (checkpoint, batch.next_iterator, self.mono())
        else:
            self._kept.pop(sid, None)
        return Probe(
            checkpoint, self.clock(), first, batch.millis_behind_latest, caught_up or at_end
        )

    def _iterator_kept(self, sid: str, checkpoint: Position) -> str | None:
        kept = self._kept.get(sid)
        if kept is None or kept[0] != checkpoint or self.mono() - kept[2] > ITERATOR_LIFE:
            return None
        return kept[1]
