"""The processor interface the engine calls, and the wrapper for a user's callable."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from console.errors import Error
from console.model import Record, ShardContext


class ProcessorError(Error):
    """A processor that cannot start (its file cannot be opened, say): one line, before any
    record is read."""


class RecordFailed(Exception):
    """Raise this from a processor to name the record that failed.

    Records of the batch before it count as processed; "skip past the failing record" then
    skips exactly this one. Any other exception points at the first record of the batch."""

    def __init__(self, record: Record, cause: BaseException | str | None = None) -> None:
        super().__init__(str(cause) if cause is not None else "record failed")
        self.record = record


class ParkRecord(Exception):
    """Raise this from a processor to park ``record`` at once, without retries (with
    ``--on-failure park``; with ``block`` it is a failure like any other). The records of the
    batch before it count as processed; those after it are delivered again."""

    def __init__(self, record: Record, reason: str = "parked by the processor") -> None:
        super().__init__(reason)
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


class DaemonThreads:
    """Threads for plain functions that never keep the process alive. A function that hangs
    past ``--processor-timeout`` stops the run, and the process must then end: asyncio's
    default executor (asyncio.to_thread) joins its threads at exit, so one hung call would keep
    a stopped run alive for ever. Threads start as calls need them, up to ``size``; an idle one
    takes the next call."""

    def __init__(self, size: int = 32) -> None:
        self._size = size
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], _Reply]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._idle == 0 and self._threads < self._size:
                self._threads += 1
                threading.Thread(target=self._work, name="processor", daemon=True).start()
            else:
                self._idle -= 1
        self._queue.put((fn, args, _Reply(loop, future)))
        return await future

    def _work(self) -> None:
        while True:
            fn, args, reply = self._queue.get()
            try:
                reply.send(fn(*args), None)
            except BaseException as exc:  # the caller's to see
                reply.send(None, exc)
            with self._lock:
                self._idle += 1


class _Reply:
    """A result (or an exception) handed back to the loop that awaits it, unless it stopped
    waiting (a timeout)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self.loop = loop
        self.future = future

    def send(self, result: Any, exc: BaseException | None) -> None:
        def deliver() -> None:
            if self.future.done():
                return
            if exc is not None:
                self.future.set_exception(exc)
            else:
                self.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            self.loop.call_soon_threadsafe(deliver)


THREADS = DaemonThreads()


class CallableProcessor(Processor):
    """A user's ``module:function``. Async callables are awaited on the loop; sync ones run in a
    worker thread (:class:`DaemonThreads`) so a slow one cannot freeze the console, and a hung
    one cannot keep the process alive. Optional ``flush`` and ``close`` attributes of the
    callable are honoured the same way."""

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.fn = fn
        self.name = name
        call = getattr(fn, "__call__", None)  # noqa: B004 - we want the bound __call__ of objects
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)

    async def process(self, records: list[Record], ctx: ShardContext) -> None:
        if self._is_async:
            await self.fn(records, ctx)
            return
        result = await THREADS.run(self.fn, records, ctx)
        if inspect.isawaitable(result):
            await result

    async def _optional(self, attr: str) -> None:
        hook = getattr(self.fn, attr, None)
        if not callable(hook):
            return
        if inspect.iscoroutinefunction(hook):
            await hook()
        else:
            await THREADS.run(hook)

    async def flush(self) -> None:
        await self._optional("flush")

    async def close(self) -> None:
        await self._optional("close")
