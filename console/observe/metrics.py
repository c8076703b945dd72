"""Prometheus metrics, read from the engine's snapshot at scrape time.

Nothing here is on the record path: the workers keep plain counters on their shard's row once per
batch (console.engine.state), and a scrape turns the rows into metric families with
``prometheus-client``. A shard has series only while it is this process's to read: when it
finishes (a split or merge closed it) or its lease is lost, the next scrape no longer shows its
label sets, so series do not pile up across reshardings.

Counters of things that happen (leases taken and lost, resharding, operator changes) come from the
engine's events, counted as they are emitted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from console import __version__
from console.engine.events import Event, EventLog
from console.engine.state import FINISHED, PROCESS_BUCKETS, EngineState, ShardView
from console.model import ShardStatus

PREFIX = "shard_console_"


@dataclass(frozen=True, slots=True)
class MetricDoc:
    name: str  # as scraped (counters with their _total)
    kind: str  # counter, gauge, histogram
    help: str
    kcl: str  # the Kinesis Client Library metric it corresponds to, or "-"
    per_shard: bool = False
    fleet_only: bool = False


# Every metric this module serves: the README's table and the tests are held to this list.
METRICS: tuple[MetricDoc, ...] = (
    MetricDoc(
        "shard_console_shard_records_processed_total",
        "counter",
        "Records handed to the processor and returned from, by shard",
        "RecordsProcessed",
        per_shard=True,
    ),
    MetricDoc(
        "shard_console_shard_bytes_processed_total",
        "counter",
        "Bytes of record data processed, by shard",
        "DataBytesProcessed",
        per_shard=True,
    ),
    MetricDoc(
        "shard_console_shard_behind_latest_seconds",
        "gauge",
        "How far the shard's reader is behind the stream's tip (MillisBehindLatest / 1000)",
        "MillisBehindLatest",
        per_shard=True,
    ),
    MetricDoc(
        "shard_console_shard_checkpoint_age_seconds",
        "gauge",
        "Seconds since the shard's checkpoint was last written",
        "- (the KCL has none; UpdateLease.Time is nearest)",
        per_shard=True,
    ),
    MetricDoc(
        "shard_console_shard_processor_seconds",
        "histogram",
        "Time the processor took per batch it returned from (attempts that raised are errors)",
        "RecordProcessor.processRecords.Time",
        per_shard=True,
    ),
    MetricDoc(
        "shard_console_shard_errors_total",
        "counter",
        "Errors met and retried, by shard and kind (throttled, source_error, expired, "
        "processor_error)",
        "KinesisDataFetcher.getRecords.Success, ProcessTask.Success (their failures)",
        per_shard=True,
    ),
    MetricDoc(
        "shard_console_records_parked_total",
        "counter",
        "Records parked by --on-failure park (the processor kept failing on them), by shard",
        "- (the KCL has none)",
        per_shard=True,
    ),
    MetricDoc(
        "shard_console_shard_status",
        "gauge",
        "1 for the shard's current status (active, failing, paused, ...)",
        "-",
        per_shard=True,
    ),
    MetricDoc(
        "shard_console_records_processed_total",
        "counter",
        "Records processed by this process, all shards (finished ones included)",
        "RecordsProcessed (summed)",
    ),
    MetricDoc(
        "shard_console_bytes_processed_total",
        "counter",
        "Bytes of record data processed by this process, all shards",
        "DataBytesProcessed (summed)",
    ),
    MetricDoc(
        "shard_console_shards",
        "gauge",
        "Shards by status, as this process sees the stream",
        "-",
    ),
    MetricDoc(
        "shard_console_get_records_calls_total",
        "counter",
        "GetRecords calls made",
        "KinesisDataFetcher.getRecords (count)",
    ),
    MetricDoc(
        "shard_console_throttles_total",
        "counter",
        "Calls the stream throttled (retried with backoff)",
        "KinesisDataFetcher.getRecords.Success (its throttled failures)",
    ),
    MetricDoc(
        "shard_console_resharding_events_total",
        "counter",
        "Splits and merges seen, each once (by the parents of the shards it made)",
        "- (the KCL runs a ShardSyncTask)",
    ),
    MetricDoc(
        "shard_console_operator_changes_total",
        "counter",
        "Operator changes (rewind, skip, pause, resume, undo), by outcome: applied, refused, "
        "failed",
        "-",
    ),
    MetricDoc(
        "shard_console_ready",
        "gauge",
        "1 once started (stream described, checkpoints loaded, workers running), else 0",
        "-",
    ),
    MetricDoc(
        "shard_console_info",
        "gauge",
        "Always 1; labels: version, stream, source",
        "-",
    ),
    MetricDoc(
        "shard_console_leases_held",
        "gauge",
        "Leases this worker holds",
        "CurrentLeases",
        fleet_only=True,
    ),
    MetricDoc(
        "shard_console_leases_taken_total",
        "counter",
        "Leases this worker took (expired or stolen)",
        "TakenLeases (of TakeLeases)",
        fleet_only=True,
    ),
    MetricDoc(
        "shard_console_leases_lost_total",
        "counter",
        "Leases this worker lost to another worker or an operator",
        "LostLeases (of RenewAllLeases)",
        fleet_only=True,
    ),
)
_DOC = {m.name: m for m in METRICS}


def _help(name: str) -> str:
    return _DOC[name].help


class Observed(Protocol):
    """What the metrics and the health endpoints read: a consumer
    (console.engine.consume.consumer)."""

    @property
    def state(self) -> EngineState: ...

    @property
    def events(self) -> EventLog: ...

    @property
    def failure(self) -> str | None: ...

    @property
    def ready(self) -> bool: ...


class EventCounts:
    """Counts the engine's events that metrics count: subscribed before the consumer starts."""

    def __init__(self, events: EventLog) -> None:
        self.kinds: Counter[str] = Counter()
        self.operator: Counter[str] = Counter()
        self.reshardings: set[tuple[str, ...]] = set()  # each split or merge: its parents
        for event in events.since(0):
            self._count(event)
        self.unsubscribe = events.subscribe(self._count)

    def _count(self, event: Event) -> None:
        self.kinds[event.kind] += 1
        if event.kind == "operator":
            self.operator[str(event.fields.get("outcome", "applied"))] += 1
        elif event.kind == "resharded":
            self.reshardings.update(tuple(p) for p in event.fields.get("operations", ()))


