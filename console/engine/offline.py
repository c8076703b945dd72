"""Operator commands applied straight to the store, when no consumer runs.

The same :func:`~console.engine.control.plan_change` as a running consumer's, fed with what the
store knows (checkpoints, the shard map discovery saved, the stream's retention); the plan and
the command's result are written in one transaction. The caller holds the stream's lock while
it applies (not while it only plans a preview), so no consumer can start half-way through.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from console.checkpoints.base import CheckpointStore, Command, StreamRecord
from console.engine.control import (
    Action,
    ControlError,
    ControlRequest,
    ControlResult,
    Plan,
    SkipTo,
    plan_change,
)
from console.engine.lineage import Lineage
from console.engine.resolve import resolve_plan
from console.model import HistoryEntry, Position
from console.sources.base import StreamSource


async def undo_scope(
    store: CheckpointStore, key: str, request: ControlRequest, command_id: int | None
) -> list[HistoryEntry]:
    """The history rows of the change an undo takes back (the last one, if none is named)."""
    target = request.change_id or await store.last_change_id(key, before=command_id)
    return await store.history_for_command(key, target) if target else []


async def checkpoint_position(
    store: CheckpointStore, key: str, shard_id: str, entry_id: int
) -> Position:
    """The position a history entry of ``shard_id`` recorded: what ``--to checkpoint:ID``
    rewinds to."""
    entry = await store.history_entry(key, entry_id)
    if entry is None or entry.shard_id != shard_id or entry.new_position is None:
        raise ControlError(f"history entry #{entry_id} is not a checkpoint of {shard_id}")
    return entry.new_position


async def plan_offline(
    store: CheckpointStore,
    record: StreamRecord,
    request: ControlRequest,
    command_id: int | None = None,
) -> Plan:
    if request.action is Action.SKIP and request.skip_to is SkipTo.NEXT_RECORD:
        raise ControlError(
            "skip --to next-record needs the running consumer: only it knows which record the "
            "processor fails on"
        )
    entries = (
        await undo_scope(store, record.stream, request, command_id)
        if request.action is Action.UNDO
        else []
    )
    return plan_change(
        request,
        checkpoints=await store.load(record.stream),
        lineage=Lineage.build(await store.shards(record.stream)),
        default_position=lambda sid: Position.trim_horizon(),
        now=time.time(),
        command_id=command_id,
        undo_entries=entries,
        retention_hours=record.retention_hours,
    )


async def apply_offline(
    store: CheckpointStore,
    record: StreamRecord,
    request: ControlRequest,
    source: StreamSource | None = None,
) -> ControlResult:
    """Record the command, apply it, record its result. Raises ControlError (recorded as a
    failed command) when it cannot apply. A shared store (a lease table) needs the ``source``:
    times and "at" positions are resolved to records before anything is written."""
    command_id = await store.add_command(
        record.stream, request.shard_id, request.action.value, request.to_args(), request.actor
    )
    try:
        plan = await plan_offline(store, record, request, command_id)
        if store.shared:
            if source is None:
                raise ControlError("a change to a lease table needs the stream to resolve times")
            plan = await resolve_plan(plan, source)
    except Exception as exc:  # refused, or the stream could not be read: recorded, not pending
        await store.finish_command(command_id, False, str(exc))
        raise
    try:
        await store.save(record.stream, plan.changes, finish=(command_id, plan.summary))
    except Exception as exc:
        # Nothing written (a lease moved since it was shown, a database error), or partly
        # written and recorded so by the store: the command is not left pending either way
        # (if the store can still say so: the error that matters is the one raised).
        with contextlib.suppress(Exception):
            command = await store.command(command_id)
            if command is not None and command.state == "pending":
                await store.finish_command(command_id, False, str(exc))
        raise
    return ControlResult(command_id, True, plan.summary)


async def wait_for_command(store: CheckpointStore, command_id: int, wait: float) -> Command | None:
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


async def apply_if_free(
    store: CheckpointStore, record: StreamRecord, request: ControlRequest
) -> ControlResult | None:
    """Apply the change to the store under the stream's lock, when no consumer holds it
    (None: one does, and applies commands itself)."""
    from console.checkpoints.base import StoreLockedError

    try:
        await store.acquire(record.stream)
    except StoreLockedError:
        return None
    try:
        return await apply_offline(store, record, request)
    finally:
        await store.release(record.stream)


async def send_command(
    store: CheckpointStore, record: StreamRecord, request: ControlRequest, wait: float
) -> tuple[int, Command | None]:
    """Hand a change to the running consumer: its command id, and the command once applied or
    refused (None: still pending after ``wait`` seconds)."""
    command_id = await store.add_command(
        record.stream, request.shard_id, request.action.value, request.to_args(), request.actor
    )
    return command_id, await wait_for_command(store, command_id, wait)
