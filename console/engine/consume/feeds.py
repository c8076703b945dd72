"""Where a shard worker's batches come from: GetRecords polling, or an enhanced fan-out
subscription (engine/fanout.py). The worker does the rest alike: processing, checkpoints,
shard end, operator changes."""

from __future__ import annotations

import asyncio
from typing import Protocol

from console.engine.read.pacing import Pacer
from console.engine.state import EngineState
from console.model import Batch, Position
from console.sources.base import StreamSource


class Feed(Protocol):
    mode: str  # "polling" or "fan-out": shown on the shard's row
    idles: bool  # caught up: the worker waits its idle interval (polling) or reads on (pushed)

    async def read(self, at: Position, limit: int) -> Batch:
        """The next batch. ``at`` is where to start when the feed has no place of its own yet
        (a new worker, or after :meth:`restart`). ``Batch.next_iterator`` is None at the
        shard's end."""
        ...

    def restart(self) -> None:
        """Forget the place: the next read starts at its ``at``."""
        ...

    async def aclose(self) -> None: ...


class PollingFeed:
    """GetRecords on a shard iterator, at most one call per the pacer's interval."""

    mode = "polling"
    idles = True

    def __init__(
        self, source: StreamSource, shard_id: str, pacer: Pacer, state: EngineState
    ) -> None:
        self.source = source
        self.shard_id = shard_id
        self.pacer = pacer
        self.state = state
        self._iterator: str | None = None

    async def read(self, at: Position, limit: int) -> Batch:
        if self._iterator is None:
            self._iterator = await self.source.get_iterator(self.shard_id, at)
        wait = self.pacer.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
        self.state.count_get_records()
        batch = await self.source.get_records(self._iterator, limit)
        self._iterator = batch.next_iterator
        return batch

    def restart(self) -> None:
        self._iterator = None

    async def aclose(self) -> None:
        self._iterator = None