def _reported(view: ShardView, me: str | None) -> bool:
    """Whether a shard's series are served: while it is ours to read and not finished."""
    if view.status in FINISHED:
        return False
    return me is None or view.owner == me


class ConsumerCollector(Collector):
    """The metric families of one consumer, made from its state at each scrape."""

    def __init__(self, consumer: Observed) -> None:
        self.consumer = consumer
        self.counts = EventCounts(consumer.events)

    def collect(self) -> Iterator[Metric]:
        state = self.consumer.state
        me = state.worker_id
        base = ["stream"] + (["worker"] if me else [])
        base_values = [state.stream] + ([me] if me else [])
        labels = [*base, "shard_id"]
        now = time.time()

        records = CounterMetricFamily(
            "shard_console_shard_records_processed",
            _help("shard_console_shard_records_processed_total"),
            labels=labels,
        )
        size = CounterMetricFamily(
            "shard_console_shard_bytes_processed",
            _help("shard_console_shard_bytes_processed_total"),
            labels=labels,
        )
        behind = GaugeMetricFamily(
            "shard_console_shard_behind_latest_seconds",
            _help("shard_console_shard_behind_latest_seconds"),
            labels=labels,
        )
        age = GaugeMetricFamily(
            "shard_console_shard_checkpoint_age_seconds",
            _help("shard_console_shard_checkpoint_age_seconds"),
            labels=labels,
        )
        took = HistogramMetricFamily(
            "shard_console_shard_processor_seconds",
            _help("shard_console_shard_processor_seconds"),
            labels=labels,
        )
        errors = CounterMetricFamily(
            "shard_console_shard_errors",
            _help("shard_console_shard_errors_total"),
            labels=[*labels, "kind"],
        )
        parked = CounterMetricFamily(
            "shard_console_records_parked",
            _help("shard_console_records_parked_total"),
            labels=labels,
        )
        status = GaugeMetricFamily(
            "shard_console_shard_status",
            _help("shard_console_shard_status"),
            labels=[*labels, "status"],
        )
        bounds = [repr(float(b)) for b in PROCESS_BUCKETS] + ["+Inf"]  # 1.0, as Prometheus
        names = [*base, "shard_id"]
        # Samples are added directly (Metric.add_sample), one labels dict per shard shared by
        # its series: this is the cost of a scrape at a thousand shards.
        for view in state.shards.values():
            if not _reported(view, me):
                continue
            tags = dict(zip(names, [*base_values, view.shard_id], strict=True))
            records.add_sample("shard_console_shard_records_processed_total", tags, view.records)
            size.add_sample("shard_console_shard_bytes_processed_total", tags, view.bytes)
            if view.lag_ms is not None:
                behind.add_sample(behind.name, tags, view.lag_ms / 1000)
            if view.checkpoint_at is not None:
                age.add_sample(age.name, tags, max(0.0, now - view.checkpoint_at))
            timings = view.timings
            running = 0
            for le, n in zip(bounds, timings.counts, strict=True):
                running += n
                took.add_sample(f"{took.name}_bucket", {**tags, "le": le}, running)
            took.add_sample(f"{took.name}_count", tags, running)
            took.add_sample(f"{took.name}_sum", tags, timings.total)
            for kind, n in view.errors.items():
                errors.add_sample("shard_console_shard_errors_total", {**tags, "kind": kind}, n)
            parked.add_sample("shard_console_records_parked_total", tags, view.parked)
            status.add_sample(status.name, {**tags, "status": view.status.value}, 1)
        yield from (records, size, behind, age, took, errors, parked, status)
        yield from self._process(state, base, base_values)

    def _process(self, state: EngineState, base: list[str], values: list[str]) -> Iterator[Metric]:
        counts = self.counts
        me = state.worker_id

        def counter(name: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, _help(f"{name}_total"), labels=base)
            family.add_metric(values, value)
            return family

        def gauge(name: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, _help(name), labels=base)
            family.add_metric(values, value)
            return family

        yield counter("shard_console_records_processed", state.records_total)
        yield counter("shard_console_bytes_processed", state.bytes_total)
        by_status = GaugeMetricFamily(
            "shard_console_shards", _help("shard_console_shards"), labels=[*base, "status"]
        )
        shown = state.counts()
        for s in ShardStatus:
            by_status.add_metric([*values, s.value], shown[s])
        yield by_status
        yield counter("shard_console_get_records_calls", state.get_records_calls)
        yield counter("shard_console_throttles", state.retries["throttled"])
        yield counter("shard_console_resharding_events", len(counts.reshardings))
        changes = CounterMetricFamily(
            "shard_console_operator_changes",
            _help("shard_console_operator_changes_total"),
            labels=[*base, "outcome"],
        )
        for outcome in ("applied", "refused", "failed"):
            changes.add_metric([*values, outcome], counts.operator[outcome])
        yield changes
        yield gauge("shard_console_ready", 1.0 if self.consumer.ready else 0.0)
        info = GaugeMetricFamily(
            "shard_console_info",
            _help("shard_console_info"),
            labels=["version", "stream", "source"],
        )
        info.add_metric([__version__, state.stream, state.source_kind], 1)
        yield info
        if me is not None:
            held = sum(1 for v in state.shards.values() if v.owner == me)
            yield gauge("shard_console_leases_held", held)
            yield counter("shard_console_leases_taken", counts.kinds["lease_taken"])
            yield counter("shard_console_leases_lost", counts.kinds["lease_lost"])


def registry_for(consumer: Observed) -> CollectorRegistry:
    """A registry of its own (not the process-global one): only this consumer's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConsumerCollector(consumer))
    return registry
