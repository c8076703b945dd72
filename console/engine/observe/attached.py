"""What every attached console shares (``shard-console attach``): an
:class:`~console.engine.api.Engine` that consumes nothing, over a store another process writes.
console.engine.observe.leases watches a lease table, console.engine.observe.database a local
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from typing import Any

from console.checkpoints.base import CheckpointStore, StreamRecord
from console.engine.changes.plan import ControlError
from console.engine.changes.service import checkpoint_position
from console.engine.events import EventLog
from console.engine.lineage import Lineage
from console.engine.read.browse import PAGE, Page, read_page
from console.engine.read.pacing import Pacers
from console.engine.state import EngineState
from console.model import HistoryEntry, Position
from console.sources.base import StreamInfo, StreamSource


async def stream_record_of(
    store: CheckpointStore, source: StreamSource, info: StreamInfo
) -> tuple[StreamRecord, bool]:
    """The stream as the store registered it (a shard-console fleet's), or as described now
    (a KCL application's: it registers nothing); and whether it was registered."""
    for record in await store.streams():
        if source.stream in (record.stream, record.name) or info.arn == record.stream:
            return record, True
    record = StreamRecord(
        info.arn or source.stream,
        source.stream,
        source.kind,
        Position.trim_horizon(),
        time.time(),
        info.retention_hours,
    )
    return record, False


class Attached(ABC):
    """What every attached engine shares: the snapshot, the events, the loops, history."""

    confirm_by_name = True  # a change to someone else's consumer: type the stream's name

    def __init__(self, store: CheckpointStore, state: EngineState, read_only: bool) -> None:
        self._pacers: Pacers | None = None  # the browser's, at the stream's pace
        self.store: CheckpointStore = store
        self.state = state
        self.events = EventLog()
        self.record: StreamRecord | None = None
        self._read_only = read_only
        self._failure: str | None = None
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    @property
    def lineage(self) -> Lineage:
        return self.state.lineage

    @property
    def failure(self) -> str | None:
        return self._failure

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def stopped(self) -> asyncio.Event:
        return self._stopped

    @abstractmethod
    async def start(self) -> None:
        """Read what there is to show (the first screen), then keep watching."""

    def _loop(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self._failure = f"{name} failed: {t.exception()}"
                self._stopped.set()

        task.add_done_callback(done)
        self._tasks.append(task)
        return task

    def request_stop(self, reason: str | None = None) -> None:
        self._stopped.set()

    async def run(self, duration: float | None = None) -> None:
        try:
            await self.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), duration)
        finally:
            await self.stop()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._stopped.set()

    async def history(self, shard_id: str | None = None, limit: int = 50) -> list[HistoryEntry]:
        assert self.record is not None
        return await self.store.history(self.record.stream, shard_id, limit)

    async def checkpoint_position(self, shard_id: str, entry_id: int) -> Position:
        assert self.record is not None
        return await checkpoint_position(self.store, self.record.stream, shard_id, entry_id)

    async def browse(self, shard_id: str, start: Position | None = None, limit: int = PAGE) -> Page:
        """A page of the shard's records (None: from its checkpoint), when this console reads
        the stream; a database's console does not."""
        source = self.browse_source
        if source is None:
            raise ControlError(
                "this console reads the consumer's database, not the stream: use "
                "shard-console tail STREAM --shard ID to read its records"
            )
        if start is None:
            assert self.record is not None
            checkpoint = (await self.store.load(self.record.stream)).get(shard_id)
            start = checkpoint.position if checkpoint else Position.trim_horizon()
        if self._pacers is None:
            self._pacers = Pacers(source.min_call_interval)
        return await read_page(source, self._pacers[shard_id], shard_id, start, limit)

    @property
    def browse_source(self) -> StreamSource | None:
        """The stream, when this console reads it (a lease table's); None for a database's."""
        return None
