"""The lease table as a :class:`~console.checkpoints.base.CheckpointStore`: many processes share
a stream, each reading the shards it holds a lease on.

Two loops run while the store is watched. The renewer, every failover/3, bumps the counter of
each lease held that no checkpoint wrote meanwhile (a checkpoint is a renewal: in steady state a
lease costs one write per interval, moving or not). The taker, every failover time (the KCL's
runs every 2 x failover; once per failover time lets a dead worker's shards move within 2 x
failover), scans the table and takes its share (console.checkpoints.leases.taker); every other
round it also reads shard-console's own items (operator marks, heartbeats) and writes this
worker's heartbeat. A write whose condition
fails means the lease is someone else's now: the listener hears ``lost`` at once and the shard
stops without a checkpoint.

Operator changes (rewind, skip, pause, resume, undo, replay) are fencing writes on the lease,
whoever holds it: the holder loses it at its next renew, and the next taker reads from the new
checkpoint. Their positions must be records (``AFTER_SEQUENCE_NUMBER``) or sentinels: the engine
resolves times and "at" positions first (console.engine.resolve).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from console.checkpoints.base import (
    CheckpointChange,
    Command,
    LeaseView,
    OwnershipListener,
    StreamRecord,
    WorkerView,
)
from console.checkpoints.leases.companion import Companion, Heartbeat, Marks
from console.checkpoints.leases.items import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    Lease,
    UnwritablePosition,
    checkpoint_of,
    kcl_checkpoint,
)
from console.checkpoints.leases.table import (
    KCL3_VERSIONS,
    LeaseTable,
    LeaseTableError,
    LeaseTableUnavailable,
)
from console.checkpoints.leases.taker import LeaseObserver, choose
from console.model import (
    Checkpoint,
    CheckpointStatus,
    HistoryEntry,
    Position,
    PositionKind,
    Shard,
)

log = logging.getLogger("shard_console.leases")

MIN_FAILOVER = 3.0  # below this a renewal every second is not safely ahead of expiry
OPERATOR_CAUSES = frozenset({"rewind", "reset", "skip", "pause", "resume", "undo", "replay"})


class LeaseConflictError(LeaseTableError):
    """Live workers of another kind (the KCL, or a worker with our id) hold the table."""


def default_worker_id() -> str:
    """Readable in ``leaseOwner``: host, pid and a short random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


