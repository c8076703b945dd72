"""Poison records: what a shard does when its processor keeps failing on a batch.

``block`` (the default) retries the batch with backoff until it succeeds or an operator skips
past the record. ``park`` retries it ``retries`` times, then finds the records that fail
(the one the processor named with ``RecordFailed`` or ``ParkRecord``, else by bisecting the
batch: halves delivered again, recursively), parks each one (the store, then the dead-letter
destination) and reads on: the records around a parked one are processed exactly as if it
were not there, and a record that succeeded is never delivered again. A record older than
``max_record_age`` is parked without waiting for the retries (Lambda's
MaximumRecordAgeInSeconds), so a shard never falls out of retention behind one.
"""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from console.checkpoints.base import ParkedStore
from console.engine.events import EventLog, Level
from console.model import HistoryEntry, ParkedRecord, Record
from console.processors.base import ParkRecord, RecordFailed
from console.redact import REDACTOR

TRACE_FRAMES = 3  # the traceback's last frames kept with a parked record
# More parked than this in a minute on one shard reads as a bad deploy, not a bad record.
STORM_PER_MINUTE = 10


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """``--retries``, ``--on-failure`` and ``--max-record-age``."""

    retries: int = 3
    park: bool = False  # --on-failure park; else block
    max_record_age: float | None = None  # seconds; None: no limit


class ParkingLot(Protocol):
    """Where parked records go: written (durably) before the checkpoint moves past them.
    Raises when it cannot take them; the shard then blocks and says why."""

    async def park(self, records: Sequence[ParkedRecord]) -> None: ...


def parked_in(store: object) -> ParkingLot | None:
    """The store itself, where it keeps parked records (the SQLite file, a lease table's
    companion): where a consumer given no parking lot parks."""
    return store if isinstance(store, ParkedStore) else None


class Parking:
    """The checkpoint store first (the console lists what it holds), then the dead-letter
    destination, if any."""

    def __init__(self, store: ParkingLot, dead_letter: ParkingLot | None = None) -> None:
        self.store = store
        self.dead_letter = dead_letter

    async def park(self, records: Sequence[ParkedRecord]) -> None:
        await self.store.park(records)
        if self.dead_letter is not None:
            await self.dead_letter.park(records)


class ParkRate:
    """Records parked on one shard in the last minute: :meth:`note` says when they pass
    ``limit`` (once a minute at most), so the operator is told to block and look."""

    def __init__(self, limit: int = STORM_PER_MINUTE, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()
        self._told_at: float | None = None

    def note(self, n: int, now: float) -> int | None:
        """``n`` parked at ``now``: how many in the window, when that is past the limit and
        not said within the window; else None."""
        times = self._times
        times.extend([now] * n)
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) <= self.limit:
            return None
        if self._told_at is not None and now - self._told_at < self.window:
            return None
        self._told_at = now
        return len(times)


@dataclass(slots=True)
class Failure:
    """How one record failed: the error, and the attempts made on it."""

    exc: BaseException
    attempts: int
    first: float
    last: float


def parked(stream: str, shard_id: str, record: Record, failure: Failure,
           worker_id: str | None) -> ParkedRecord:  # fmt: skip
    """The parked record as stored: the error's message and frames redacted (no credentials
    on screen, in a file or in a queue)."""
    exc = failure.exc
    frames = traceback.format_exception(exc)[-(TRACE_FRAMES + 1) :]
    return ParkedRecord(
        stream=stream,
        shard_id=shard_id,
        sequence_number=record.sequence_number,
        sub_sequence_number=record.sub_sequence_number,
        partition_key=record.partition_key,
        approximate_arrival=record.approximate_arrival,
        data=bytes(record.data),
        error_type=type(exc).__name__,
        error_message=REDACTOR(str(exc)),
        traceback=REDACTOR("".join(frames)),
        attempts=failure.attempts,
        first_failure=failure.first,
        last_failure=failure.last,
        worker_id=worker_id,
        parked_at=time.time(),
    )


def named(records: Sequence[Record], exc: BaseException) -> int | None:
    """The index of the record the processor named (RecordFailed, ParkRecord), if it is in
    ``records``."""
    if isinstance(exc, RecordFailed | ParkRecord):
        for i, r in enumerate(records):
            if r is exc.record:
                return i
    return None


Deliver = Callable[[list[Record]], Awaitable[BaseException | None]]


async def isolate(
    records: list[Record], failure: Failure, deliver: Deliver
) -> list[tuple[Record, Failure]]:
    """The failing records of ``records`` (which failed as ``failure`` says), found by
    delivering halves again, left before right (per-key order kept): a half that returns is
    processed; one that fails is split again, down to single records, which are the ones
    parked. A failure that names its record (RecordFailed) is taken at its word: the records
    before it are processed, it is parked, the rest delivered again. ``deliver`` returns the
    exception the processor raised, or None."""
    out: list[tuple[Record, Failure]] = []
    await _isolate(records, failure, deliver, out)
    return out


async def _isolate(
    records: list[Record], failure: Failure, deliver: Deliver, out: list[tuple[Record, Failure]]
) -> None:
    """``records`` failed as ``failure`` says."""
    at = named(records, failure.exc)
    if at is not None:  # the records before it were processed
        out.append((records[at], failure))
        if at + 1 < len(records):
            await _again(records[at + 1 :], failure, deliver, out)
    elif len(records) == 1:
        out.append((records[0], failure))
    else:
        mid = len(records) // 2
        await _again(records[:mid], failure, deliver, out)
        await _again(records[mid:], failure, deliver, out)


async def _again(
    records: list[Record], failure: Failure, deliver: Deliver, out: list[tuple[Record, Failure]]
) -> None:
    exc = await deliver(records)
    if exc is not None:
        again = Failure(exc, failure.attempts + 1, failure.first, time.time())
        await _isolate(records, again, deliver, out)


def unparked(p: ParkedRecord, cause: str, actor: str, note: str,
             command_id: int | None = None) -> HistoryEntry:  # fmt: skip
    """The history entry of a parked record removed: redriven or dropped, by whom, why."""
    return HistoryEntry(
        shard_id=p.shard_id, cause=cause, actor=actor, new_position=None, new_status=None,
        note=f"parked record {p.sequence_number}: {note}", command_id=command_id,
    )  # fmt: skip


def announce(events: EventLog, sid: str, items: Sequence[ParkedRecord], rate: ParkRate) -> None:
    """An event per parked record (headless: a log line), and one when the shard parks more
    than ``rate`` allows: a bad deploy rather than bad records."""
    for item in items:
        events.emit(
            "record_parked",
            f"{sid}: parked record {item.sequence_number} after {item.attempts} "
            f"attempt(s): {item.error_type}: {item.error_message}",
            level=Level.WARNING,
            shard_id=sid,
        )
    storm = rate.note(len(items), time.monotonic())
    if storm is not None:
        events.emit(
            "park_storm",
            f"{sid}: {storm} records parked in the last minute: a bad deploy rather than "
            "bad records? --on-failure block stops at the first and lets you look",
            level=Level.ERROR,
            shard_id=sid,
        )
