"""The versioned snapshot the UI and the headless status line read, at their own rate.

The engine owns and mutates it on the event loop; readers run on the same loop and only read.
Every change to a shard's row bumps the global version and stamps the row with it, so a reader
that remembers the version it last drew asks :meth:`EngineState.changed_since` for exactly the
rows to redraw. Nothing here is pushed per record: workers update a row once per batch.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from console.checkpoints.base import WorkerView
from console.engine.diagnosis import Diagnosis
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


class Timings:
    """How long the processor took per batch, as a histogram: one bucket bump per batch."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(PROCESS_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(PROCESS_BUCKETS, seconds)] += 1
        self.total += seconds

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


@dataclass(slots=True, eq=False)
class ShardView:
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
    errors: Counter[str] = field(default_factory=Counter)  # met and retried, by kind
    timings: Timings = field(default_factory=Timings)  # processor time per batch
    last_error: str | None = None
    error_at: float | None = None
    last_arrival: float | None = None  # approximate arrival time of the last record read
    # The last few records read, for the detail screen's peek. Data is cut to PEEK_BYTES: a
    # thousand shards of 1 MB records must not pin gigabytes.
    recent: tuple[Record, ...] = ()
    # Fleet mode (a lease table): who holds the shard's lease, its counter, and how long ago
    # the counter last moved; expired: nobody renews it.
    owner: str | None = None
    lease_counter: int | None = None
    counter_age: float | None = None
    lease_expired: bool = False
    mode: str | None = None  # how its worker reads (or read): "polling" or "fan-out"
    version: int = 0


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
        # Fleet mode: this worker's id in the lease table, and every worker's last heartbeat.
        self.worker_id: str | None = None
        self.workers: tuple[WorkerView, ...] = ()
        # Enhanced fan-out: the stream consumer this process reads as (None: polling).
        self.fan_out: str | None = None
        # An attached console (console.engine.attach): what it watches, in words; None when
        # this process is the consumer.
        self.attached_to: str | None = None
        self.lease_table: str | None = None  # attached to a lease table (not a database)
        # What an attached console finds wrong (console.engine.diagnosis), worst first; its
        # version moves only when the findings change.
        self.diagnoses: tuple[Diagnosis, ...] = ()
        self.diagnoses_version = 0

    @property
    def leased(self) -> bool:
        """Shards are held by leases: a fleet's worker, or a console attached to a table."""
        return self.worker_id is not None or self.lease_table is not None

    def set_diagnoses(self, found: tuple[Diagnosis, ...]) -> None:
        if found != self.diagnoses:
            self.diagnoses = found
            self.version += 1
            self.diagnoses_version = self.version

    def touch(self, view: ShardView) -> None:
        self.version += 1
        view.version = self.version

    def view(self, shard_id: str) -> ShardView:
        view = self.shards.get(shard_id)
        if view is None:
            view = self.shards[shard_id] = ShardView(shard_id)
            self.touch(view)
        return view

    def set_status(self, view: ShardView, status: ShardStatus, error: str | None = None) -> None:
        if view.status is status and view.last_error == error:
            return
        view.status = status
        if error is not None:
            view.last_error = error
            view.error_at = time.time()
        elif status is not ShardStatus.FAILING and status is not ShardStatus.FAILED:
            view.last_error = None
            view.error_at = None
        self.touch(view)

    def set_lineage(self, lineage: Lineage) -> None:
        self.lineage = lineage
        self.version += 1
        self.lineage_version = self.version

    def changed_since(self, version: int) -> list[ShardView]:
        return [v for v in self.shards.values() if v.version > version]

    def count_error(self, view: ShardView, kind: str) -> None:
        """An error met and retried on a shard (throttled, source_error, expired,
        processor_error)."""
        self.retries[kind] += 1
        view.errors[kind] += 1

    def retries_text(self) -> str:
        """What the stream has put us through, in one phrase: ``throttled=3 expired=1``."""
        return " ".join(f"{k}={v}" for k, v in sorted(self.retries.items()) if v)

    def counts(self) -> Counter[ShardStatus]:
        return Counter(v.status for v in self.shards.values())

    def max_lag_ms(self) -> int | None:
        lags = [v.lag_ms for v in self.shards.values() if v.lag_ms is not None]
        return max(lags) if lags else None

    def oldest_checkpoint_at(self) -> float | None:
        times = [
            v.checkpoint_at
            for v in self.shards.values()
            if v.checkpoint_at is not None and v.status not in FINISHED
        ]
        return min(times) if times else None


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
        for sid, view in state.shards.items():
            if me is not None and view.owner != me:
                continue
            rate = (view.records - previous.get(sid, view.records)) / dt
            previous[sid] = view.records
            if rate != view.rate:
                view.rate = rate
                state.touch(view)
        state.rate = (state.records_total - self.previous_total) / dt
        self.previous_total = state.records_total
