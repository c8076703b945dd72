"""Finding a time in a shard by reading it, when the endpoint does not answer AT_TIMESTAMP.

Kinesis answers GetShardIterator AT_TIMESTAMP at once, with an iterator at the shard's end when
no record is that new. Stock kinesalite never answers when no record is at or after the time
(its read of the shard never ends), so a rewind to "-15m" on a quiet shard, a skip to the tip,
a consumer started at ``latest``, would wait for ever. Bounded by a few seconds, such a call is
given up and the time found another way: the shard read from its start, the records' arrival
times compared, at the shard's read pace, for at most :data:`MAX_CALLS` reads.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from console.model import Batch, Position, Record, format_ts
from console.sources.base import FatalSourceError

MAX_CALLS = 200  # reads of a shard looking for a time: 2,000,000 records at 10,000 a read
ANSWER_WITHIN = 5.0  # seconds GetShardIterator AT_TIMESTAMP is given before it is read instead
NOT_ASKED_FOR = 300.0  # seconds an endpoint that did not answer is not asked again


class Readable(Protocol):
    min_call_interval: float
    max_records_per_call: int

    async def raw_iterator(self, shard_id: str, position: Position) -> str: ...

    async def get_records(self, iterator: str, limit: int) -> Batch: ...


@dataclass(frozen=True, slots=True)
class Found:
    before: Record | None  # the last record that arrived before the time
    first: Record | None  # the first that arrived at it or after


async def seek_time(source: Readable, shard_id: str, when: float) -> Found:
    """The records either side of ``when``, by reading ``shard_id`` from its start. Raises
    FatalSourceError (naming the shard and what to do) when the time is not within the first
    MAX_CALLS reads."""
    iterator: str | None = await source.raw_iterator(shard_id, Position.trim_horizon())
    before: Record | None = None
    for _ in range(MAX_CALLS):
        if iterator is None:
            return Found(before, None)
        batch = await source.get_records(iterator, source.max_records_per_call)
        for record in batch.records:
            if record.approximate_arrival >= when:
                return Found(before, record)
            before = record
        iterator = batch.next_iterator
        if not batch.records and not batch.millis_behind_latest:
            return Found(before, None)  # read to the tip: nothing that new yet
        await asyncio.sleep(source.min_call_interval)
    raise FatalSourceError(
        f"shard {shard_id}: the endpoint does not answer GetShardIterator AT_TIMESTAMP, and "
        f"{format_ts(when)} is not within the first {MAX_CALLS} reads of the shard: rewind it "
        f"to a sequence number instead (shard-console tail STREAM --shard {shard_id} "
        "--from trim_horizon shows them)"
    )


def resume_after(found: Found) -> Position:
    """Where an iterator for the time points, as found by reading: at the first record at or
    after it, else after the last record (or the start of an empty shard)."""
    if found.first is not None:
        return Position.at_sequence(found.first.sequence_number)
    if found.before is not None:
        return Position.after_sequence(found.before.sequence_number)
    return Position.trim_horizon()
