"""One route for every operator change: the console's keys over a running consumer, both
attached consoles and the command line preview and apply through a :class:`ChangeService`.

The service refuses what must be refused (read-only, and what the front end forbids, such as a
pause a KCL worker would not honour) and says so in the event log; the rest goes over the
:class:`Transport` chosen at wiring:

* console.engine.changes.running: to the consumer of this process, between its batches;
* console.engine.changes.database: to a SQLite database, applied under the stream's lock when
  no consumer runs, else queued as a command for the running consumer, whose verdict is awaited;
* console.engine.changes.fence: to a lease table, as fencing writes (whoever holds a lease loses
  it at its next renewal), refused if a lease changed hands since it was shown.

Every transport plans with the same pure :func:`~console.engine.changes.plan.plan_change`; they
differ in where the facts come from and how the plan is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from console.checkpoints.base import CheckpointStore, StreamRecord
from console.engine.changes.plan import (
    Action,
    ControlError,
    ControlRequest,
    ControlResult,
    Plan,
    SkipTo,
    explain,
    plan_change,
)
from console.engine.events import EventLog, Level
from console.engine.lineage import Lineage
from console.model import HistoryEntry, Position


@dataclass(frozen=True, slots=True)
class Preview:
    """What a change would write, and, on a lease table, who holds each lease now
    (``holders``: shard id -> words) and how many records each shard reads again."""

    plan: Plan
    holders: Mapping[str, str] | None = None
    counts: Mapping[str, str] = field(default_factory=dict)
    no_holder: str = ""

    def text(self) -> str:
        """Per shard, from and to (and who holds it, and what is read again)."""
        return explain(self.plan, self.holders, self.counts, self.no_holder)

    @property
    def summary(self) -> str:
        """What a dialog shows: the plan's summary; on a lease table, every shard's line too,
        since an operator changes leases other workers hold."""
        return self.plan.summary if self.holders is None else self.text()


class Transport(Protocol):
    async def preview(self, request: ControlRequest) -> Preview:
        """What ``request`` would write, validated, writing nothing. ControlError when it
        cannot apply."""
        ...

    async def apply(self, request: ControlRequest) -> ControlResult:
        """Apply it (or, to a consumer in another process, hand it over); the result says
        applied, refused, or queued. ControlError when it cannot apply (nothing written)."""
        ...


class ChangeService:
    def __init__(
        self,
        transport: Transport,
        *,
        events: EventLog | None = None,
        read_only: bool = False,
        refuse: Callable[[ControlRequest], str | None] = lambda request: None,
    ) -> None:
        """``refuse``: the front end's own refusals, a reason or None."""
        self.transport = transport
        self.events = events
        self.read_only = read_only
        self._refuse = refuse

    def refusal(self, request: ControlRequest) -> str | None:
        if self.read_only:
            return "read-only: operator changes are refused"
        return self._refuse(request)

    async def preview(self, request: ControlRequest) -> Preview:
        reason = self.refusal(request)
        if reason is not None:
            raise ControlError(reason)
        return await self.transport.preview(request)

    async def control(self, request: ControlRequest) -> ControlResult:
        """Apply ``request``; refused, its result says why (and the event log)."""
        reason = self.refusal(request)
        if reason is not None:
            self.refused(request, reason)
            return ControlResult(0, False, reason)
        return await self.transport.apply(request)

    def refused(self, request: ControlRequest, reason: str) -> None:
        if self.events is not None:
            self.events.emit(
                "operator",
                f"{request.actor}: refused: {reason}",
                level=Level.WARNING,
                outcome="refused",
            )


# -- the facts a change is planned from, as a store holds them ----------------------------------


async def undo_scope(
    store: CheckpointStore, key: str, request: ControlRequest, command_id: int | None
) -> list[HistoryEntry]:
    """The history rows of the change an undo takes back (the last one, if none is named)."""
    target = request.change_id or await store.last_change_id(key, before=command_id)
    return await store.history_for_command(key, target) if target else []


async def checkpoint_position(
    store: CheckpointStore, key: str, shard_id: str, entry_id: int
) -> Position:
    """The position a history entry of ``shard_id`` recorded: what ``--to checkpoint:ENTRY``
    rewinds to."""
    entry = await store.history_entry(key, entry_id)
    if entry is None or entry.shard_id != shard_id or entry.new_position is None:
        raise ControlError(f"history entry #{entry_id} is not a checkpoint of {shard_id}")
    return entry.new_position


class StoredPlans:
    """Plans from what a store holds: its checkpoints, the shard map discovery saved, the
    stream's retention (no consumer of this process runs the stream)."""

    def __init__(self, store: CheckpointStore, record: StreamRecord) -> None:
        self.store = store
        self.record = record

    async def plan(self, request: ControlRequest, command_id: int | None = None) -> Plan:
        if request.action is Action.SKIP and request.skip_to is SkipTo.NEXT_RECORD:
            raise ControlError(
                "skip --to next-record needs the running consumer: only it knows which record "
                "the processor fails on"
            )
        key = self.record.stream
        entries = (
            await undo_scope(self.store, key, request, command_id)
            if request.action is Action.UNDO
            else []
        )
        return plan_change(
            request,
            checkpoints=await self.store.load(key),
            lineage=Lineage.build(await self.store.shards(key)),
            default_position=lambda sid: Position.trim_horizon(),
            now=time.time(),
            command_id=command_id,
            undo_entries=entries,
            retention_hours=self.record.retention_hours,
        )

    async def add_command(self, request: ControlRequest) -> int:
        """The request, recorded as a command (its result is written with the plan)."""
        return await self.store.add_command(
            self.record.stream,
            request.shard_id,
            request.action.value,
            request.to_args(),
            request.actor,
        )
