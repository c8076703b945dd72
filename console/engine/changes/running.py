"""The transport to the consumer of this process: changes applied between its batches, and the
commands other processes queue in its database.

Every change, from a key in the console or a CLI command in another process, becomes a row in
the store's ``commands`` and is applied here, one at a time, between batches: the shards it
touches stop (each finishes its batch in hand), the plan (:func:`plan_change`, from the
consumer's own newest progress and the record its processor fails on) is written with the
command marked applied, by the consumer's ownership strategy (one transaction in a database,
fencing writes on a lease table, positions resolved to records first), and the shards restart
from their new checkpoints. The consumer holds them meanwhile, so nothing restarts a shard from
its old position half-way through.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from console.checkpoints.base import CheckpointChange, CheckpointStore, Command
from console.engine.changes.plan import (
    Action,
    ControlError,
    ControlRequest,
    ControlResult,
    Plan,
    plan_change,
)
from console.engine.changes.resolve import check_sequences, resolve_plan
from console.engine.changes.service import Preview, undo_scope
from console.engine.events import EventLog, Level
from console.engine.lineage import Lineage
from console.model import Checkpoint, HistoryEntry, Position, Record
from console.sources.base import StreamSource
from console.tasks import run_to_end


class Runner(Protocol):
    """What operator changes need of the consumer that runs the shards."""

    @property
    def running(self) -> bool: ...

    @property
    def source(self) -> StreamSource: ...

    @property
    def key(self) -> str: ...

    @property
    def lineage(self) -> Lineage: ...

    @property
    def retention_hours(self) -> float | None: ...

    def failing_record(self, shard_id: str) -> Record | None:
        """The record the processor is failing on in this shard, if it is."""
        ...

    async def stop_shard(self, shard_id: str) -> Record | None:
        """Stop the shard's worker (its batch in hand finishes); the record it was failing on."""
        ...

    def hold(self, shard_ids: set[str]) -> None:
        """Start no worker for these shards until :meth:`release`."""
        ...

    def release(self, shard_ids: set[str], changed: bool) -> None:
        """Let the held shards run again; ``changed``: from new checkpoints, errors cleared."""
        ...


class Progress(Protocol):
    """What a change needs of the consumer's checkpoints
    (console.engine.consume.checkpointing.Checkpointer)."""

    def get(self, shard_id: str) -> Checkpoint | None: ...

    def all(self) -> dict[str, Checkpoint]: ...

    async def write(
        self, changes: Sequence[CheckpointChange], finish: tuple[int, str] | None = None
    ) -> int: ...


