"""Reading a stream without consuming it: ``shard-console tail``.

No store, no checkpoint, no lease: one reader per shard, each from the position asked for, a
shard's parents read to their end before it starts (so a key's records come out in order across
a resharding), at most one GetRecords per ``min_call_interval`` on each shard (the same pace as
a consumer: 5 a second on Kinesis). Without ``follow`` a shard's reader stops at the tip (an
empty page with nothing behind it) or at a closed shard's end; with it, readers go on and new
shards (ChildShards at a shard's end, or the listing every ``relist`` seconds) get readers too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from console.engine.lineage import Lineage
from console.model import Position, PositionKind, Record, Shard, ShardContext
from console.sources.base import ExpiredIteratorError, RetryableError, StreamSource

# Called with each record read, in order per shard; returns whether it counted toward the limit.
OnRecord = Callable[[Record, ShardContext], bool]


class TailFailed(Exception):
    """A shard could not be read, retries spent."""


@dataclass(frozen=True, slots=True)
class TailOptions:
    start: Position
    shard: str | None = None  # only this shard (its lineage is not followed)
    follow: bool = False
    limit: int | None = None  # stop after this many counted records
    relist: float = 10.0  # follow: seconds between two listings
    retry_cap: float = 2.0
    attempts: int = 6  # a shard's call failing this many times in a row ends the tail


class Tail:
    def __init__(
        self,
        source: StreamSource,
        options: TailOptions,
        on_record: OnRecord,
        on_batch: Callable[[], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        """``on_batch``: after each page's records (a writer flushes there); ``on_retry``: an
        error that is retried, told once per shard until a call succeeds again."""
        self.on_retry = on_retry
        self.source = source
        self.options = options
        self.on_record = on_record
        self.on_batch = on_batch
        self.counted = 0
        self.reads = 0  # GetRecords calls
        self._done = asyncio.Event()  # the limit was reached
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._finished: set[str] = set()
        self._lineage = Lineage.build(())

    async def run(self) -> None:
        await self._start_readers(await self.source.list_shards())
        try:
            while True:
                pending = [t for t in self._tasks.values() if not t.done()]
                # One shard asked for: its end is the tail's end (a closed shard ends).
                only = self.options.shard is not None and not pending and self._tasks
                if self._done.is_set() or (not pending and not self.options.follow) or only:
                    break
                waiter = asyncio.ensure_future(self._done.wait())
                timeout = self.options.relist if self.options.follow else None
                watched: set[asyncio.Future[Any]] = {*pending, waiter}
                await asyncio.wait(watched, timeout=timeout, return_when="FIRST_COMPLETED")
                waiter.cancel()
                for task in pending:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if self.options.follow and not self._done.is_set():
                    with contextlib.suppress(RetryableError):  # the next round lists again
                        await self._start_readers(await self.source.list_shards(), later=True)
        finally:
            for task in self._tasks.values():
                task.cancel()
            for task in self._tasks.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _start_readers(self, shards: list[Shard], later: bool = False) -> None:
        """Readers for shards not read yet. ``later``: found after the first listing (children
        of a split or merge since): read from their first record, whatever ``--from`` said."""
        known = {**self._lineage.shards, **{s.shard_id: s for s in shards}}
        self._lineage = Lineage.build(known.values())
        wanted = self.options.shard
        for shard in self._lineage.shards.values():
            sid = shard.shard_id
            if sid in self._tasks or (wanted is not None and sid != wanted):
                continue
            start = Position.trim_horizon() if later else self.options.start
            self._tasks[sid] = asyncio.create_task(self._read(shard, start), name=f"tail {sid}")

    async def _read(self, shard: Shard, start: Position) -> None:
        sid = shard.shard_id
        if self.options.shard is None:
            # Parents first: a key's records come out in the order they were written.
            while not self._lineage.is_ready(sid, self._finished):
                parents = [self._tasks[p] for p in shard.parents if p in self._tasks]
                if not parents:
                    break
                await asyncio.wait(parents)
        try:
            await self._read_shard(shard, start)
        finally:
            self._finished.add(sid)

    async def _read_shard(self, shard: Shard, start: Position) -> None:
        sid = shard.shard_id
        ctx = ShardContext(self.source.stream, sid, shard.parents)
        position = start
        if position.kind is PositionKind.LATEST and shard.is_closed:
            return  # nothing comes after the tip of a closed shard
        interval = self.source.min_call_interval
        limit = self.source.max_records_per_call
        iterator: str | None = None
        next_call = 0.0
        delay = 0.2
        failures = 0
        while not self._done.is_set():
            try:
                if iterator is None:
                    iterator = await self.source.get_iterator(sid, position)
                wait = next_call - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                next_call = time.monotonic() + interval
                self.reads += 1
                batch = await self.source.get_records(iterator, limit)
            except ExpiredIteratorError:
                iterator = None
                continue
            except RetryableError as exc:
                failures += 1
                if failures >= self.options.attempts:
                    raise TailFailed(f"{sid}: gave up after {failures} attempts: {exc}") from None
                if failures == 1 and self.on_retry is not None:
                    self.on_retry(f"{sid}: {exc}; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.retry_cap)
                continue
            delay = 0.2
            failures = 0
            for record in batch.records:
                if self._done.is_set():
                    return  # the limit was reached by another shard's reader meanwhile
                position = Position.after_sequence(
                    record.sequence_number, record.sub_sequence_number
                )
                if self.on_record(record, ctx):
                    self.counted += 1
                    if self.options.limit is not None and self.counted >= self.options.limit:
                        self._done.set()
                        return
            if batch.records and self.on_batch is not None:
                self.on_batch()
            if batch.child_shards and self.options.follow:
                await self._start_readers(list(batch.child_shards), later=True)
            iterator = batch.next_iterator
            end = shard.ending_sequence_number
            seq = position.sequence_number
            if iterator is None or (end is not None and seq is not None and int(seq) >= int(end)):
                return  # a closed shard, read to its end (moto never nulls the iterator)
            if shard.is_closed:
                continue  # read to its end, whatever its pages say
            # Caught up: nothing behind this page (DynamoDB Streams: an empty page at the tip),
            # and the page not full (MillisBehindLatest counts time: records put in the same
            # instant as the tip's may still follow a full page). Without follow this is the
            # end, even on a shard written to all the time.
            caught_up = batch.millis_behind_latest == 0 and len(batch.records) < limit
            if caught_up and not self.options.follow:
                return
            if caught_up and not batch.records:
                next_call = max(next_call, time.monotonic() + 1.0)  # idle: once a second
