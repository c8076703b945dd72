"""Positions a lease table can hold: the record before a time, or before a sequence number.

A KCL checkpoint is the last processed record, and the KCL's AT_TIMESTAMP sentinel stores no
time (each worker's own configuration supplies it). So before an operator's change is written
to a lease table, "from 10:42" and "at sequence S" become "after the record just before": read
the shard from a little before the target, keep the last record before it. A target before
every record the shard keeps is TRIM_HORIZON; a time after the last record is "after the last
record". Reads go at the shard's call rate; a handful of calls in the usual case.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from console.checkpoints.base import CheckpointChange
from console.engine.changes.plan import ControlError, Plan
from console.model import Position, PositionKind, Record, seq_int
from console.sources.base import FatalSourceError, SourceError, StreamSource

WINDOWS = (60.0, 3600.0, 86400.0, None)  # seconds looked back before the target; None: all
MAX_CALLS = 500
RESOLVE_WITHIN = 120.0  # seconds one position may take to resolve


async def resolve_plan(plan: Plan, source: StreamSource) -> Plan:
    """The plan with every position a lease table cannot hold resolved to a record."""
    changes = []
    for change in plan.changes:
        cp = change.checkpoint
        kind = cp.position.kind
        if cp.status.finished or kind not in (
            PositionKind.AT_TIMESTAMP,
            PositionKind.AT_SEQUENCE_NUMBER,
        ):
            changes.append(change)
            continue
        position = await resolve_bounded(source, cp.shard_id, cp.position)
        history = change.history
        if history is not None:
            history = replace(history, new_position=position)
        changes.append(CheckpointChange(replace(cp, position=position), history))
    return Plan(tuple(changes), plan.summary)


async def resolve_bounded(source: StreamSource, shard_id: str, position: Position) -> Position:
    """:func:`resolve_position` within RESOLVE_WITHIN seconds; what fails is a ControlError in
    an operator's words (nothing has been written yet)."""
    bound = asyncio.timeout(RESOLVE_WITHIN)
    try:
        async with bound:
            return await resolve_position(source, shard_id, position)
    except TimeoutError:
        if bound.expired():
            reason = f"the stream did not give the records within {RESOLVE_WITHIN:g} s"
        else:
            reason = "a read of the stream timed out"
    except SourceError as exc:
        reason = str(exc)
    raise ControlError(
        f"could not find the record before {position.target()} in shard {shard_id}: {reason}; "
        "nothing was changed: try again, or give a sequence number (shard-console tail STREAM "
        f"--shard {shard_id} --from ... shows them)"
    )


async def resolve_position(source: StreamSource, shard_id: str, position: Position) -> Position:
    """TRIM_HORIZON or AFTER_SEQUENCE_NUMBER for an AT_TIMESTAMP or AT_SEQUENCE_NUMBER."""
    if position.kind is PositionKind.AT_SEQUENCE_NUMBER:
        seq = position.sequence_number
        assert seq is not None
        if position.sub_sequence_number:
            return Position.after_sequence(seq, position.sub_sequence_number - 1)
        first, _ = await _read(source, shard_id, position, None, stop_after_first=True)
        if first is None:
            raise ControlError(f"sequence number {seq} is not in shard {shard_id}")
        return await _before(source, shard_id, first, first.approximate_arrival)
    if position.kind is PositionKind.AT_TIMESTAMP:
        assert position.timestamp is not None
        # An iterator at a time starts at a whole record (an aggregate's first user record).
        first, _ = await _read(source, shard_id, position, None, stop_after_first=True)
        return await _before(source, shard_id, first, position.timestamp)
    return position


async def _before(
    source: StreamSource, shard_id: str, target: Record | None, when: float
) -> Position:
    """The position after the record just before ``target`` (None: after the last record),
    looking back from ``when`` in widening windows."""
    stop = target.sequence_number if target is not None else None
    for window in WINDOWS:
        start = Position.trim_horizon() if window is None else Position.at_timestamp(when - window)
        last, reached = await _read(source, shard_id, start, stop)
        if last is not None and (reached or stop is None):
            return Position.after_sequence(last.sequence_number, last.sub_sequence_number)
        if window is None:
            return Position.trim_horizon()  # nothing before it in all the shard keeps
    raise AssertionError("unreachable")  # pragma: no cover, no mutate


