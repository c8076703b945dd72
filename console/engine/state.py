"""The versioned snapshot the UI and the headless status line read, at their own rate.

A shard's row (:class:`ShardView`) is a frozen value. Writers hand :class:`EngineState` the
next value of a row (:meth:`EngineState.put`, :meth:`EngineState.update`, or one of the named
updates below); the state stamps it with the next version, so a reader that remembers the
version it last drew asks :meth:`EngineState.changed_since` for exactly the rows to redraw, and
no writer can forget to bump a version. A row handed back unchanged keeps its version.

The engine writes on the event loop; readers run on the same loop and only read. Nothing here is
pushed per record: a worker updates its row once per batch. What only a fleet's worker or an
attached console knows (who holds each lease, the workers, what is wrong) lives apart: a row's
:class:`LeaseInfo`, the state's :class:`Watch`.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, NamedTuple

from console.engine.findings import Diagnosis
from console.engine.lineage import Lineage
from console.model import Position, Record, ShardStatus
from console.sources.base import StreamInfo

FINISHED = frozenset({ShardStatus.DONE, ShardStatus.SKIPPED})
# The order statuses are counted in, wherever they are (the header, the status line, /status).
STATUS_ORDER = (
    ShardStatus.ACTIVE,
    ShardStatus.FAILING,
    ShardStatus.FAILED,
    ShardStatus.PAUSED,
    ShardStatus.WAITING,
    ShardStatus.READY,
    ShardStatus.LEASED,
    ShardStatus.DONE,
    ShardStatus.SKIPPED,
)
PEEK_RECORDS = 10
PEEK_BYTES = 4096
# Upper bounds (seconds) of the processor-time histogram's buckets; the last bucket is +Inf.
PROCESS_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)
_NO_ERRORS: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Timings:
    """How long the processor took per batch, as a histogram: one bucket count per bound, and
    the last for longer ones."""

    counts: tuple[int, ...] = (0,) * (len(PROCESS_BUCKETS) + 1)
    total: float = 0.0

    def observe(self, seconds: float) -> Timings:
        """The histogram with one more batch."""
        i = bisect_left(PROCESS_BUCKETS, seconds)
        counts = self.counts
        return Timings((*counts[:i], counts[i] + 1, *counts[i + 1 :]), self.total + seconds)

    @property
    def count(self) -> int:
        return sum(self.counts)


def peek(records: list[Record]) -> tuple[Record, ...]:
    """The tail of a batch, kept for display (called once per batch, not per record)."""
    tail = records[-PEEK_RECORDS:]
    return tuple(
        r
        if len(r.data) <= PEEK_BYTES
        else Record(
            r.sequence_number,
            r.partition_key,
            r.data[:PEEK_BYTES],
            r.approximate_arrival,
            r.sub_sequence_number,
            r.explicit_hash_key,
        )
        for r in tail
    )


class LeaseInfo(NamedTuple):
    """A shard's lease, as a fleet's worker or a console attached to a lease table sees it.
    A tuple, as the row is: remade for each of a thousand shards at every scan, and compared."""

    owner: str | None = None  # the worker holding it (None: nobody)
    counter: int | None = None  # leaseCounter as last read
    # When a scan first saw the counter at its value (wall time; None: not seen to move). A
    # time, not an age: the row changes when the counter moves, not at every scan.
    moved_at: float | None = None
    expired: bool = False  # its owner stopped renewing it: any worker may take it

    def counter_age(self, now: float) -> float | None:
        """Seconds since the counter was seen to move."""
        return None if self.moved_at is None else max(0.0, now - self.moved_at)


class ShardView(NamedTuple):
    """One shard's row: a value. A tuple, not a frozen dataclass, because rows are remade
    once per batch and, in the console's benchmark, a thousand times every 250 ms: a tuple
    is remade in about a microsecond, a frozen dataclass in eight."""

    shard_id: str
    parents: tuple[str, ...] = ()
    status: ShardStatus = ShardStatus.WAITING
    closed: bool = False
    position: Position | None = None  # after the last processed record (in memory)
    checkpoint: Position | None = None  # last flushed to the store
    checkpoint_at: float | None = None  # wall time of that flush
    lag_ms: int | None = None
    rate: float = 0.0  # records per second, over the last tick
    records: int = 0  # processed by this run
    bytes: int = 0  # their data's bytes
    errors: Mapping[str, int] = _NO_ERRORS  # met and retried, by kind
    parked: int = 0  # records parked by this run (--on-failure park)
    timings: Timings = Timings()  # processor time per batch
    last_error: str | None = None
    error_at: float | None = None
    # Since when its reads have failed without a read getting through (None: they get
    # through), whatever the errors were: an outage is told by this, not by a processor failing.
    read_failing_since: float | None = None
    last_arrival: float | None = None  # approximate arrival time of the last record read
    # The last few records read, for the detail screen's peek. Data is cut to PEEK_BYTES: a
    # thousand shards of 1 MB records must not pin gigabytes.
    recent: tuple[Record, ...] = ()
    mode: str | None = None  # how its worker reads (or read): "polling" or "fan-out"
    lease: LeaseInfo | None = None  # fleet mode and attached consoles only
    version: int = 0  # stamped by EngineState; always the last field

    @property
    def owner(self) -> str | None:
        """Who holds the shard's lease (None: nobody, or no lease table)."""
        return self.lease.owner if self.lease is not None else None


