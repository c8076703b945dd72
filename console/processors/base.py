"""The processor interface the engine calls, and the loader for ``--processor`` specs."""

from __future__ import annotations

import abc
import asyncio
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from console.errors import UsageError
from console.model import Record, ShardContext

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


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

    async def open(self) -> None:
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


def load_processor(spec: str, stream: str) -> Processor:
    """Turn a ``--processor`` spec into a processor, or raise UsageError with one line."""
    from console.processors import builtin

    text = spec.strip()
    if text == "null":
        return builtin.NullProcessor()
    if text == "print":
        return builtin.PrintProcessor()
    if text.startswith("jsonl:"):
        path = text[len("jsonl:") :]
        if not path:
            raise UsageError("processor 'jsonl:' needs a file path, as in jsonl:out.jsonl")
        parent = Path(path).expanduser().resolve().parent
        if not parent.is_dir():
            raise UsageError(f"processor {text}: folder {parent} does not exist")
        return builtin.JsonlProcessor(str(Path(path).expanduser()), stream)
    module_name, sep, attr = text.partition(":")
    if not sep or not _IDENT.match(module_name) or not _IDENT.match(attr):
        raise UsageError(
            f"unknown processor '{spec}': use null, print, jsonl:PATH or package.module:function"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"cannot import processor module '{module_name}' ({exc}): install it or add its "
            "folder to PYTHONPATH"
        ) from None
    except Exception as exc:
        raise UsageError(
            f"processor module '{module_name}' failed to import: {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(
                f"processor '{spec}': module '{module_name}' has no attribute '{attr}'"
            ) from None
    if not callable(target):
        raise UsageError(f"processor '{spec}' is not callable")
    return CallableProcessor(target, text)
