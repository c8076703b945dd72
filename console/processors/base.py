"""The processor interface the engine calls, and the wrapper for a user's callable."""

from __future__ import annotations

import abc
import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from console.model import Record, ShardContext


class RecordFailed(Exception):
    """Raise this from a processor to name the record that failed.

    Records of the batch before it count as processed; "skip past the failing record" then
    skips exactly this one. Any other exception points at the first record of the batch."""

    def __init__(self, record: Record, cause: BaseException | str | None = None) -> None:
        super().__init__(str(cause) if cause is not None else "record failed")
        self.record = record


class Processor(abc.ABC):
    """What the engine calls. Subclass it, or pass ``module:function`` and let
    :class:`CallableProcessor` wrap your callable.

    ``process`` gets one batch of one shard, in sequence order; the batch counts as processed
    when it returns. ``flush`` runs before every checkpoint write, so output that ``flush``
    makes durable is never behind the checkpoint that covers it."""

    name = "processor"

    async def open(self) -> Sequence[str] | None:
        """Before the first batch. May return warnings for the operator (one line each)."""
        return None

    @abc.abstractmethod
    async def process(self, records: list[Record], ctx: ShardContext) -> None: ...

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


class CallableProcessor(Processor):
    """A user's ``module:function``. Async callables are awaited on the loop; sync ones run in a
    worker thread so a slow one cannot freeze the console. Optional ``flush`` and ``close``
    attributes of the callable are honoured the same way."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn = fn
        self.name = name
        call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound __call__ of objects
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)

    async def process(self, records: list[Record], ctx: ShardContext) -> None:
        if self._is_async:
            await self.fn(records, ctx)
            return
        result = await asyncio.to_thread(self.fn, records, ctx)
        if inspect.isawaitable(result):
            await result

    async def _optional(self, attr: str) -> None:
        hook = getattr(self.fn, attr, None)
        if not callable(hook):
            return
        if inspect.iscoroutinefunction(hook):
            await hook()
        else:
            await asyncio.to_thread(hook)

    async def flush(self) -> None:
        await self._optional("flush")

    async def close(self) -> None:
        await self._optional("close")