def stream_name(key: str) -> str:
    """A Kinesis ARN's stream name (multi-stream lease keys use it); other keys as they are."""
    if key.startswith("arn:") and ":stream/" in key:
        return key.rsplit("/", 1)[-1]
    return key


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
        if failover < MIN_FAILOVER:
            raise LeaseTableError(
                f"--failover-time {failover:g} is below the safe minimum of {MIN_FAILOVER:g} s"
            )
        self.table = LeaseTable(client, table)
        self.companion = Companion(client, table)
        self.path = f"dynamodb:{table}"
        self.worker_id = worker_id or default_worker_id()
        self.failover = failover
        self.renew_interval = failover / 3
        self.take_interval = failover
        self._rounds = 0
        self._create = create
        self._create_companion = create if create_companion is None else create_companion
        self._take_over = take_over
        self._initial = initial or Position.trim_horizon()
        self._clock = clock
        self._started_at = time.time()
        self._host = socket.gethostname()
        self._stream: str | None = None
        self._observer = LeaseObserver()
        self._held: dict[str, Lease] = {}
        self._written: dict[str, float] = {}  # clock of each held lease's last write
        self._shards: dict[str, Shard] = {}
        self._marks: dict[str, Marks] = {}
        self._heartbeats: list[Heartbeat] = []
        self._listener: OwnershipListener | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._prepared = False
        self.counts = {"taken": 0, "stolen": 0, "lost": 0, "released": 0}

    @property
    def requests(self) -> int:
        return self.table.requests + self.companion.requests

    # -- joining and leaving ------------------------------------------------------------------

    async def prepare(self) -> None:
        """The lease table and ours beside it: used as they are, or created."""
        if not self._prepared:
            await self.table.ensure(self._create)
            await self.companion.ensure(self._create_companion)
            self._prepared = True

    async def acquire(self, stream: str) -> None:
        """Join the stream's workers. Refuses (LeaseConflictError) a KCL 3.x application, live
        workers that are not shard-console's, and a worker id another live process uses, unless
        ``take_over``."""
        await self.prepare()
        items = await self.table.scan()
        version = await self.table.client_version(items)
        if version in KCL3_VERSIONS and not self._take_over:
            raise LeaseConflictError(
                f"lease table '{self.table.name}' belongs to a KCL 3.x application "
                f"(client version {version}): its leader assigns the leases; stop it and pass "
                "--take-over to move it to shard-console"
            )
        self._stream = stream
        await self._read_companion(stream)
        me = self._heartbeat_of(self.worker_id)
        if me is not None and time.time() - me.at < 3 * self.take_interval:
            raise LeaseConflictError(
                f"worker id '{self.worker_id}' is live in lease table '{self.table.name}' "
                f"(pid {me.pid} on {me.host}, seen {time.time() - me.at:.0f} s ago): pick "
                "another --worker-id"
            )
        if not self._take_over:
            await self._refuse_live_strangers(stream)
        await self._beat()

    async def _refuse_live_strangers(self, stream: str) -> None:
        """Owners with no heartbeat of ours are another kind of worker (the KCL). Watched for
        the failover time: one whose counter moves is live, and refused."""
        ours = {hb.worker for hb in self._heartbeats}
        start = self._clock()
        self._observer.update(await self._leases(stream), start)
        live: set[str] = set()
        while True:
            strangers = {
                s.lease.owner
                for s in self._observer.seen.values()
                if s.lease.owner is not None
                and s.lease.owner not in ours
                and s.lease.owner != self.worker_id
                and not s.lease.finished
            }
            if not strangers:
                return
            now = self._clock()
            live |= {
                str(s.lease.owner)
                for s in self._observer.seen.values()
                if s.lease.owner in strangers and s.moved
            }
            if live:
                raise LeaseConflictError(
                    f"live workers that are not shard-console's hold leases in "
                    f"'{self.table.name}': {', '.join(sorted(live))}; stop that application "
                    "first, or pass --take-over to run beside it"
                )
            if now - start > self.failover:
                return  # they held leases but renewed none: dead, their leases expire
            await asyncio.sleep(min(1.0, self.renew_interval))
            self._observer.update(await self._leases(stream), self._clock())

    def watch(self, stream: str, listener: OwnershipListener) -> None:
        self._stream = stream
        self._listener = listener
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._take_loop(), name="lease taker"),
                asyncio.create_task(self._renew_loop(), name="lease renewer"),
            ]
            for task in self._tasks:
                task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """A loop that dies (a bug) is said loudly: its leases would expire in silence."""
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("the %s died", task.get_name(), exc_info=exc)
            self._trouble(f"internal error: the {task.get_name()} died: {exc!r}")

    def holds(self, stream: str) -> bool:
        return self._stream == stream and bool(self._tasks)

    def may_read(self, stream: str, shard_id: str) -> bool:
        return shard_id in self._held

    async def release(self, stream: str) -> None:
        """Stop renewing and taking, and give every lease back (conditionally): the others
        take them at once, from the checkpoints just flushed."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        held, self._held = self._held, {}
        given: list[str] = []
        for sid, lease in held.items():
            with contextlib.suppress(LeaseTableError):
                if await self.table.release(lease):
                    given.append(sid)
        self.counts["released"] += len(given)
        if self._listener is not None and held:
            self._listener.released(given)
        if self._stream is not None:
            await self.companion.gone(self._stream, self.worker_id)

    async def close(self) -> None:
        if self._tasks:
            await self.release(self._stream or "")

    # -- the loops ----------------------------------------------------------------------------

    async def _take_loop(self) -> None:
        while True:
            try:
                await self.take_round()
            except LeaseTableError as exc:
                self._trouble(f"taking leases failed, will retry: {exc}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.take_interval):
                    await self._wake.wait()
            self._wake.clear()

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.renew_interval)
            try:
                await self.renew_round()
            except LeaseTableError as exc:  # access lost, say: each lease expires on its own
                self._trouble(f"renewing leases failed, will retry: {exc}")

    async def renew_round(self) -> None:
        """Every lease due, at once (the KCL renews in parallel too): a slow table must not
        let the last of many leases expire behind the first."""
        now = self._clock()
        due = [
            (sid, lease)
            for sid, lease in self._held.items()
            if now - self._written.get(sid, 0.0) >= self.renew_interval * 0.9
        ]  # the others were renewed by a checkpoint
        await asyncio.gather(*(self._renew(sid, lease) for sid, lease in due))

    async def _renew(self, sid: str, lease: Lease) -> None:
        try:
            ok = await self.table.renew(lease)
        except LeaseTableError as exc:
            if self._clock() - self._written.get(sid, 0.0) > self.failover:
                await self._lose(sid, f"not renewed for the failover time ({exc})")
            return
        if ok:
            self._written[sid] = self._clock()
        elif self._held.get(sid) is lease:
            await self._lose(sid)

    async def take_round(self) -> None:
        stream = self._stream
        if stream is None:
            return
        now = self._clock()
        leases = await self._leases(stream)
        self._observer.update(leases, now)
        beat = self._rounds % 2 == 0
        self._rounds += 1
        if beat:
            await self._read_companion(stream)
        self._tell_observed(now)

        def ready(lease: Lease) -> bool:
            seen = self._observer.seen
            return all(
                (p := self._key_of(lease, parent)) not in seen or seen[p].lease.finished
                for parent in lease.parents
            )

        wall = time.time()
        alive = [hb.worker for hb in self._heartbeats if wall - hb.at < 5 * self.take_interval]
        choice = choose(self._observer, self.worker_id, self.failover, now, ready, others=alive)
        if (choice.take or choice.steal) and not beat:
            await self._read_companion(stream)  # a lease is read with the operator's marks now
        for lease, stolen in [(x, False) for x in choice.take] + [(x, True) for x in choice.steal]:
            if self._marks.get(lease.shard_id, Marks()).skipped:
                continue
            previous = lease.owner
            mine = replace(lease)
            if not await self.table.take(mine, self.worker_id):
                continue
            self._held[mine.shard_id] = mine
            self._written[mine.shard_id] = self._clock()
            self.counts["stolen" if stolen else "taken"] += 1
            if self._listener is not None:
                cp = self._checkpoint(mine)
                self._listener.taken(mine.shard_id, cp, previous if stolen else None)
        if beat:
            await self._beat()

    def _tell_observed(self, now: float) -> None:
        if self._listener is None:
            return
        views = {}
        for s in self._observer.seen.values():
            lease = s.lease
            views[lease.shard_id] = LeaseView(
                shard_id=lease.shard_id,
                owner=lease.owner,
                counter=lease.counter,
                counter_age=now - s.changed_at if s.changed_at else None,
                expired=self._observer.expired(s, self.failover, now),
                checkpoint=self._checkpoint(lease),
            )
        wall = time.time()
        workers = [
            WorkerView(
                hb.worker,
                hb.host,
                hb.pid,
                len(hb.leases),
                hb.records,
                hb.rate,
                wall - hb.at,
                hb.shards,
            )
            for hb in self._heartbeats
        ]
        self._listener.observed(views, workers)

    def _trouble(self, message: str) -> None:
        log.warning("%s", message)
        if self._listener is not None:
            self._listener.trouble(message)

    async def _lose(self, sid: str, why: str | None = None) -> None:
        lease = self._held.pop(sid, None)
        if lease is None:
            return
        self.counts["lost"] += 1
        owner: str | None = None
        if why is None:
            with contextlib.suppress(LeaseTableError):
                now = await self.table.get(lease.key, stream_name(self._stream or ""))
                owner = now.owner if now is not None else None
        else:
            self._trouble(f"giving up the lease on {sid}: {why}")
        if self._listener is not None:
            self._listener.lost(sid, owner)

    async def _beat(self) -> None:
        if self._stream is None:
            return
        report = self._listener.report() if self._listener is not None else {}
        hb = Heartbeat(
            worker=self.worker_id,
            host=self._host,
            pid=os.getpid(),
            started_at=self._started_at,
            at=time.time(),
            leases=tuple(sorted(self._held)),
            records=int(report.get("records", 0)),
            rate=float(report.get("rate", 0.0)),
            shards=report.get("shards", {}),
        )
        await self.companion.beat(self._stream, hb)

    async def _read_companion(self, stream: str) -> None:
        self._marks, self._heartbeats = await self.companion.marks_and_workers(stream)

    def _heartbeat_of(self, worker: str) -> Heartbeat | None:
        return next((hb for hb in self._heartbeats if hb.worker == worker), None)

    def heartbeats(self) -> list[Heartbeat]:
        return list(self._heartbeats)

    # -- leases and our values ----------------------------------------------------------------

    async def _leases(self, stream: str) -> list[Lease]:
        return await self.table.leases(stream_name(stream))

    def _key_of(self, lease: Lease, shard_id: str) -> str:
        """The lease key of a shard of the same stream, in the same format as ``lease``'s."""
        if lease.key == lease.shard_id:
            return shard_id
        return lease.key[: len(lease.key) - len(lease.shard_id)] + shard_id

    def _checkpoint(self, lease: Lease) -> Checkpoint:
        at = self._initial.timestamp if self._initial.kind is PositionKind.AT_TIMESTAMP else None
        cp = checkpoint_of(lease, at)
        mark = self._marks.get(lease.shard_id)
        if mark is not None:
            if mark.skipped and cp.status is CheckpointStatus.DONE:
                cp = replace(cp, status=CheckpointStatus.SKIPPED)
            if mark.paused and not cp.status.finished:
                cp = replace(cp, paused=True)
        return cp

    async def load(self, stream: str) -> dict[str, Checkpoint]:
        leases = await self._leases(stream)
        self._observer.update(leases, self._clock())
        await self._read_companion(stream)
        return {lease.shard_id: self._checkpoint(lease) for lease in leases}

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
        await self.companion.save_shards(stream, shards, self._marks)
        known = {s.lease.shard_id: s.lease for s in self._observer.seen.values()}
        fresh = not known
        template = next(iter(known.values()), None)
        created = False
        for shard in shards:
            if shard.shard_id in known:
                continue
            key = self._key_of(template, shard.shard_id) if template else shard.shard_id
            hash_range = (
                (shard.starting_hash_key, shard.ending_hash_key)
                if shard.starting_hash_key is not None and shard.ending_hash_key is not None
                else None
            )
            checkpoint = self._first_checkpoint(shard, fresh)
            created |= await self.table.create(key, checkpoint, shard.parents, hash_range)
        await self._record_children(stream, [s for s in shards if s.parents])
        if created:
            self._wake.set()

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
        for lease in await self._leases(stream):
            if lease.shard_id not in listed:
                parents = lease.parents
                start, end = lease.hash_range or (None, None)
                listed[lease.shard_id] = Shard(
                    lease.shard_id,
                    parents[0] if parents else None,
                    parents[1] if len(parents) > 1 else None,
                    start,
                    end,
                )
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
        else's now."""
        history: list[HistoryEntry] = []
        for change in changes:
            cp = change.checkpoint
            if change.history is not None:
                history.append(change.history)
            if change.history is not None and change.history.cause in OPERATOR_CAUSES:
                await self._fence(stream, cp)
                continue
            lease = self._held.get(cp.shard_id)
            if lease is None:
                continue
            await self._checkpoint_held(stream, lease, cp)
        if history:
            await self.companion.add_history(stream, history)
        if finish is not None:
            await self.companion.finish_command(finish[0], True, finish[1])

    async def _checkpoint_held(self, stream: str, lease: Lease, cp: Checkpoint) -> None:
        sid = cp.shard_id
        try:
            text, sub = kcl_checkpoint(cp)
        except UnwritablePosition:
            return  # the position it started from: nothing processed yet
        if text == SHARD_END:
            await self._create_children(lease)
        if not await self.table.checkpoint(lease, text, sub):
            if self._held.get(sid) is lease:
                await self._lose(sid)
            return
        self._written[sid] = self._clock()
        if text == SHARD_END:
            children = tuple(s.shard_id for s in self._shards.values() if sid in s.parents)
            await self.table.set_children(lease.key, children)
            # A finished lease is no work: give it back so the balance counts only live shards.
            self._held.pop(sid, None)
            await self.table.release(lease)
            self._wake.set()

    async def _create_children(self, parent: Lease) -> None:
        for shard in self._shards.values():
            if parent.shard_id in shard.parents:
                hash_range = (
                    (shard.starting_hash_key, shard.ending_hash_key)
                    if shard.starting_hash_key is not None and shard.ending_hash_key is not None
                    else None
                )
                await self.table.create(
                    self._key_of(parent, shard.shard_id), TRIM_HORIZON, shard.parents, hash_range
                )

    async def _fence(self, stream: str, cp: Checkpoint) -> None:
        """Conditional on the counter read just before; retried when a renewal slipped in."""
        sid = cp.shard_id
        text, sub = kcl_checkpoint(cp)  # UnwritablePosition: resolve first
        mark = Marks(paused=cp.paused, skipped=cp.status is CheckpointStatus.SKIPPED)
        if self._marks.get(sid, Marks()) != mark:
            await self.companion.set_marks(stream, sid, mark)
            self._marks[sid] = mark
        for _ in range(10):
            lease = await self.table.get(self._lease_key(sid), stream_name(stream))
            if lease is None:
                shard = self._shards.get(sid, Shard(sid))
                if await self.table.create(self._lease_key(sid), text, shard.parents):
                    return
                continue
            if await self.table.fence(lease, text, sub):
                self._held.pop(sid, None)
                self._wake.set()
                return
            await asyncio.sleep(0.05)
        raise LeaseTableUnavailable(
            f"lease {sid} kept changing while it was being rewritten: try again"
        )

    def _lease_key(self, sid: str) -> str:
        held = self._held.get(sid)
        if held is not None:
            return held.key
        for s in self._observer.seen.values():
            if s.lease.shard_id == sid:
                return s.lease.key
        template = next(iter(self._observer.seen.values()), None)
        return self._key_of(template.lease, sid) if template is not None else sid

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
