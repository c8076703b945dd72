"""The lease table as a :class:`~console.checkpoints.base.CheckpointStore`: the leases' checkpoints
read as ours, and what the lease table has no attribute for (history, commands, the operator's
marks, heartbeats) in shard-console's own table beside it (console.checkpoints.leases.companion).

Passive: who holds which lease, and the protocol's renewals, takes and checkpoints of held
leases, are the engine's (console.engine.ownership.leases). What is written here is what an
operator asks: :meth:`LeaseStore.fence` writes a change into a lease whoever holds it, the way
the KCL's own evict does, so the holder loses it at its next renewal and the next taker reads
from the new checkpoint. Positions must be records (``AFTER_SEQUENCE_NUMBER``) or sentinels: the
engine resolves times and "at" positions first (console.engine.changes.resolve).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from console.checkpoints.base import CheckpointChange, Command, StreamRecord
from console.checkpoints.leases import parked as parked_items
from console.checkpoints.leases.companion import Companion, Marks
from console.checkpoints.leases.errors import (
    LeaseTableError,
    LeaseTableUnavailable,
    MalformedLease,
)
from console.checkpoints.leases.items import (
    SHARD_END,
    TRIM_HORIZON,
    Lease,
    checkpoint_of,
    kcl_checkpoint,
    shard_of,
)
from console.checkpoints.leases.table import LeaseTable
from console.model import (
    Checkpoint,
    CheckpointStatus,
    HistoryEntry,
    ParkedRecord,
    Position,
    PositionKind,
    Shard,
)

OPERATOR_CAUSES = frozenset({"rewind", "reset", "skip", "pause", "resume", "undo", "replay"})


class LeaseMovedError(LeaseTableError):
    """A lease changed hands between the operator's look and the change: nothing written."""


class PartlyApplied(LeaseTableError):
    """A change of several leases failed half-way; ``done`` were written (and recorded)."""

    def __init__(self, message: str, done: Sequence[str]) -> None:
        super().__init__(message)
        self.done = tuple(done)


def is_operator_change(change: CheckpointChange) -> bool:
    """An operator's change (rewind, skip, ...), as opposed to a reader's own progress."""
    return change.history is not None and change.history.cause in OPERATOR_CAUSES


def stream_name(key: str) -> str:
    """A Kinesis ARN's stream name (multi-stream lease keys use it); other keys as they are."""
    if key.startswith("arn:") and ":stream/" in key:
        return key.rsplit("/", 1)[-1]
    return key


def key_of(lease: Lease, shard_id: str) -> str:
    """The lease key of a shard of the same stream, in the same format as ``lease``'s."""
    if lease.key == lease.shard_id:
        return shard_id
    return lease.key[: len(lease.key) - len(lease.shard_id)] + shard_id


def shard_range(shard: Shard) -> tuple[str, str] | None:
    if shard.starting_hash_key is None or shard.ending_hash_key is None:
        return None
    return (shard.starting_hash_key, shard.ending_hash_key)


