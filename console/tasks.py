"""Work that must finish once begun, whatever happens to whoever awaits it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

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