class RunningTransport:
    def __init__(
        self,
        runner: Runner,
        store: CheckpointStore,
        checkpointer: Progress,
        events: EventLog,
        *,
        read_only: bool = False,
        resolve: bool = False,
    ) -> None:
        """``resolve``: positions must be records or sentinels (a lease table): times and "at"
        positions are resolved to the record before them first. ``read_only``: commands queued
        by other processes are left for a writable consumer."""
        self.resolve = resolve
        self.runner = runner
        self.store = store
        self.checkpointer = checkpointer
        self.events = events
        self.read_only = read_only
        # One change at a time; the consumer's shutdown takes it too, so it waits for one.
        self.lock = asyncio.Lock()
        # Parked records delivered again (set by the consumer that can: it has the processor).
        self.redrive: Callable[[Command], Awaitable[tuple[bool, str]]] | None = None

    async def apply(self, request: ControlRequest) -> ControlResult:
        """Apply an operator request now: recorded as a command, applied, its result recorded.
        The console and the CLI both end here."""
        # Once recorded, a change is applied to its end, whatever happens to the caller (a
        # dialog closed, a timeout around this call): the store and the workers must agree.
        return await run_to_end(self._control(request))

    async def _control(self, request: ControlRequest) -> ControlResult:
        async with self.lock:
            if not self.runner.running:
                self._refused(request, "the consumer is not running")
                raise ControlError("the consumer is not running")
            key = self.runner.key
            command_id = await self.store.add_command(
                key, request.shard_id, request.action.value, request.to_args(), request.actor
            )
            return await self._apply(command_id, request)

    def _refused(self, request: ControlRequest, reason: str) -> None:
        self.events.emit(
            "operator",
            f"{request.actor}: refused: {reason}",
            level=Level.WARNING,
            outcome="refused",
        )

    async def apply_pending(self) -> None:
        """Commands other processes wrote (or wrote while no consumer ran), in order."""
        if self.read_only:
            return  # a read-only console applies nothing; a writable consumer will
        async with self.lock:
            if not self.runner.running:
                return
            for command in await self.store.pending_commands(self.runner.key):
                if command.action == "redrive" and self.redrive is not None:
                    try:  # console.engine.consume.redrive
                        ok, result = await self.redrive(command)
                    except Exception as exc:  # finished either way: never applied twice
                        ok, result = False, f"redrive failed: {exc}"
                    await self.store.finish_command(command.id, ok, result)
                    continue
                try:
                    request = ControlRequest.from_command(command)
                except ControlError as exc:
                    await self.store.finish_command(command.id, False, str(exc))
                    continue
                await self._apply(command.id, request)

    async def preview(self, request: ControlRequest) -> Preview:
        """What ``request`` would write, validated, without writing it (dialogs, --dry-run)."""
        _, undo_entries = await self._scope(request, None)
        failing = self.runner.failing_record(request.shard_id or "")
        return Preview(self._plan(request, None, undo_entries, failing))

    async def _scope(
        self, request: ControlRequest, command_id: int | None
    ) -> tuple[set[str], list[HistoryEntry]]:
        """The shards a request touches (their workers stop first), and for an undo the rows
        of the change it takes back."""
        lineage = self.runner.lineage
        if request.action is Action.UNDO:
            entries = await undo_scope(self.store, self.runner.key, request, command_id)
            return {h.shard_id for h in entries}, entries
        if request.action is Action.REPLAY:
            return set(lineage.shards), []
        sid = request.shard_id or ""
        if sid not in lineage and self.checkpointer.get(sid) is None:
            raise ControlError(f"unknown shard '{sid}': it is not in this stream")
        affected = {sid}
        if request.action is Action.REWIND:
            affected.update(lineage.descendants(sid))
        return affected, []

    def _plan(
        self,
        request: ControlRequest,
        command_id: int | None,
        undo_entries: list[HistoryEntry],
        failing: Record | None,
    ) -> Plan:
        return plan_change(
            request,
            checkpoints=self.checkpointer.all(),
            lineage=self.runner.lineage,
            default_position=lambda sid: Position.trim_horizon(),
            now=time.time(),
            command_id=command_id,
            failing_record=failing,
            undo_entries=undo_entries,
            retention_hours=self.runner.retention_hours,
        )

    async def _apply(self, command_id: int, request: ControlRequest) -> ControlResult:
        affected: set[str] = set()
        applied = False
        try:
            affected, undo_entries = await self._scope(request, command_id)
            # Held from here until the change is written: discovery and finishing workers
            # reconcile while we await, and must not restart a shard from its old position.
            self.runner.hold(affected)
            failing = None
            for sid in affected:
                record = await self.runner.stop_shard(sid)
                if sid == request.shard_id:
                    failing = record
            plan = self._plan(request, command_id, undo_entries, failing)
            await check_sequences(plan, self.runner.source)  # another shard's is refused now
            if self.resolve:  # a lease table holds records and sentinels only
                plan = await resolve_plan(plan, self.runner.source)
            await self.checkpointer.write(plan.changes, finish=(command_id, plan.summary))
            applied = True
            self.events.emit("operator", f"{request.actor}: {plan.summary}", outcome="applied")
            return ControlResult(command_id, True, plan.summary)
        except ControlError as exc:
            await self.store.finish_command(command_id, False, str(exc))
            self._refused(request, str(exc))
            return ControlResult(command_id, False, str(exc))
        except Exception as exc:
            # The store failed under it (a full disk, say): recorded as failed, so no later
            # pass applies it behind the operator's back, and said, whoever is still waiting.
            self.events.emit(
                "operator", f"{request.actor}: failed: {exc}", level=Level.ERROR, outcome="failed"
            )
            with contextlib.suppress(Exception):
                await self.store.finish_command(command_id, False, f"failed: {exc}")
            raise
        finally:
            self.runner.release(affected, applied)
