"""The transport to a SQLite database from outside its consumer: the control CLI and
``attach --db``.

With no consumer running on the stream, the change is applied to the database itself under the
stream's lock (taken only to apply, never while an operator thinks): plan and result in one
transaction, so the next start honours it. With one running, it becomes a row in the
database's ``commands`` that the consumer applies between its batches, and its verdict is
awaited for ``wait`` seconds; a command not applied by then is queued, and said so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from console.checkpoints.base import Command, LockedStore, StoreLockedError, StreamRecord
from console.engine.changes.plan import (
    Action,
    ControlError,
    ControlRequest,
    ControlResult,
    Plan,
    SkipTo,
)
from console.engine.changes.resolve import check_sequences
from console.engine.changes.service import Preview, StoredPlans
from console.sources.base import StreamSource

WAIT = 10.0  # seconds a change handed to a running consumer is awaited, unless told


StreamOpener = Callable[[], AbstractAsyncContextManager[StreamSource]]


class DatabaseTransport:
    def __init__(
        self,
        store: LockedStore,
        record: StreamRecord,
        *,
        wait: float = WAIT,
        stream: StreamOpener | None = None,
    ) -> None:
        """``stream``: opens the stream, to check a sequence number an operator rewinds to
        against its shard before it is written (None: not checked)."""
        self.store = store
        self.record = record
        self.wait = wait
        self.stream = stream
        self.plans = StoredPlans(store, record)

    async def _checked(self, plan: Plan) -> Plan:
        if self.stream is not None and any(
            c.checkpoint.position.sequence_number for c in plan.changes
        ):
            async with self.stream() as source:
                await check_sequences(plan, source)
        return plan

    async def running(self) -> bool:
        """Whether a consumer holds the stream right now."""
        try:
            await self.store.acquire(self.record.stream)
        except StoreLockedError:
            return True
        await self.store.release(self.record.stream)
        return False

    async def preview(self, request: ControlRequest) -> Preview:
        next_record = request.action is Action.SKIP and request.skip_to is SkipTo.NEXT_RECORD
        if next_record and await self.running():
            # Only the consumer knows which record its processor fails on.
            summary = f"skip {request.shard_id} past the record its processor fails on"
            return Preview(Plan((), summary))
        return Preview(await self._checked(await self.plans.plan(request)))

    async def apply(self, request: ControlRequest) -> ControlResult:
        """Applied under the lock when no consumer holds the stream, else handed to the one
        that does."""
        try:
            await self.store.acquire(self.record.stream)
        except StoreLockedError:
            return await self._send(request)
        try:
            return await self._apply_here(request)
        finally:
            await self.store.release(self.record.stream)

    async def _apply_here(self, request: ControlRequest) -> ControlResult:
        """Record the command, plan, write plan and result in one transaction. ControlError
        (recorded as a failed command) when it cannot apply."""
        store = self.store
        command_id = await self.plans.add_command(request)
        try:
            plan = await self._checked(await self.plans.plan(request, command_id))
        except Exception as exc:  # refused: recorded, not left pending
            await store.finish_command(command_id, False, str(exc))
            raise
        try:
            await store.save(self.record.stream, plan.changes, finish=(command_id, plan.summary))
        except Exception as exc:
            # Nothing written (a database error): the command is not left pending (if the
            # store can still say so: the error that matters is the one raised).
            with contextlib.suppress(Exception):
                command = await store.command(command_id)
                if command is not None and command.state == "pending":
                    await store.finish_command(command_id, False, str(exc))
            raise
        return ControlResult(
            command_id,
            True,
            f"{plan.summary}: applied as change #{command_id}; the next start honours it",
        )

    async def _send(self, request: ControlRequest) -> ControlResult:
        """A consumer runs: hand it the command and wait for its verdict."""
        command_id = await self.plans.add_command(request)
        command = await wait_for_command(self.store, command_id, self.wait)
        if command is None:
            return ControlResult(
                command_id,
                True,
                f"command #{command_id} is queued, not applied yet: the running consumer "
                "applies it between batches (see: shard-console checkpoints history)",
                queued=True,
            )
        ok = command.state == "applied"
        if not ok:
            raise ControlError(f"the running consumer refused it: {command.result}")
        return ControlResult(
            command_id,
            True,
            f"applied by the running consumer as change #{command_id}: {command.result}",
        )


async def wait_for_command(store: LockedStore, command_id: int, wait: float) -> Command | None:
    """A command handed to a running consumer, once it has applied or refused it (None: still
    pending after ``wait`` seconds)."""
    deadline = time.monotonic() + wait
    while True:
        command = await store.command(command_id)
        if command is not None and command.state != "pending":
            return command
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.2)