async def _read(
    source: StreamSource,
    shard_id: str,
    start: Position,
    stop: str | None,
    *,
    stop_after_first: bool = False,
) -> tuple[Record | None, bool]:
    """Read from ``start``. With ``stop_after_first``: the first record. Else the last record
    before sequence ``stop`` (or before the tip when ``stop`` is None), and whether ``stop``
    was reached. A window that starts at ``stop`` itself has no record before it: (None, True)
    tells the caller to look further back."""
    iterator: str | None = await source.get_iterator(shard_id, start)
    last: Record | None = None
    stop_n = seq_int(stop) if stop is not None else None
    for _ in range(MAX_CALLS):
        if iterator is None:
            return last, False
        batch = await source.get_records(iterator, source.max_records_per_call)
        for record in batch.records:
            if stop_after_first:
                return record, True
            if stop_n is not None and seq_int(record.sequence_number) >= stop_n:
                return last, True
            last = record
        if not batch.records and (batch.millis_behind_latest or 0) == 0:
            return last, False
        iterator = batch.next_iterator
        await asyncio.sleep(source.min_call_interval)
    raise ControlError(
        f"shard {shard_id}: no record found within {MAX_CALLS} reads; choose a position closer "
        "to the shard's records"
    )


async def count_between(
    source: StreamSource, shard_id: str, start: Position, upto: str, cap: int
) -> tuple[int, bool]:
    """How many records from ``start`` up to and including sequence ``upto`` (what a rewind
    from ``upto`` to ``start`` reads again), counting at most ``cap``: (count, more than that)."""
    if start.kind is PositionKind.AFTER_SEQUENCE_NUMBER and start.sequence_number == upto:
        return 0, False
    stop = seq_int(upto)
    iterator: str | None = await source.get_iterator(shard_id, start)
    count = 0
    for _ in range(MAX_CALLS):
        if iterator is None:
            return count, False
        batch = await source.get_records(iterator, min(cap + 1, source.max_records_per_call))
        for record in batch.records:
            if seq_int(record.sequence_number) > stop:
                return count, False
            count += 1
            if count > cap:
                return cap, True
        if not batch.records and (batch.millis_behind_latest or 0) == 0:
            return count, False
        iterator = batch.next_iterator
        await asyncio.sleep(source.min_call_interval)
    return count, True


async def check_sequences(plan: Plan, source: StreamSource) -> None:
    """Every sequence number an operator's change moves a shard to must be one of that shard's
    (Kinesis refuses another shard's, or one past its records, only when it is read: the next
    start would stop the shard). Asked of the stream; ControlError, in an operator's words,
    when it is not one, or when the stream cannot be asked."""
    for change in plan.changes:
        history = change.history
        if history is None or history.cause != "rewind":
            continue
        position = change.checkpoint.position
        seq = position.sequence_number
        if seq is None or change.checkpoint.status.finished:
            continue
        sid = change.checkpoint.shard_id
        try:
            async with asyncio.timeout(RESOLVE_WITHIN):
                await source.get_iterator(sid, Position.at_sequence(seq))
        except TimeoutError:
            raise ControlError(
                f"could not check sequence number {seq} against shard {sid}: the stream did not "
                "answer; nothing was changed"
            ) from None
        except FatalSourceError as exc:
            raise ControlError(
                f"sequence number {seq} is not one of shard {sid}'s: {exc}; nothing was changed"
            ) from None
        except SourceError as exc:
            raise ControlError(
                f"could not check sequence number {seq} against shard {sid} ({exc}): pass "
                "--endpoint-url, --region or --profile to reach the stream; nothing was changed"
            ) from None
