"""Operator changes from an attached console, on a lease table: previewed with who holds
each lease now and how many records are read again, applied as the store's fencing writes
(times resolved to records first), refused if a lease changed hands since it was shown."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from console.checkpoints.base import StreamRecord
from console.checkpoints.leases.items import Lease
from console.checkpoints.leases.store import LeaseStore
from console.checkpoints.leases.table import LeaseTableError
from console.checkpoints.leases.taker import LeaseObserver
from console.engine.control import (
    Action,
    ControlError,
    ControlRequest,
    ControlResult,
    Plan,
    explain,
)
from console.engine.events import EventLog, Level
from console.engine.offline import apply_offline, plan_offline
from console.engine.resolve import count_between
from console.engine.state import EngineState
from console.model import Position, PositionKind
from console.sources.base import SourceError, StreamSource

COUNT_CAP = 10_000  # records counted for a preview before it says "more than"


def holder_text(lease: Lease | None, expired: bool) -> str:
    if lease is None:
        return "no lease yet (created by the change)"
    if lease.finished:
        return "finished (no holder)"
    if lease.owner is None:
        return "nobody holds it"
    if expired:
        return f"held by {lease.owner}, who stopped renewing it"
    return f"held by {lease.owner}: it drops the lease at its next renewal, the next taker reads on"


class LeaseChanges:
    """The operator-change half of console.engine.attach.AttachedLeases."""

    leases: LeaseStore
    source: StreamSource
    record: StreamRecord | None
    state: EngineState
    events: EventLog
    observer: LeaseObserver
    failover: float
    mono: Callable[[], float]
    kcl: bool
    _read_only: bool
    _fenced: dict[str, tuple[int, float]]
    _previewed: dict[tuple[str, str | None], dict[str, str | None]]
    _counts: dict[tuple[str, Position, str], str]
    _lock: asyncio.Lock

    async def refresh(self) -> None:
        """Read the table again: the engine's (a change is shown at once)."""

    def _owners(self, request: ControlRequest) -> dict[str, str | None]:
        """Who holds each lease the request touches, as last shown."""
        seen = {s.lease.shard_id: s.lease for s in self.observer.seen.values()}
        if request.shard_id is None:
            return {sid: lease.owner for sid, lease in seen.items()}
        touched = {request.shard_id, *self.state.lineage.descendants(request.shard_id)}
        return {sid: seen[sid].owner for sid in touched if sid in seen}

    def _refusal(self, request: ControlRequest) -> str | None:
        if self._read_only:
            return "read-only: operator changes are refused"
        if self.kcl and request.action in (Action.PAUSE, Action.RESUME):
            return (
                f"{request.action.value} is refused for a KCL application: a KCL worker does not "
                "know pauses and would read the shard on; rewind, skip or stop its workers instead"
            )
        return None

    async def preview(self, request: ControlRequest) -> Plan:
        assert self.record is not None
        refusal = self._refusal(request)
        if refusal is not None:
            raise ControlError(refusal)
        # plan_offline reads the table afresh (the store's load): the holders it shows are now's.
        try:
            plan = await plan_offline(self.leases, self.record, request)
        except (LeaseTableError, SourceError) as exc:  # throttled, say: the dialog says so
            raise ControlError(f"could not look: {exc}") from exc
        mine = {s.lease.shard_id: s for s in self.observer.seen.values()}
        now = self.mono()
        leases = {}
        for fresh in self.leases.co.observer.seen.values():
            sid = fresh.lease.shard_id
            seen = mine.get(sid)
            stale = seen is not None and seen.lease.owner == fresh.lease.owner
            expired = stale and seen is not None and self.observer.expired(seen, self.failover, now)
            leases[sid] = (fresh.lease, expired)
        shown: dict[str, str | None] = {sid: lease.owner for sid, (lease, _) in leases.items()}
        for change in plan.changes:  # no lease yet: it must still have none, or nobody's
            shown.setdefault(change.checkpoint.shard_id, None)
        self._previewed[(request.action.value, request.shard_id)] = shown
        counts: dict[str, str] = {}
        if request.shard_id is not None and request.action is Action.REWIND:
            counts = await self._count(plan)
        holders = {sid: holder_text(lease, expired) for sid, (lease, expired) in leases.items()}
        return Plan(plan.changes, explain(plan, holders, counts, holder_text(None, False)))

    async def _count(self, plan: Plan) -> dict[str, str]:
        """How many records each shard of a one-shard rewind reads again (counted up to
        COUNT_CAP, cached: the dialog previews at every key)."""
        counts: dict[str, str] = {}
        for change in plan.changes[:1]:
            h = change.history
            if h is None or h.old_position is None or h.new_position is None:
                continue
            old = h.old_position
            if old.kind is not PositionKind.AFTER_SEQUENCE_NUMBER or old.sequence_number is None:
                continue
            key = (h.shard_id, h.new_position, old.sequence_number)
            if key not in self._counts:
                try:
                    n, more = await count_between(
                        self.source, h.shard_id, h.new_position, old.sequence_number, COUNT_CAP
                    )
                except SourceError:
                    continue
                self._counts[key] = f"more than {n}" if more else str(n)
            counts[h.shard_id] = self._counts[key]
        return counts

    async def control(self, request: ControlRequest) -> ControlResult:
        assert self.record is not None
        refusal = self._refusal(request)
        if refusal is not None:
            return ControlResult(0, False, refusal)
        expected = self._previewed.pop((request.action.value, request.shard_id), None)
        expected = expected or self._owners(request)
        async with self._lock:
            try:
                await self.leases.companion.ensure(create=True)
                with self.leases.expecting(expected):
                    result = await apply_offline(self.leases, self.record, request, self.source)
            except (ControlError, LeaseTableError, SourceError) as exc:
                # SourceError: resolving a time or a sequence number read the stream and failed
                # (a sequence number of another shard, say); nothing was written.
                return ControlResult(0, False, str(exc))
        # A scan that starts from now sees these leases lose their owner: say it was this change.
        changed = await self.leases.history_for_command(self.record.stream, result.command_id)
        written = self.mono()
        for entry in changed:
            if expected.get(entry.shard_id):
                self._fenced[entry.shard_id] = (result.command_id, written)
        self.events.emit(
            "change_applied", f"change #{result.command_id}: {result.message}", level=Level.WARNING
        )
        with contextlib.suppress(LeaseTableError, SourceError):
            await self.refresh()
        return result
