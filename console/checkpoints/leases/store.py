"""The lease table as a :class:`~console.checkpoints.base.CheckpointStore`: many processes share
a stream, each reading the shards it holds a lease on (console.checkpoints.leases.coordinator
takes, renews and gives them back).

Routine progress of a held lease is a conditional checkpoint; at a shard's end, child leases are
created, SHARD_END checkpointed, ``childShardIds`` set on the parent, and the finished lease
given back. Operator changes (rewind, skip, pause, resume, undo, replay) are fencing writes on
the lease, whoever holds it: the holder loses it at its next renew, and the next taker reads
from the new checkpoint. Their positions must be records (``AFTER_SEQUENCE_NUMBER``) or
sentinels: the engine resolves times and "at" positions first (console.engine.resolve).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from console.checkpoints.base import (
    CheckpointChange,
    Command,
    OwnershipListener,
    StreamRecord,
)
from console.checkpoints.leases.companion import Companion, Marks
from console.checkpoints.leases.coordinator import (
    Coordinator,
    LeaseConflictError,
    default_worker_id,
    key_of,
    stream_name,
)
from console.checkpoints.leases.items import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    Lease,
    UnwritablePosition,
    checkpoint_of,
    kcl_checkpoint,
    shard_of,
)
from console.checkpoints.leases.table import LeaseTable, LeaseTableError, LeaseTableUnavailable
from console.model import (
    Checkpoint,
    CheckpointStatus,
    HistoryEntry,
    Position,
    PositionKind,
    Shard,
)

MIN_FAILOVER = 3.0  # below this a renewal every second is not safely ahead of expiry
OPERATOR_CAUSES = frozenset({"rewind", "reset", "skip", "pause", "resume", "undo", "replay"})

__all__ = ["LeaseConflictError", "LeaseMovedError", "LeaseStore", "default_worker_id"]


class LeaseMovedError(LeaseTableError):
    """A lease changed hands between the operator's look and the change: nothing written."""


