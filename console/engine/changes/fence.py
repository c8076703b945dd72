"""The transport to a lease table from outside its workers: the control CLI with
``--lease-table`` and a console attached to a KCL application or a shard-console fleet.

A change is a fencing write on each lease it touches (console.checkpoints.leases.LeaseStore
.fence): whoever holds the lease loses it at its next renewal, and the next taker reads from the
new checkpoint. Times and "at" positions are resolved to the record before them when the change
is written: a lease table holds records and sentinels only. The preview shows who holds each
lease now and, for a one-shard rewind, how many records are read again; if a lease changed hands
between that preview and the write, nothing is written ("the lease changed while you looked").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from console.checkpoints.base import StreamRecord
from console.checkpoints.leases import Lease, LeaseStore, LeaseTableError, stream_name
from console.engine.changes.plan import (
    Action,
    ControlError,
    ControlRequest,
    ControlResult,
    Plan,
    SkipTo,
)
from console.engine.changes.resolve import count_between, resolve_plan
from console.engine.changes.service import Preview, StoredPlans
from console.model import PositionKind
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


class FenceTransport:
    def __init__(
        self,
        store: LeaseStore,
        record: StreamRecord,
        source: StreamSource,
        *,
        expired: Callable[[Lease], bool] = lambda lease: False,
    ) -> None:
        """``source``: the stream, to resolve times and count what a rewind reads again.
        ``expired``: whether a lease's holder stopped renewing it, as the caller has watched
        (an attached console); the control CLI has not watched, and says nothing of it."""
        self.store = store
        self.record = record
        self.source = source
        self.expired = expired
        self.plans = StoredPlans(store, record)
        # The holders each previewed request was shown with: (action, shard) -> shard -> owner.
        self._shown: dict[tuple[str, str | None], dict[str, str | None]] = {}
        self._counts: dict[tuple[str, str, str], str] = {}

    async def preview(self, request: ControlRequest) -> Preview:
        self._check(request)
        try:
            # The plan reads the table afresh (the store's load): the holders shown are now's.
            # Targets are shown as asked: they are resolved to records when written.
            plan = await self.plans.plan(request)
            leases = {
                lease.shard_id: lease
                for lease in await self.store.leases(stream_name(self.record.stream))
            }
        except (LeaseTableError, SourceError) as exc:  # throttled, say: the dialog says so
            raise ControlError(f"could not look: {exc}") from exc
        shown: dict[str, str | None] = {sid: lease.owner for sid, lease in leases.items()}
        for change in plan.changes:  # no lease yet: it must still have none, or nobody's
            shown.setdefault(change.checkpoint.shard_id, None)
        self._shown[(request.action.value, request.shard_id)] = shown
        counts = await self._count(plan) if request.action is Action.REWIND else {}
        holders = {sid: holder_text(lease, self.expired(lease)) for sid, lease in leases.items()}
        return Preview(plan, holders, counts, holder_text(None, False))

    def _check(self, request: ControlRequest) -> None:
        if request.action is Action.SKIP and request.skip_to is SkipTo.NEXT_RECORD:
            raise ControlError(
                "skip --to next-record needs the console of the worker that holds the shard: "
                "only it knows which record the processor fails on"
            )

    async def _count(self, plan: Plan) -> dict[str, str]:
        """How many records a one-shard rewind reads again (counted up to COUNT_CAP, cached:
        a dialog previews at every key)."""
        counts: dict[str, str] = {}
        for change in plan.changes[:1]:
            h = change.history
            if h is None or h.old_position is None or h.new_position is None:
                continue
            old = h.old_position
            if old.kind is not PositionKind.AFTER_SEQUENCE_NUMBER or old.sequence_number is None:
                continue
            key = (h.shard_id, h.new_position.encode(), old.sequence_number)
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

    async def apply(self, request: ControlRequest) -> ControlResult:
        """Fenced as previewed: a lease whose holder is not the one shown is not written. A
        request not previewed expects the holders of now. Refused while it is planned (a time
        the stream cannot resolve, a sequence number of another shard), nothing is written,
        not even the command."""
        self._check(request)
        expected = self._shown.pop((request.action.value, request.shard_id), None)
        if expected is None:
            await self.preview(request)
            expected = self._shown.pop((request.action.value, request.shard_id))
        try:
            plan = await resolve_plan(await self.plans.plan(request), self.source)
            await self.store.companion.ensure(create=True)  # every change is recorded there
            command_id = await self.plans.add_command(request)
        except (LeaseTableError, SourceError) as exc:
            raise ControlError(str(exc)) from exc
        plan = with_command(plan, command_id)
        try:
            await self.store.fence(
                self.record.stream,
                plan.changes,
                finish=(command_id, plan.summary),
                expected=expected,
                force=request.force,
            )
        except LeaseTableError as exc:
            # A lease that moved since it was shown (nothing written), or partly written and
            # recorded so by the store: the command is not left pending either way.
            command = await self.store.command(command_id)
            if command is not None and command.state == "pending":
                await self.store.finish_command(command_id, False, str(exc))
            raise ControlError(str(exc)) from exc
        return ControlResult(
            command_id,
            True,
            f"{plan.summary}: applied as change #{command_id}; "
            + (
                "the worker holding each lease reads from the new checkpoint after its next renewal"
                if self.store.keeps_holder
                else "the worker holding each lease drops it at its next renewal, and the next "
                "taker reads from the new checkpoint"
            ),
        )


def with_command(plan: Plan, command_id: int) -> Plan:
    """The plan's history rows, as written by command ``command_id``."""
    changes = tuple(
        replace(c, history=replace(c.history, command_id=command_id))
        if c.history is not None
        else c
        for c in plan.changes
    )
    return Plan(changes, plan.summary)
