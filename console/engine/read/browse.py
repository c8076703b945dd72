"""The console's records browser: a page of a shard's records from any position, read without
moving the checkpoint, within the shard's read budget (console.engine.read.pacing: one budget shared
by the shard's worker and the browser, so browsing slows reading a little and never gets the
shard throttled).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

from console.engine.read.pacing import Pacer
from console.engine.read.resume import drop_through, fetch_plan
from console.model import Checkpoint, Position, Record
from console.sources.base import StreamSource

PAGE = 50
# A page is read in at most this many GetRecords calls: a sparse stretch of a shard (empty
# answers) is read through, at the shard's pace, rather than shown as an empty page forever.
MAX_CALLS = 20


@dataclass(frozen=True, slots=True)
class Page:
    start: Position
    records: tuple[Record, ...]
    next: Position | None  # where the next page starts; None: the shard ends here
    at_tip: bool  # nothing more to read now
    note: str | None = None  # why it starts where it does (the record a shard fails on)


async def read_page(
    source: StreamSource, pacer: Pacer, shard_id: str, start: Position, limit: int = PAGE
) -> Page:
    fetch_at, drop = fetch_plan(start)
    iterator: str | None = await source.get_iterator(shard_id, fetch_at)
    records: list[Record] = []
    at_tip = False
    for _ in range(MAX_CALLS):
        if iterator is None or len(records) >= limit:
            break
        await asyncio.sleep(pacer.reserve())
        batch = await source.get_records(iterator, limit - len(records) + (1 if drop else 0))
        got = batch.records
        if drop is not None and got:
            got = drop_through(got, *drop)
            drop = None
        records.extend(got[: limit - len(records)])
        iterator = batch.next_iterator
        if not batch.records and not batch.millis_behind_latest:
            at_tip = True
            break
    if records:
        last = records[-1]
        after = Position.after_sequence(last.sequence_number, last.sub_sequence_number)
    else:
        after = start
    return Page(start, tuple(records), None if iterator is None else after, at_tip)


async def browse(
    source: StreamSource,
    pacer: Pacer,
    shard_id: str,
    start: Position | None,
    limit: int,
    *,
    failing: Record | None,
    error: str | None,
    checkpoint: Checkpoint | None,
) -> Page:
    """A running consumer's page: from ``start``, or (None) from the record the processor fails
    on, when it fails, else from the checkpoint."""
    note = None
    if start is None:
        if failing is not None:
            sub = failing.sub_sequence_number
            start = (  # a KPL user record: the one inside its aggregate
                Position.after_sequence(failing.sequence_number, sub - 1)
                if sub
                else Position.at_sequence(failing.sequence_number)
            )
            note = f"the record the processor fails on: {error or 'see the shard'}"
        else:
            start = checkpoint.position if checkpoint else Position.trim_horizon()
    page = await read_page(source, pacer, shard_id, start, limit)
    return dataclasses.replace(page, note=note)
