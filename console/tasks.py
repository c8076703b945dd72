"""Work that must finish once begun, whatever happens to whoever awaits it."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # the awaiter may be gone; it is told, if it is still there


async def run_to_end(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` in a task of its own and wait for it. A cancelled caller stops waiting;
    the work goes on to its end (a transaction commits or rolls back, a change is applied
    whole), and its outcome is not lost to an "exception was never retrieved" warning."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(_retrieve)
    return await asyncio.shield(task)


def runs_to_end(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """:func:`run_to_end` as a decorator: every call runs to its end (a transaction begun is
    committed or rolled back, whatever happens to the caller)."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return await run_to_end(method(*args, **kwargs))

    return wrapper
