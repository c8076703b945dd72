"""Headless mode (``--no-ui``): the same engine, with log lines instead of widgets.

Events become one line each (text or JSON) on stderr; a status line follows every few seconds.
stdout stays for the processor (``--processor print``). SIGINT or SIGTERM stops the consumer
gracefully (finish the batch in hand, flush, exit 0); a second signal exits at once
(see console.cli.signals).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any, TextIO

from console.engine.api import Engine
from console.engine.events import Event
from console.engine.snapshot import status_fields
from console.engine.state import EngineState
from console.model import format_ts
from console.redact import REDACTOR


def status_text(state: EngineState) -> str:
    f = status_fields(state)
    shards = " ".join(f"{k}={v}" for k, v in f["shards"].items()) or "no shards"
    if f["all_failing_s"] is not None:
        lag = f"unknown: every shard failing for {f['all_failing_s']:g} s"
    else:
        lag = "-" if f["max_lag_ms"] is None else f"{f['max_lag_ms']} ms"
    parts = [shards, f"{f['records_per_s']:g} rec/s", f"max lag {lag}", f"{f['records']} records"]
    if f["oldest_checkpoint_s"] is not None:
        parts.append(f"oldest checkpoint {f['oldest_checkpoint_s']:g} s")
    if state.retries_text():
        parts.append("retries " + state.retries_text())
    if "worker" in f:
        parts.append(f"worker {f['worker']}: {f['leases_held']} leases, {f['workers']} workers")
    return " | ".join(parts)


class LinePrinter:
    """Writes events and status lines; everything passes through the redactor."""

    def __init__(self, fmt: str = "text", out: TextIO | None = None) -> None:
        self.fmt = fmt
        self.out = out

    def _write(self, line: str) -> None:
        out = self.out or sys.stderr
        out.write(REDACTOR(line) + "\n")
        out.flush()

    def line(
        self, level: str, kind: str, message: str, *, at: float | None = None, **fields: Any
    ) -> None:
        """One line; ``at``: when it happened (an event told late, a console attached to a
        consumer's past, keeps its own time), else now."""
        now = time.time() if at is None else at
        if self.fmt == "json":
            payload = {"ts": format_ts(now), "level": level, "event": kind, "message": message}
            payload.update(fields)
            self._write(json.dumps(payload, default=str))
        else:
            self._write(f"{format_ts(now)} {level.upper():<7} {message}")

    def event(self, event: Event) -> None:
        extra: dict[str, Any] = dict(event.fields)
        if event.shard_id:
            extra["shard_id"] = event.shard_id
        self.line(event.level.value, event.kind, event.message, at=event.at, **extra)

    def status(self, state: EngineState) -> None:
        if self.fmt == "json":
            self.line("info", "status", status_text(state), **status_fields(state))
        else:
            self.line("status", "status", status_text(state))


async def run_headless(
    consumer: Engine,
    printer: LinePrinter,
    *,
    duration: float | None = None,
    status_interval: float = 5.0,
) -> int:
    """Start (if needed), run until stopped, stop. Returns the exit code: 0, or 1 when the run
    failed. Start-up errors propagate to the caller, which maps them to exit 2. Signals are the
    caller's (console.cli.signals): they stop the consumer, and this returns."""

    told: set[tuple[object, str, str]] = set()

    def findings() -> None:
        """What an attached console finds wrong: each finding once, when it appears (again
        after it has gone away)."""
        nonlocal told
        now = {d.key: d for d in consumer.state.diagnoses}
        for key, d in now.items():
            if key not in told:
                printer.line("warning", "finding", d.line(), subject=d.subject)
        told = set(now)

    async def report() -> None:
        tick = min(1.0, status_interval)
        last = time.monotonic()
        while True:
            findings()
            await asyncio.sleep(tick)
            if time.monotonic() - last >= status_interval - tick / 2:
                last = time.monotonic()
                printer.status(consumer.state)

    reporter: asyncio.Task[None] | None = None
    try:
        await consumer.start()
        reporter = asyncio.create_task(report(), name="status line")
        await consumer.run(duration)
    finally:
        if reporter is not None:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
    findings()
    printer.status(consumer.state)
    return 1 if consumer.failure else 0
