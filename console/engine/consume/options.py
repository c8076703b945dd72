"""What a consumer is told: its options, and the workers' options made from them. Those that
are settings take their defaults from the settings' table (console.settings): declared once."""

from __future__ import annotations

from dataclasses import dataclass, field

from console.engine.consume.fanout import FanOutOptions
from console.engine.consume.poison import FailurePolicy
from console.engine.consume.worker import WorkerOptions
from console.model import Position
from console.settings import default
from console.sources.base import StreamSource


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    initial_position: Position = field(default_factory=Position.trim_horizon)
    discovery_interval: float = default("discovery_interval")
    flush_interval: float = default("flush_interval")
    idle_interval: float = default("idle_interval")
    records_per_call: int | None = default("records_per_call")  # None: the service's maximum
    max_records: int | None = default("max_records")  # stop after this many records in all
    processor_timeout: float | None = default("processor_timeout")  # None: wait forever
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    processor_backoff_cap: float = 30.0
    history_interval: float = 60.0
    command_interval: float = 1.0
    tick_interval: float = 1.0
    read_only: bool = default("read_only")  # refuse every operator change
    # Enhanced fan-out: the stream consumer's name (None: GetRecords polling).
    fan_out: str | None = default("fan_out")
    deregister_on_exit: bool = default("deregister_on_exit")
    fan_out_options: FanOutOptions = field(default_factory=FanOutOptions)
    # What a batch the processor keeps failing on does (console.engine.consume.poison), and
    # where parked records also go (--dead-letter).
    failure: FailurePolicy = field(default_factory=FailurePolicy)
    dead_letter: str | None = default("dead_letter")


def worker_options(options: ConsumerOptions, source: StreamSource) -> WorkerOptions:
    limit = options.records_per_call or source.max_records_per_call
    return WorkerOptions(
        limit=min(limit, source.max_records_per_call),
        min_call_interval=source.min_call_interval,
        idle_interval=options.idle_interval,
        backoff_base=options.backoff_base,
        backoff_cap=options.backoff_cap,
        processor_backoff_cap=options.processor_backoff_cap,
        processor_timeout=options.processor_timeout,
        failure=options.failure,
    )