_FIELD = {name: i for i, name in enumerate(ShardView._fields)}
_VERSION = _FIELD["version"]
_new_row = tuple.__new__  # ShardView._make without its length check: one call less per row


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One worker of a fleet or of a watched KCL application, from its last heartbeat (or
    renewal)."""

    worker: str
    host: str
    pid: int
    leases: int
    records: int
    rate: float
    heartbeat_age: float  # seconds since its last heartbeat
    shards: Mapping[str, Mapping[str, float | None]]  # per shard it reads: lag_ms, rate
    # A KCL 3.x worker's metric row (WorkerMetricStats): each metric's latest value.
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Watch:
    """What a fleet's worker or an attached console knows besides the rows."""

    worker_id: str | None = None  # this process's name in the lease table (a fleet's worker)
    workers: tuple[WorkerView, ...] = ()  # every worker's last heartbeat (or renewal)
    attached_to: str | None = None  # an attached console: what it watches, in words
    lease_table: str | None = None  # attached to a lease table (not a database)


@dataclass(frozen=True, slots=True)
class Totals:
    """What the header, the status line, ``/status`` and the metrics sum over every row, made
    in one pass and kept until a row changes."""

    counts: Counter[ShardStatus]  # shards by status (0 for one no shard has); read only
    max_lag_ms: int | None  # None: no shard has a lag yet
    total_lag_ms: int | None
    oldest_checkpoint_at: float | None  # of the shards still to be read to their end