class LeaseStore:
    def __init__(
        self,
        client: Any,
        table: str,
        *,
        initial: Position | None = None,
        create: bool = True,
        create_companion: bool | None = None,
    ) -> None:
        """``initial``: the reader's initial position (an AT_TIMESTAMP lease reads as its time).
        ``create``: the lease table is created if absent. ``create_companion``: None for a
        fleet's worker (shard-console's table is created once the checks of joining pass);
        True or False for the control CLI and attached consoles."""
        self.table = LeaseTable(client, table)
        self.companion = Companion(client, table)
        self.path = f"dynamodb:{table}"
        self.initial = initial or Position.trim_horizon()
        self._create = create
        self._companion_now = create_companion
        self._prepared = False
        self.created = False  # the table was made by this process: a new application
        # The application runs under a leader (KCL 3.x): an operator's change keeps a lease's
        # holder (console.checkpoints.leases.table.LeaseTable.fence).
        self.keeps_holder = False
        self._shards: dict[str, Shard] = {}  # as listed (by this process) or told
        self._keys: dict[str, str] = {}  # shard id -> lease key, as last read
        self._template: Lease | None = None  # a lease of the stream: the key format
        self.marks: dict[str, Marks] = {}  # the operator's marks, as last read
        self.malformed: dict[str, MalformedLease] = {}  # as last scanned: shard id -> why

    async def prepare(self) -> None:
        """The lease table, used as it is or created; shard-console's table as the control
        CLI asked (a worker's is made when it joins)."""
        if not self._prepared:
            self.created = await self.table.ensure(self._create)
            if self._companion_now is not None:
                await self.companion.ensure(create=self._companion_now, missing_ok=True)
            self._prepared = True

    # -- leases -------------------------------------------------------------------------------

    async def leases(self, stream: str) -> list[Lease]:
        """Every lease of the stream: one consistent, paged scan. Items that claim to be its
        leases and are not valid ones are kept apart (:attr:`malformed`), never used."""
        found, bad = await self.table.leases(stream_name(stream))
        self.remember(found)
        self.malformed = {b.shard_id: b for b in bad}
        return found

    def remember(self, leases: Sequence[Lease]) -> None:
        """Lease keys, as read: a change to a shard goes to its lease, in the table's format."""
        for lease in leases:
            self._keys[lease.shard_id] = lease.key
            self._template = self._template or lease

    def lease_key(self, shard_id: str) -> str:
        known = self._keys.get(shard_id)
        if known is not None:
            return known
        return key_of(self._template, shard_id) if self._template is not None else shard_id

    def checkpoint(self, lease: Lease, mark: Marks | None = None) -> Checkpoint:
        """A lease's checkpoint in our terms, with the operator's marks (paused, skipped)."""
        initial = self.initial
        at = initial.timestamp if initial.kind is PositionKind.AT_TIMESTAMP else None
        cp = checkpoint_of(lease, at)
        if mark is not None:
            if mark.skipped and cp.status is CheckpointStatus.DONE:
                cp = replace(cp, status=CheckpointStatus.SKIPPED)
            if mark.paused and not cp.status.finished:
                cp = replace(cp, paused=True)
        return cp

    async def load(self, stream: str) -> dict[str, Checkpoint]:
        leases = await self.leases(stream)
        self.marks, _ = await self.companion.marks_and_workers(stream)
        return {
            lease.shard_id: self.checkpoint(lease, self.marks.get(lease.shard_id))
            for lease in leases
        }

    # -- shards ---------------------------------------------------------------------------------

    async def save_shards(self, stream: str, shards: Sequence[Shard]) -> None:
        """The shard map as listed, in shard-console's table (leases are the engine's to
        create: console.engine.ownership.leases)."""
        self.know_shards(shards)
        await self.companion.save_shards(stream, shards)

    def know_shards(self, shards: Sequence[Shard]) -> None:
        """The stream's shards as this process listed them, for plans and new leases, without
        writing anything (an attached console: the application's shard sync makes leases)."""
        for shard in shards:
            self._shards[shard.shard_id] = shard

    @property
    def known_shards(self) -> Mapping[str, Shard]:
        return self._shards

    async def shards(self, stream: str) -> list[Shard]:
        """The shard map as last listed, and every shard a lease tells of besides (a KCL
        application's table has only the leases: parents and hash ranges)."""
        listed = {s.shard_id: s for s in await self.companion.shards(stream)}
        for sid, shard in self._shards.items():  # listed by this process (know_shards)
            listed.setdefault(sid, shard)
        for lease in await self.leases(stream):
            if lease.shard_id not in listed:
                listed[lease.shard_id] = shard_of(lease)
        return sorted(listed.values(), key=lambda s: s.shard_id)

    # -- operator changes ---------------------------------------------------------------------

    async def save(
        self,
        stream: str,
        changes: Sequence[CheckpointChange],
        finish: tuple[int, str] | None = None,
    ) -> None:
        """Every change as an operator's: :meth:`fence`."""
        await self.fence(stream, changes, finish)

    async def fence(
        self,
        stream: str,
        changes: Sequence[CheckpointChange],
        finish: tuple[int, str] | None = None,
        *,
        expected: Mapping[str, str | None] | None = None,
        current: frozenset[str] = frozenset(),
        force: bool = False,
    ) -> None:
        """Each change written into its lease, whoever holds it (a lease created if there is
        none), and recorded in the history; ``finish`` marks the command applied. ``force``:
        a lease under a KCL 3.x handoff too, its ``checkpointOwner`` cleared (said in the
        history's note).

        ``expected``: shard id -> the holder the operator was shown; a lease that changed hands
        since is not written (LeaseMovedError, nothing written). ``current``: shards whose
        position in the change is the caller's own newest progress (it holds them); a change
        that keeps the position (pause, resume) of any other lease keeps what the table has.
        A change of several leases that fails half-way raises PartlyApplied, recorded so."""
        for change in changes:  # looked at before anything is written
            sid = change.checkpoint.shard_id
            if expected is not None and sid in expected and sid not in current:
                self._still_as_shown(
                    sid, expected, await self.table.get(self.lease_key(sid), stream_name(stream))
                )
        history: list[HistoryEntry] = []
        done: list[str] = []
        try:
            for change in changes:
                entry = change.history
                overwritten, cleared = await self._fence_one(
                    stream, change, expected, current, force
                )
                done.append(change.checkpoint.shard_id)
                if entry is not None and overwritten not in (None, entry.old_position):
                    # What the table held when it was rewritten: undo puts that back.
                    entry = replace(entry, old_position=overwritten)
                if entry is not None and cleared is not None:
                    why = f"forced: handoff from {cleared} cleared (checkpointOwner removed)"
                    entry = replace(entry, note=f"{entry.note}; {why}" if entry.note else why)
                if entry is not None:
                    history.append(entry)
        except BaseException as exc:
            if done and finish is not None:
                await self.companion.add_history(stream, history)
                await self.companion.finish_command(
                    finish[0], False, f"partly applied ({', '.join(done)}), then failed: {exc}"
                )
                raise PartlyApplied(
                    f"the change was applied to {', '.join(done)} only, then failed: {exc}; "
                    "see `checkpoints history`, and undo or apply it again",
                    done,
                ) from exc
            raise
        if history:
            await self.companion.add_history(stream, history)
        if finish is not None:
            await self.companion.finish_command(finish[0], True, finish[1])

    async def _fence_one(
        self,
        stream: str,
        change: CheckpointChange,
        expected: Mapping[str, str | None] | None,
        current: frozenset[str],
        force: bool = False,
    ) -> tuple[Position | None, str | None]:
        """The operator's marks go first (the next taker must see them), and back if the
        fence cannot be written. Returns the position the lease held when another process's
        lease was rewritten (None: the caller's own, or created), and the ``checkpointOwner``
        a forced change cleared."""
        cp = change.checkpoint
        sid = cp.shard_id
        history = change.history
        keep = (
            history is not None
            and history.old_position == history.new_position
            and _finished(history.old_status) == _finished(history.new_status)
            and sid not in current
        )
        text, sub = ("", 0) if keep else kcl_checkpoint(cp)  # UnwritablePosition: resolve first
        old_mark = self.marks.get(sid, Marks())
        mark = Marks(paused=cp.paused, skipped=cp.status is CheckpointStatus.SKIPPED)
        if mark != old_mark:
            await self.companion.set_marks(stream, sid, mark)
            self.marks[sid] = mark
        try:
            overwritten = await self._fence_lease(stream, sid, text, sub, expected, current, force)
        except BaseException:
            if mark != old_mark:
                await self.companion.set_marks(stream, sid, old_mark)
                self.marks[sid] = old_mark
            raise
        cleared = overwritten.checkpoint_owner if overwritten is not None else None
        if sid in current or overwritten is None:
            return None, cleared
        return checkpoint_of(overwritten).position, cleared

    async def _fence_lease(
        self,
        stream: str,
        sid: str,
        text: str,
        sub: int,
        expected: Mapping[str, str | None] | None,
        current: frozenset[str],
        force: bool = False,
    ) -> Lease | None:
        """Conditional on the counter read just before (retried when a renewal slipped in; a
        new holder is not)."""
        key = self.lease_key(sid)
        for _ in range(10):
            lease = await self.table.get(key, stream_name(stream))
            if lease is None:
                shard = self._shards.get(sid, Shard(sid))
                if await self.table.create(key, text or TRIM_HORIZON, shard.parents):
                    return None
                continue
            if expected is not None and sid not in current:
                self._still_as_shown(sid, expected, lease)
            if lease.checkpoint_owner and not force:
                raise LeaseTableError(
                    f"lease {sid} is being handed from {lease.checkpoint_owner} to "
                    f"{lease.owner}: change it once the handoff is done, or with --force if it "
                    "is stuck (its checkpointOwner is cleared; the batch in hand is read again)"
                )
            new, new_sub = (lease.checkpoint, lease.sub) if not text else (text, sub)
            before = replace(lease)
            if await self.table.fence(lease, new, new_sub, keep_holder=self.keeps_holder):
                return before
            await asyncio.sleep(0.05)
        raise LeaseTableUnavailable(
            f"lease {sid} kept changing while it was being rewritten: try again"
        )

    @staticmethod
    def _still_as_shown(sid: str, expected: Mapping[str, str | None], lease: Lease | None) -> None:
        if sid not in expected:
            return
        now = lease.owner if lease is not None else None
        if now != expected[sid]:  # taken, released, or created and taken meanwhile
            was = expected[sid] or "nobody"
            raise LeaseMovedError(
                f"the lease of {sid} changed while you looked (held by {was}, now "
                f"{now or 'nobody'}): nothing written; look again"
            )

    # -- what stays in our own table ------------------------------------------------------------

    # -- parked records (console.checkpoints.leases.parked) ---------------------------------

    async def park(self, records: Sequence[ParkedRecord]) -> None:
        if records:
            await parked_items.park(self.companion, records[0].stream, records)

    async def parked(
        self, stream: str, shard_id: str | None = None, ids: Sequence[int] | None = None
    ) -> list[ParkedRecord]:
        return await parked_items.parked(self.companion, stream, shard_id, ids)

    async def unpark(self, stream: str, ids: Sequence[int], entries: Sequence[HistoryEntry]) -> int:
        return await parked_items.unpark(self.companion, stream, ids, entries)

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

    async def close(self) -> None:
        """The client is the caller's: nothing of ours to close."""


def _finished(status_word: str | None) -> bool:
    """Whether a history status word (open, paused, done, skipped) is a finished shard's."""
    return status_word in (CheckpointStatus.DONE.value, CheckpointStatus.SKIPPED.value)


__all__ = [
    "SHARD_END",
    "LeaseMovedError",
    "LeaseStore",
    "PartlyApplied",
    "is_operator_change",
    "key_of",
    "shard_range",
    "stream_name",
]
