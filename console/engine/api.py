"""What a front end (the TUI, the headless runner) may use of a running engine.

:class:`~console.engine.consume.consumer.Consumer` provides it. A front end reads ``state`` and
``events`` at its own rate and sends requests through ``control``; it never calls AWS or the
store itself.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from console.engine.changes.plan import ControlRequest
from console.engine.changes.service import Preview
from console.engine.events import EventLog
from console.engine.lineage import Lineage
from console.engine.read.browse import Page
from console.engine.state import EngineState
from console.model import HistoryEntry, Position


class ControlOutcome(Protocol):
    @property
    def command_id(self) -> int: ...

    @property
    def ok(self) -> bool: ...

    @property
    def message(self) -> str: ...


class Engine(Protocol):
    @property
    def state(self) -> EngineState: ...

    @property
    def events(self) -> EventLog: ...

    @property
    def lineage(self) -> Lineage: ...

    @property
    def failure(self) -> str | None: ...

    @property
    def read_only(self) -> bool: ...

    @property
    def confirm_by_name(self) -> bool:
        """Every change asks for the stream's name to be typed (a consumer we do not run)."""
        ...

    @property
    def stopped(self) -> asyncio.Event: ...

    async def control(self, request: ControlRequest) -> ControlOutcome: ...

    async def preview(self, request: ControlRequest) -> Preview:
        """What ``request`` would write (its ``summary`` is what a dialog shows); ControlError
        when it cannot apply."""
        ...

    async def history(self, shard_id: str | None = None, limit: int = 50) -> list[HistoryEntry]: ...

    async def checkpoint_position(self, shard_id: str, entry_id: int) -> Position:
        """The position history entry ``entry_id`` of the shard recorded; ControlError if it
        recorded none."""
        ...

    async def browse(self, shard_id: str, start: Position | None = None, limit: int = 50) -> Page:
        """A page of the shard's records from ``start`` (None: where the shard fails, else its
        checkpoint), read without moving anything; ControlError where it cannot be read."""
        ...

    async def start(self) -> None: ...

    def request_stop(self, reason: str | None = None) -> None: ...

    async def run(self, duration: float | None = None) -> None: ...

    async def stop(self) -> None: ...