class EngineState:
    def __init__(self, stream: str, source_kind: str, location: str) -> None:
        self.stream = stream
        self.source_kind = source_kind
        self.location = location
        self.info: StreamInfo | None = None
        self.version = 0
        self.shards: dict[str, ShardView] = {}
        self.lineage = Lineage.build(())
        self.lineage_version = 0
        self.records_total = 0
        self.bytes_total = 0
        self.get_records_calls = 0
        self.rate = 0.0
        # Errors met and retried, by kind (throttled, source_error, expired, processor_error):
        # the status line shows them, so injected or real faults are visible.
        self.retries: Counter[str] = Counter()
        self.watch = Watch()
        # Enhanced fan-out: the stream consumer this process reads as (None: polling).
        self.fan_out: str | None = None
        # What an attached console finds wrong (console.engine.observe.diagnosis), worst
        # first; its version moves only when the findings change.
        self.diagnoses: tuple[Diagnosis, ...] = ()
        self.diagnoses_version = 0
        self._totals: tuple[int, Totals] | None = None  # (the version they were made at, them)

    # -- fleet and attached consoles ----------------------------------------------------------

    @property
    def worker_id(self) -> str | None:
        return self.watch.worker_id

    @property
    def workers(self) -> tuple[WorkerView, ...]:
        return self.watch.workers

    @property
    def attached_to(self) -> str | None:
        return self.watch.attached_to

    @property
    def lease_table(self) -> str | None:
        return self.watch.lease_table

    @property
    def leased(self) -> bool:
        """Shards are held by leases: a fleet's worker, or a console attached to a table."""
        return self.worker_id is not None or self.lease_table is not None

    def set_watch(self, **changes: Any) -> None:
        """``worker_id``, ``workers``, ``attached_to``, ``lease_table`` (Watch's fields)."""
        watch = replace(self.watch, **changes)
        if watch != self.watch:
            self.watch = watch
            self.version += 1

    def set_diagnoses(self, found: tuple[Diagnosis, ...]) -> None:
        if found != self.diagnoses:
            self.diagnoses = found
            self.version += 1
            self.diagnoses_version = self.version

    # -- rows -----------------------------------------------------------------------------------

    def view(self, shard_id: str) -> ShardView:
        """The shard's row (a new one, waiting, the first time it is asked for)."""
        view = self.shards.get(shard_id)
        if view is None:
            view = self._stamp(ShardView(shard_id))
        return view

    def put(self, view: ShardView) -> ShardView:
        """The row's next value: stamped with the next version when it differs from the row
        held now (else the row held now is kept, version and all)."""
        old = self.shards.get(view.shard_id)
        if old is not None and view[:_VERSION] == old[:_VERSION]:
            return old
        return self._stamp(view)

    def writer(self, *names: str) -> Callable[[ShardView, Sequence[Any]], ShardView]:
        """:meth:`update` for a writer that sets the same fields of many rows (a scan of a
        thousand leases): the names are looked up once, and ``write(row, values)`` (the row
        as :meth:`view` gave it; the values in the names' order) compares the whole row at
        once, as :meth:`put` does. Half of :meth:`update`'s time at a dozen fields."""
        indices = tuple(_FIELD[name] for name in names)

        def write(old: ShardView, values: Sequence[Any]) -> ShardView:
            fields = list(old)
            for i, value in zip(indices, values, strict=True):
                fields[i] = value
            if old == tuple(fields):  # the version was copied: equal content, equal rows
                return old
            self.version += 1
            fields[_VERSION] = self.version
            new = self.shards[old.shard_id] = _new_row(ShardView, fields)
            return new

        return write

    def update(self, shard_id: str, **changes: Any) -> ShardView:
        """The row with ``changes`` (ShardView's fields), as :meth:`put` takes it."""
        old = self.view(shard_id)
        fields: list[Any] | None = None  # copied on the first field that differs
        for name, value in changes.items():
            i = _FIELD[name]
            held = old[i]
            if held is not value and held != value:
                if fields is None:
                    fields = list(old)
                fields[i] = value
        if fields is None:
            return old
        self.version += 1
        fields[_VERSION] = self.version
        new = self.shards[shard_id] = _new_row(ShardView, fields)
        return new

    def checkpointed(self, saved: Iterable[tuple[str, Position, bool]], at: float) -> None:
        """Rows whose checkpoints a flush wrote at ``at``: (shard, position, and whether the
        reading position moves there too, as a change's does). A flush's thousand rows each
        differ (``at`` is new), so each is remade once, without :meth:`update`'s comparisons:
        this is the flush's hot loop."""
        cp_i, at_i, pos_i = _FIELD["checkpoint"], _FIELD["checkpoint_at"], _FIELD["position"]
        shards = self.shards
        for shard_id, position, moves in saved:
            fields = list(self.view(shard_id))
            fields[cp_i] = position
            fields[at_i] = at
            if moves:
                fields[pos_i] = position
            self.version += 1
            fields[_VERSION] = self.version
            shards[shard_id] = _new_row(ShardView, fields)

    def remove(self, shard_id: str) -> None:
        if self.shards.pop(shard_id, None) is not None:
            self.version += 1

    def _stamp(self, view: ShardView) -> ShardView:
        self.version += 1
        stamped = self.shards[view.shard_id] = view._replace(version=self.version)
        return stamped

    def set_status(self, shard_id: str, status: ShardStatus, error: str | None = None) -> None:
        """A status, and its reason when it is an error; leaving the error statuses clears the
        reason."""
        view = self.view(shard_id)
        if view.status is status and view.last_error == error:
            return
        if error is not None:
            self.put(view._replace(status=status, last_error=error, error_at=time.time()))
        elif status is not ShardStatus.FAILING and status is not ShardStatus.FAILED:
            self.put(view._replace(status=status, last_error=None, error_at=None))
        else:
            self.put(view._replace(status=status))

    def processed(
        self,
        shard_id: str,
        *,
        records: list[Record],
        position: Position,
        arrival: float | None,
        lag_ms: int | None,
    ) -> None:
        """A batch handed to the processor and returned from: once per batch."""
        view = self.view(shard_id)
        size = sum([len(r.data) for r in records])
        self.records_total += len(records)
        self.bytes_total += size
        recent = (
            peek(records)
            if len(records) >= PEEK_RECORDS
            else (*view.recent, *peek(records))[-PEEK_RECORDS:]
        )
        self.put(
            view._replace(
                records=view.records + len(records),
                bytes=view.bytes + size,
                position=position,
                last_arrival=arrival,
                recent=recent,
                lag_ms=lag_ms,
            )
        )

    def count_error(self, shard_id: str, kind: str) -> None:
        """An error met and retried on a shard (throttled, source_error, expired,
        processor_error)."""
        self.retries[kind] += 1
        view = self.view(shard_id)
        errors = dict(view.errors)
        errors[kind] = errors.get(kind, 0) + 1
        self.put(view._replace(errors=MappingProxyType(errors)))

    def count_parked(self, shard_id: str, n: int) -> None:
        view = self.view(shard_id)
        self.put(view._replace(parked=view.parked + n))

    def processor_time(self, shard_id: str, seconds: float) -> None:
        view = self.view(shard_id)
        self.put(view._replace(timings=view.timings.observe(seconds)))

    def count_get_records(self) -> None:
        self.get_records_calls += 1

    def set_lineage(self, lineage: Lineage) -> None:
        self.lineage = lineage
        self.version += 1
        self.lineage_version = self.version

    def changed_since(self, version: int) -> list[ShardView]:
        return [v for v in self.shards.values() if v.version > version]

    # -- what the status line says ------------------------------------------------------------

    def retries_text(self) -> str:
        """What the stream has put us through, in one phrase: ``throttled=3 expired=1``."""
        return " ".join(f"{k}={v}" for k, v in sorted(self.retries.items()) if v)

    def totals(self) -> Totals:
        """One pass over the rows, at most once per version: a thousand rows are read once
        per console tick, not once per figure, and not at all when nothing changed."""
        cached = self._totals
        if cached is not None and cached[0] == self.version:
            return cached[1]
        counts: dict[ShardStatus, int] = {}
        count = counts.get
        most: int | None = None
        total = 0
        oldest: float | None = None
        for view in self.shards.values():
            status = view.status
            counts[status] = count(status, 0) + 1
            lag = view.lag_ms
            if lag is not None:
                total += lag
                if most is None or lag > most:
                    most = lag
            at = view.checkpoint_at
            if at is not None and (oldest is None or at < oldest) and status not in FINISHED:
                oldest = at
        totals = Totals(Counter(counts), most, None if most is None else total, oldest)
        self._totals = (self.version, totals)
        return totals

    def counts(self) -> Counter[ShardStatus]:
        return self.totals().counts

    def max_lag_ms(self) -> int | None:
        return self.totals().max_lag_ms

    def oldest_checkpoint_at(self) -> float | None:
        return self.totals().oldest_checkpoint_at


class Rates:
    """Records per second, per shard and in all, from the counters the workers bump per batch;
    ``tick`` once per interval. In fleet mode only this worker's shards: another worker's rate
    comes from its heartbeat."""

    def __init__(self, state: EngineState) -> None:
        self.state = state
        self.previous: dict[str, int] = {}
        self.previous_total = state.records_total

    def tick(self, dt: float) -> None:
        state, previous = self.state, self.previous
        me = state.worker_id
        for sid, view in list(state.shards.items()):
            if me is not None and view.owner != me:
                continue
            rate = (view.records - previous.get(sid, view.records)) / dt
            previous[sid] = view.records
            if rate != view.rate:
                state.put(view._replace(rate=rate))
        state.rate = (state.records_total - self.previous_total) / dt
        self.previous_total = state.records_total

    async def run(self, interval: float) -> None:
        """``tick`` every ``interval`` seconds (the time that really passed), for ever."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            self.tick(max(now - last, 1e-6))
            last = now