class LeaseStore:
    shared = True

    def __init__(
        self,
        client: Any,
        table: str,
        *,
        worker_id: str | None = None,
        failover: float = 10.0,
        create: bool = True,
        take_over: bool = False,
        initial: Position | None = None,
        create_companion: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``create_companion``: None for a worker (shard-console's table is created once the
        checks of joining pass, if ``create``); True or False for the control CLI."""
        if failover < MIN_FAILOVER:
            raise LeaseTableError(
                f"--failover-time {failover:g} is below the safe minimum of {MIN_FAILOVER:g} s"
            )
        self.table = LeaseTable(client, table)
        self.companion = Companion(client, table)
        self.path = f"dynamodb:{table}"
        self._create = create
        self._companion_now = create_companion
        self._initial = initial or Position.trim_horizon()
        self._clock = clock
        self._shards: dict[str, Shard] = {}
        self._prepared = False
        self._expected: dict[str, str | None] | None = None
        self.co = Coordinator(
            self.table,
            self.companion,
            worker_id=worker_id or default_worker_id(),
            failover=failover,
            take_over=take_over,
            create_companion=create,
            checkpoint_of=self._checkpoint,
            clock=clock,
        )
        self.worker_id = self.co.worker_id
        self.renew_interval = self.co.renew_interval

    # -- joining and leaving ------------------------------------------------------------------

    async def prepare(self) -> None:
        """The lease table, used as it is or created; shard-console's table as the control
        CLI asked (a worker's is made when it joins)."""
        if not self._prepared:
            await self.table.ensure(self._create)
            if self._companion_now is not None:
                await self.companion.ensure(create=self._companion_now, missing_ok=True)
            self._prepared = True

    async def acquire(self, stream: str) -> None:
        """Join the stream's workers (console.checkpoints.leases.coordinator.Coordinator.join:
        the checks, then shard-console's table and the heartbeat)."""
        await self.prepare()
        await self.co.join(stream)

    def watch(self, stream: str, listener: OwnershipListener) -> None:
        self.co.watch(stream, listener)

    def holds(self, stream: str) -> bool:
        return self.co.stream == stream and self.co.running

    def may_read(self, stream: str, shard_id: str) -> bool:
        return shard_id in self.co.held

    async def release(self, stream: str) -> None:
        await self.co.release()

    async def close(self) -> None:
        if self.co.running:
            await self.co.release()

    # -- leases and our values ----------------------------------------------------------------

    async def _leases(self, stream: str) -> list[Lease]:
        return await self.table.leases(stream_name(stream))

    def _checkpoint(self, lease: Lease, mark: Marks | None = None) -> Checkpoint:
        at = self._initial.timestamp if self._initial.kind is PositionKind.AT_TIMESTAMP else None
        cp = checkpoint_of(lease, at)
        if mark is not None:
            if mark.skipped and cp.status is CheckpointStatus.DONE:
                cp = replace(cp, status=CheckpointStatus.SKIPPED)
            if mark.paused and not cp.status.finished:
                cp = replace(cp, paused=True)
        return cp

    async def load(self, stream: str) -> dict[str, Checkpoint]:
        leases = await self._leases(stream)
        self.co.observer.update(leases, self._clock())
        await self.co.read_companion(stream)
        return {
            lease.shard_id: self._checkpoint(lease, self.co.marks.get(lease.shard_id))
            for lease in leases
        }

    def _first_checkpoint(self, shard: Shard, fresh_stream: bool) -> str:
        """Where a new lease starts, as the KCL's shard sync decides: a child from the start of
        the shard; a root (or every shard, the first time a stream is seen) at the initial
        position, closed shards done when that is LATEST."""
        kind = self._initial.kind
        if shard.parents and not fresh_stream:
            return TRIM_HORIZON
        if kind is PositionKind.LATEST:
            return SHARD_END if shard.is_closed else LATEST
        if kind is PositionKind.AT_TIMESTAMP:
            return AT_TIMESTAMP
        return TRIM_HORIZON

    async def save_shards(self, stream: str, shards: Sequence[Shard]) -> None:
        """Remember the shard map, and create the lease of every shard that has none (PutItem
        only if absent: any number of workers may do it at once)."""
        for shard in shards:
            self._shards[shard.shard_id] = shard
        await self.companion.save_shards(stream, shards)
        known = {s.lease.shard_id: s.lease for s in self.co.observer.seen.values()}
        fresh = not known
        template = next(iter(known.values()), None)
        created = False
        for shard in shards:
            if shard.shard_id in known:
                continue
            key = key_of(template, shard.shard_id) if template else shard.shard_id
            checkpoint = self._first_checkpoint(shard, fresh)
            created |= await self.table.create(key, checkpoint, shard.parents, _range(shard))
        await self._record_children(stream, [s for s in shards if s.parents])
        if created:
            self.co.wake.set()

    def know_shards(self, shards: Sequence[Shard]) -> None:
        """The stream's shards as this process listed them, for plans and new leases, without
        writing anything (an attached console: the application's shard sync makes leases)."""
        for shard in shards:
            self._shards[shard.shard_id] = shard

    async def _record_children(self, stream: str, children: Sequence[Shard]) -> None:
        """childShardIds on each finished parent, as the KCL sets it at SHARD_END: a parent may
        reach its end before any listing has shown its children."""
        parents = {p for child in children for p in child.parents}
        for parent in sorted(parents):
            lease = await self.table.get(self._lease_key(parent), stream_name(stream))
            kids = tuple(s.shard_id for s in self._shards.values() if parent in s.parents)
            if lease is not None and lease.finished and not set(kids) <= set(lease.children):
                await self.table.set_children(lease.key, kids)

    async def shards(self, stream: str) -> list[Shard]:
        """The shard map as last listed, and every shard a lease tells of besides (a KCL
        application's table has only the leases: parents and hash ranges)."""
        listed = {s.shard_id: s for s in await self.companion.shards(stream)}
        for sid, shard in self._shards.items():  # listed by this process (know_shards)
            listed.setdefault(sid, shard)
        for lease in await self._leases(stream):
            if lease.shard_id not in listed:
                listed[lease.shard_id] = shard_of(lease)
        return sorted(listed.values(), key=lambda s: s.shard_id)

    async def save(
        self,
        stream: str,
        changes: Sequence[CheckpointChange],
        finish: tuple[int, str] | None = None,
    ) -> None:
        """Routine progress of a held lease is a conditional checkpoint (a failed condition
        loses the lease: its progress is dropped). An operator's change is a fencing write,
        whoever holds the lease. Progress for a lease not held is dropped: it is someone
        else's now. A change of several leases that fails half-way records what it did."""
        history: list[HistoryEntry] = []
        done: list[str] = []
        routine = [
            c.checkpoint
            for c in changes
            if not (c.history is not None and c.history.cause in OPERATOR_CAUSES)
            and c.checkpoint.shard_id in self.co.held
        ]
        # Routine progress at once, as the KCL renews: one lease's write waits for no other.
        await asyncio.gather(*(self._checkpoint_held(cp) for cp in routine))
        operator = [
            c for c in changes if c.history is not None and c.history.cause in OPERATOR_CAUSES
        ]
        await self._check_expected(stream, operator)
        try:
            for change in changes:
                entry = change.history
                if entry is not None and entry.cause in OPERATOR_CAUSES:
                    overwritten = await self._fence(stream, change)
                    done.append(change.checkpoint.shard_id)
                    if overwritten is not None and entry.old_position != overwritten:
                        # What the table held when it was rewritten: undo puts that back.
                        entry = replace(entry, old_position=overwritten)
                if entry is not None:
                    history.append(entry)
        except BaseException as exc:
            if done and finish is not None:
                await self.companion.add_history(stream, history)
                await self.companion.finish_command(
                    finish[0], False, f"partly applied ({', '.join(done)}), then failed: {exc}"
                )
                raise LeaseTableError(
                    f"the change was applied to {', '.join(done)} only, then failed: {exc}; "
                    "see `checkpoints history`, and undo or apply it again"
                ) from exc
            raise
        if history:
            await self.companion.add_history(stream, history)
        if finish is not None:
            await self.companion.finish_command(finish[0], True, finish[1])

    async def _checkpoint_held(self, cp: Checkpoint) -> None:
        sid = cp.shard_id
        try:
            text, sub = kcl_checkpoint(cp)
        except UnwritablePosition:
            return  # the position it started from: nothing processed yet
        lease = self.co.held.get(sid)
        if lease is None:
            return  # lost meanwhile: its progress is not ours to write
        if text == SHARD_END:
            await self._create_children(lease)

        async def write(held: Lease) -> bool:
            return await self.table.checkpoint(held, text, sub)

        ok = await self.co.write(sid, write)
        if ok is not True:
            if ok is False:
                await self.co.lose(sid)
            return
        if text == SHARD_END:
            children = tuple(s.shard_id for s in self._shards.values() if sid in s.parents)
            await self.table.set_children(lease.key, children)
            # A finished lease is no work: give it back so the balance counts only live shards.
            await self.co.give_back(sid)

    async def _create_children(self, parent: Lease) -> None:
        for shard in self._shards.values():
            if parent.shard_id in shard.parents:
                await self.table.create(
                    key_of(parent, shard.shard_id), TRIM_HORIZON, shard.parents, _range(shard)
                )

    async def _fence(self, stream: str, change: CheckpointChange) -> Position | None:
        """Conditional on the counter read just before (retried when a renewal slipped in).
        A change that keeps the position (pause, resume) keeps the lease's checkpoint as the
        table has it now, whatever this process last saw. The operator's marks go first (the
        next taker must see them) and back if the fence cannot be written. Returns the position
        the lease held when another process's lease was rewritten (None: ours, or created)."""
        cp = change.checkpoint
        sid = cp.shard_id
        history = change.history
        # Held here, the plan has this process's newest progress; else the table knows best.
        keep = (
            history is not None
            and history.old_position == history.new_position
            and _finished(history.old_status) == _finished(history.new_status)
            and sid not in self.co.held
        )
        text, sub = ("", 0) if keep else kcl_checkpoint(cp)  # UnwritablePosition: resolve first
        old_mark = self.co.marks.get(sid, Marks())
        mark = Marks(paused=cp.paused, skipped=cp.status is CheckpointStatus.SKIPPED)
        if mark != old_mark:
            await self.companion.set_marks(stream, sid, mark)
            self.co.marks[sid] = mark
        held = sid in self.co.held
        try:
            overwritten = await self._fence_lease(stream, sid, text, sub, keep)
        except BaseException:
            if mark != old_mark:
                await self.companion.set_marks(stream, sid, old_mark)
                self.co.marks[sid] = old_mark
            raise
        if held or overwritten is None:
            return None
        return checkpoint_of(overwritten).position

    async def _fence_lease(
        self, stream: str, sid: str, text: str, sub: int, keep: bool
    ) -> Lease | None:
        key = self._lease_key(sid)
        for _ in range(10):
            lease = await self.table.get(key, stream_name(stream))
            if lease is None:
                shard = self._shards.get(sid, Shard(sid))
                if await self.table.create(key, text or TRIM_HORIZON, shard.parents):
                    return None
                continue
            self._still_as_shown(sid, lease)  # a renewal slipped in: retried; a new holder: not
            if lease.checkpoint_owner:
                raise LeaseTableError(
                    f"lease {sid} is being handed over by the KCL (checkpointOwner "
                    f"{lease.checkpoint_owner}): change it once the handover is done"
                )
            new, new_sub = (lease.checkpoint, lease.sub) if keep and not text else (text, sub)
            before = replace(lease)
            if await self.table.fence(lease, new, new_sub):
                self.co.drop(sid)
                return before
            await asyncio.sleep(0.05)
        raise LeaseTableUnavailable(
            f"lease {sid} kept changing while it was being rewritten: try again"
        )

    def _lease_key(self, sid: str) -> str:
        held = self.co.held.get(sid)
        if held is not None:
            return held.key
        for s in self.co.observer.seen.values():
            if s.lease.shard_id == sid:
                return s.lease.key
        template = next(iter(self.co.observer.seen.values()), None)
        return key_of(template.lease, sid) if template is not None else sid

    @contextlib.contextmanager
    def expecting(self, owners: Mapping[str, str | None]) -> Iterator[None]:
        """Operator changes saved inside write nothing if the holder of a lease they touch is
        no longer the one the operator was shown (``owners``: shard id -> holder)."""
        self._expected = dict(owners)
        try:
            yield
        finally:
            self._expected = None

    async def _check_expected(self, stream: str, changes: Sequence[CheckpointChange]) -> None:
        expected = self._expected
        if expected is None:
            return
        for change in changes:
            sid = change.checkpoint.shard_id
            if sid not in expected or sid in self.co.held:
                continue
            self._still_as_shown(
                sid, await self.table.get(self._lease_key(sid), stream_name(stream))
            )

    def _still_as_shown(self, sid: str, lease: Lease | None) -> None:
        expected = self._expected
        if expected is None or sid not in expected or sid in self.co.held:
            return
        now = lease.owner if lease is not None else None
        if now != expected[sid]:  # taken, released, or created and taken meanwhile
            was = expected[sid] or "nobody"
            raise LeaseMovedError(
                f"the lease of {sid} changed while you looked (held by {was}, now "
                f"{now or 'nobody'}): nothing written; look again"
            )

    # -- what stays in our own table ------------------------------------------------------------

    async def stream_record(self, stream: str) -> StreamRecord | None:
        return await self.companion.stream_record(stream)

    async def register_stream(self, record: StreamRecord) -> None:
        await self.companion.register_stream(record)

    async def streams(self) -> list[StreamRecord]:
        return await self.companion.streams()

    async def history(
        self, stream: str, shard_id: str | None = None, limit: int = 100
    ) -> list[HistoryEntry]:
        return await self.companion.history(stream, shard_id, limit)

    async def add_history(self, stream: str, entries: Sequence[HistoryEntry]) -> None:
        await self.companion.add_history(stream, entries)

    async def history_entry(self, stream: str, entry_id: int) -> HistoryEntry | None:
        return await self.companion.history_entry(stream, entry_id)

    async def history_for_command(self, stream: str, command_id: int) -> list[HistoryEntry]:
        return await self.companion.history_for_command(stream, command_id)

    async def last_change_id(self, stream: str, before: int | None = None) -> int | None:
        return await self.companion.last_change_id(stream, before)

    async def add_command(
        self, stream: str, shard_id: str | None, action: str, args: dict[str, Any], actor: str
    ) -> int:
        return await self.companion.add_command(stream, shard_id, action, args, actor)

    async def command(self, command_id: int) -> Command | None:
        return await self.companion.command(command_id)

    async def pending_commands(self, stream: str) -> list[Command]:
        return await self.companion.pending_commands(stream)

    async def finish_command(self, command_id: int, ok: bool, result: str) -> None:
        await self.companion.finish_command(command_id, ok, result)

    async def publish(self, stream: str, doc: Mapping[str, Any]) -> None:
        """A fleet's workers say what they do in their heartbeats: nothing more to keep."""

    async def snapshot(self, stream: str) -> tuple[float, dict[str, Any]] | None:
        return None


def _range(shard: Shard) -> tuple[str, str] | None:
    if shard.starting_hash_key is None or shard.ending_hash_key is None:
        return None
    return (shard.starting_hash_key, shard.ending_hash_key)


def _finished(status_word: str | None) -> bool:
    """Whether a history status word (open, paused, done, skipped) is a finished shard's."""
    return status_word in (CheckpointStatus.DONE.value, CheckpointStatus.SKIPPED.value)
