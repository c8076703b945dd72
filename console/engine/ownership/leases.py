"""A fleet's worker: the shards it may read are the leases it holds in a KCL lease table, taken,
renewed and given back by the KCL 2.x protocol (../shared/LEASES.md).

Three loops run from :meth:`LeaseOwnership.start` to :meth:`LeaseOwnership.leave`. The renewer,
every failover/3, first flushes the consumer's checkpoints (a checkpoint renews its lease: a
lease costs one write per interval, busy or idle), then renews every lease no checkpoint wrote;
each write is bounded. A watchdog gives up, on time, any lease not written for 2/3 of the
failover time (counted from when its last write was sent), before anyone else may take it. The
taker, every failover time (the KCL's runs every 2 x failover; once per failover time lets a
dead worker's shards move within 2 x failover), scans the table and takes this worker's share
(console.engine.ownership.taker); every other round it also reads shard-console's own items
(operator marks, heartbeats) and writes this worker's heartbeat.

Every write to a held lease goes through one lock per lease, so a renewal and a checkpoint never
race on one counter; a write whose condition fails reads the lease again, and only a lease
another holds (or nobody, after an operator's change) is lost: its shard stops at the consumer's
next reconcile, without a checkpoint. What it sees (leases taken, lost, the fleet as scanned) is
written into the snapshot and the checkpointer; :attr:`LeaseOwnership.changed` tells the
consumer to reconcile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace

from console.checkpoints.base import CheckpointChange
from console.checkpoints.leases import (
    SHARD_END,
    Lease,
    LeaseStore,
    LeaseTableError,
    Marks,
    PartlyApplied,
    UnwritablePosition,
    is_operator_change,
    kcl_checkpoint,
    key_of,
    stream_name,
)
from console.engine.events import EventLog, Level
from console.engine.ownership.base import Allowance, Duties, Progress, start_loops
from console.engine.ownership.fleet_view import FleetView
from console.engine.ownership.joining import LeaseConflictError, check_joining
from console.engine.ownership.shard_sync import create_children, sync_leases
from console.engine.ownership.taker import LeaseObserver, choose
from console.engine.state import EngineState, LeaseInfo
from console.model import Shard
from console.setting_values import MIN_FAILOVER
from console.settings import default

log = logging.getLogger("shard_console.leases")

__all__ = [
    "MIN_FAILOVER",
    "LeaseConflictError",
    "LeaseOwnership",
    "check_failover",
    "default_worker_id",
]


def check_failover(failover: float) -> None:
    """A failover time too short for renewals to stay ahead of expiry: refused before anything
    is opened."""
    if failover < MIN_FAILOVER:
        raise LeaseTableError(
            f"--failover-time {failover:g} is below the safe minimum of {MIN_FAILOVER:g} s"
        )


def default_worker_id() -> str:
    """Readable in ``leaseOwner``: host, pid and a short random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"


class LeaseOwnership:
    resolves = True
    assigned = False  # a KCL 3.x leader assigns the leases (console.engine.ownership.assigned)

    def __init__(
        self,
        store: LeaseStore,
        state: EngineState,
        events: EventLog,
        *,
        worker_id: str | None = None,
        failover: float = default("failover_time"),
        take_over: bool = False,
        create_companion: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        check_failover(failover)
        self.store = store
        self.table = store.table
        self.companion = store.companion
        self.state = state
        self.events = events
        self.worker_id = worker_id or default_worker_id()
        self.failover = failover
        self.renew_interval = failover / 3
        self.take_interval = failover
        self.beat_interval = 2 * failover  # every other round
        self.take_over = take_over
        self._create_companion = create_companion
        self.clock = clock
        self.wall = wall
        self.rng = random.Random()  # which lease of several to take: a model test seeds it
        self.changed = asyncio.Event()
        self.key: str | None = None
        self.observer = LeaseObserver()
        self.held: dict[str, Lease] = {}
        self._progress: Progress | None = None
        self._written: dict[str, float] = {}  # clock of each held lease's last write
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._taking = True
        self.wake = asyncio.Event()
        self._rounds = 0
        self.fleet = FleetView(
            state, events, self.worker_id, self.beat_interval, wall() - clock(), failover, wall
        )
        # Leases taken, stolen, lost and given back by this worker (the metrics count them).
        self.counts = {"taken": 0, "stolen": 0, "lost": 0, "released": 0}

    # -- joining and leaving --------------------------------------------------------------------

    async def join(self, key: str, progress: Progress) -> None:
        """Refuses (LeaseConflictError) a KCL 3.x application, live workers that are not
        shard-console's, and a worker id another live process uses, unless ``take_over``; only
        then is shard-console's table created and this worker's heartbeat written."""
        self.key = key
        self._progress = progress
        await self.companion.ensure(create=False, missing_ok=True)
        await self.read_companion()
        await check_joining(self, key)
        await self.companion.ensure(create=self._create_companion)
        await self.beat()
        self.state.set_watch(worker_id=self.worker_id)

    async def prime(self, shards: Sequence[Shard], fresh: bool) -> None:
        """The leases of a stream the table has none of are created by :meth:`listed`, at the
        initial position, as the KCL's shard sync does."""

    async def start(self, duties: Duties) -> None:
        if self._tasks:
            return
        self._tasks = start_loops(
            [
                ("lease taker", self._take_loop()),
                ("lease renewer", self._renew_loop()),
                ("lease watchdog", self._watchdog()),
            ],
            duties.fail,
        )

    async def hand_over(self, shard_id: str) -> None:
        """Never asked: this strategy allows no HAND_OFF."""

    def quiesce(self) -> None:
        self._taking = False

    async def stop_loops(self) -> None:
        """This worker's loops (taking, renewing, ...) stopped, each awaited."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def leave(self) -> None:
        """Stop renewing and taking, and give every lease back (conditionally): the others take
        them at once, from the checkpoints just flushed."""
        await self.stop_loops()
        given = []
        for sid in list(self.held):
            with contextlib.suppress(LeaseTableError):
                if await self.give_back(sid):
                    given.append(sid)
        self.counts["released"] += len(given)
        if given:
            for sid in given:
                self._set_owner(sid, None)
            self.events.emit(
                "lease_released", f"gave back {len(given)} lease(s): {', '.join(sorted(given))}"
            )
        if self.key is not None:
            await self.companion.gone(self.key, self.worker_id)

    # -- what the consumer asks -----------------------------------------------------------------

    def allowance(self, shard_id: str) -> Allowance:
        if shard_id in self.held:
            return Allowance.READ
        owner = self.state.view(shard_id).owner if shard_id in self.state.shards else None
        return Allowance.NOBODY if owner is None else Allowance.ELSEWHERE

    def claims(self) -> Collection[str]:
        return self.held.keys()

    def problem(self, shard_id: str) -> str | None:
        bad = self.store.malformed.get(shard_id)
        return f"malformed lease: {bad.reason}" if bad is not None else None

    async def listed(self, shards: Sequence[Shard]) -> None:
        """The shard map saved; leases for the shards that have none (console.engine.ownership
        .shard_sync)."""
        assert self.key is not None
        await self.store.save_shards(self.key, shards)
        if await sync_leases(self.store, self.key, self.observer, shards):
            self.wake.set()

    async def write(
        self, changes: Sequence[CheckpointChange], finish: tuple[int, str] | None
    ) -> set[str]:
        """A reader's progress and shard ends are conditional checkpoints of held leases (one
        whose condition fails is lost, and its progress dropped); an operator's change is a
        fencing write on the lease, whoever holds it."""
        assert self.key is not None
        routine = [c for c in changes if not is_operator_change(c)]
        operator = [c for c in changes if is_operator_change(c)]
        # Routine progress at once, as the KCL renews: one lease's write waits for no other.
        done = await asyncio.gather(*(self._checkpoint_held(c) for c in routine))
        written = {c.checkpoint.shard_id for c, ok in zip(routine, done, strict=True) if ok}
        history = [c.history for c in routine if c.history is not None]
        if history:
            await self.companion.add_history(self.key, history)
        if operator:
            ids = [c.checkpoint.shard_id for c in operator]
            current = frozenset(sid for sid in ids if sid in self.held)
            try:
                await self.store.fence(self.key, operator, finish, current=current)
            except PartlyApplied as exc:
                for sid in exc.done:
                    self.drop(sid)
                raise
            for sid in ids:  # ours no more: taken again from the new checkpoint
                self.drop(sid)
            written.update(ids)
        elif finish is not None:
            await self.companion.finish_command(finish[0], True, finish[1])
        return written

    async def _checkpoint_held(self, change: CheckpointChange) -> bool:
        cp = change.checkpoint
        sid = cp.shard_id
        try:
            text, sub = kcl_checkpoint(cp)
        except UnwritablePosition:
            return True  # the position it started from: nothing processed yet
        lease = self.held.get(sid)
        if lease is None:
            return False  # lost meanwhile: its progress is not ours to write
        if text == SHARD_END:
            await create_children(self.store, lease)

        async def checkpoint(held: Lease) -> bool:
            return await self.table.checkpoint(held, text, sub)

        ok = await self.write_lease(sid, checkpoint)
        if ok is not True:
            if ok is False:
                await self.lose(sid)
            return False
        if text == SHARD_END:
            known = self.store.known_shards
            children = tuple(s.shard_id for s in known.values() if sid in s.parents)
            await self.table.set_children(lease.key, children)
            # A finished lease is no work: give it back so the balance counts only live shards.
            await self.give_back(sid)
        return True

    # -- the loops ------------------------------------------------------------------------------

    async def _take_loop(self) -> None:
        while True:
            try:
                await self.take_round()
            except LeaseTableError as exc:
                self.trouble(f"taking leases failed, will retry: {exc}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.take_interval):
                    await self.wake.wait()
            self.wake.clear()

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.renew_interval)
            try:
                await self.renew_round()
            except LeaseTableError as exc:  # access lost, say: each lease expires on its own
                self.trouble(f"renewing leases failed, will retry: {exc}")

    async def _watchdog(self) -> None:
        """Gives up, on time, every lease not written for the grace time, whatever the renewer
        is stuck on: the shard stops before any other worker may take the lease."""
        while True:
            await asyncio.sleep(self.renew_interval / 4)
            await self.watch()

    async def watch(self) -> None:
        """One look of the watchdog's."""
        now = self.clock()
        for sid in [s for s in self.held if now - self._written.get(s, now) > self._grace]:
            await self.lose(sid, "not renewed for 2/3 of the failover time")
        await self.overdue(now)

    async def overdue(self, now: float) -> None:
        """What else the watchdog gives up on time (the 3.x worker: a handoff)."""

    async def renew_round(self) -> None:
        """The consumer's checkpoints first (each renews its lease; bounded, as every write
        here), then every lease none wrote, at once (the KCL renews in parallel too)."""
        start = self.clock()
        if self._progress is not None:
            try:
                async with asyncio.timeout(self.renew_interval):
                    await self._progress.flush()
            except TimeoutError:
                self.trouble("checkpoint flush did not finish within the renewal interval")
            except Exception as exc:  # the store, or the processor's flush: renew regardless
                self.trouble(f"checkpoint flush failed, will retry: {exc}")
        due = [sid for sid in self.held if self._written.get(sid, 0.0) < start]
        await asyncio.gather(*(self._renew(sid) for sid in due))

    @property
    def _grace(self) -> float:
        """How long a held lease may go unwritten: others may take it a failover time after
        the scan that saw its last write landed (no sooner than it was sent), so it is given
        up one renewal before that."""
        return self.failover - self.renew_interval

    async def _renew(self, sid: str) -> None:
        try:
            async with asyncio.timeout(self.renew_interval):
                ok = await self.write_lease(sid, self.renewal(sid))
        except (LeaseTableError, TimeoutError) as exc:
            log.info("renewing %s failed: %s", sid, exc or "timed out")
            return  # tried again next round; the watchdog gives it up after the grace time
        if ok is False:
            await self.lose(sid)

    def renewal(self, sid: str) -> Callable[[Lease], Awaitable[bool]]:
        """The write that renews the lease on ``sid``."""
        return self.table.renew

    async def write_lease(self, sid: str, op: Callable[[Lease], Awaitable[bool]]) -> bool | None:
        """A conditional write to a held lease, under its lock: True, or False when the lease
        is someone else's now, or None when it is no longer held here (dropped meanwhile: not
        a loss). A failed condition reads the lease again: still ours (a write whose answer was
        lost, say), it is tried once more. The write counts from when it was sent."""
        lease = self.held.get(sid)
        if lease is None:
            return None
        async with self._locks.setdefault(sid, asyncio.Lock()):
            if self.held.get(sid) is not lease:
                return None
            sent = self.clock()
            if not await op(lease):
                fresh = await self.table.get(lease.key, stream_name(self.key or ""))
                if fresh is None or not self.still_held(sid, lease, fresh):
                    return False if self.held.get(sid) is lease else None
                lease.counter = fresh.counter
                sent = self.clock()
                if not await op(lease):
                    return False if self.held.get(sid) is lease else None
            if self.held.get(sid) is lease:
                self._written[sid] = max(self._written.get(sid, 0.0), sent)
            return True

    def still_held(self, sid: str, lease: Lease, fresh: Lease) -> bool:
        """After a write's condition failed: whether ``fresh`` (the lease read again) is still
        this worker's, so the write is tried once more (its answer was lost, say). Not if its
        checkpoint moved under us: an operator changed it, and the lease came back to this worker
        before a write of ours saw the change; the shard is read again from the new checkpoint."""
        return (
            fresh.owner == self.worker_id
            and not fresh.checkpoint_owner
            and (fresh.checkpoint, fresh.sub) == (lease.checkpoint, lease.sub)
        )

    async def give_back(self, sid: str) -> bool:
        """Release a held lease (its owner removed, conditionally); it is not ours after."""
        ok = await self.write_lease(sid, self.table.release)
        self.drop(sid)
        return ok is True

    def drop(self, sid: str) -> None:
        """No longer held, without a word (a fence of ours, a finished shard given back)."""
        if self.held.pop(sid, None) is not None:
            self.changed.set()
        self._written.pop(sid, None)
        self.wake.set()

    async def take_round(self) -> None:
        key = self.key
        if key is None:
            return
        leases = await self.store.leases(key)
        now = self.clock()  # after the scan: expiry's margin does not shrink by its length
        self.observer.update(leases, now)
        beat = self._rounds % 2 == 0
        self._rounds += 1
        if beat:
            await self.read_companion()
        self._observed(now)
        if not self._taking:
            return  # stopping: take nothing more

        malformed = self.store.malformed  # not finished, whatever they say: children wait

        def ready(lease: Lease) -> bool:
            seen = self.observer.seen
            return all(
                ((p := key_of(lease, parent)) not in seen or seen[p].lease.finished)
                and parent not in malformed
                for parent in lease.parents
            )

        alive = [hb.worker for hb in self.fleet.live()]
        held = [lease.key for lease in self.held.values()]
        choice = choose(
            self.observer, self.worker_id, self.failover, now, ready, others=alive, held=held,
            rng=self.rng,
        )  # fmt: skip
        if (choice.take or choice.steal) and not beat:
            await self.read_companion()  # a lease is read with the operator's marks now
        for lease, stolen in [(x, False) for x in choice.take] + [(x, True) for x in choice.steal]:
            if self.store.marks.get(lease.shard_id, Marks()).skipped:
                continue
            previous = lease.owner
            mine = replace(lease)
            if not await self.table.take(mine, self.worker_id):
                continue
            self._taken(mine, previous if stolen else None)
        if beat:
            await self.beat()

    def _taken(self, lease: Lease, previous: str | None) -> None:
        sid = lease.shard_id
        self.held[sid] = lease
        self._written[sid] = self.clock()
        self.counts["stolen" if previous else "taken"] += 1
        checkpoint = self.store.checkpoint(lease, self.store.marks.get(sid))
        if self._progress is not None:
            self._progress.adopt(sid, checkpoint)
        self._set_owner(sid, self.worker_id, lease.counter)
        how = f"stolen from worker {previous}" if previous else "taken"
        self.events.emit(
            "lease_taken",
            f"lease on {sid} {how}; reading {checkpoint.position.describe()}",
            shard_id=sid,
        )
        self.changed.set()

    def _set_owner(self, sid: str, owner: str | None, counter: int | None = None) -> None:
        lease = self.state.view(sid).lease or LeaseInfo()
        counter = lease.counter if counter is None else counter
        self.state.update(sid, lease=lease._replace(owner=owner, counter=counter, expired=False))

    def _observed(self, now: float) -> None:
        """Every lease as scanned and the workers' heartbeats, into the snapshot
        (console.engine.ownership.fleet_view)."""
        for sid, checkpoint in self.fleet.show(self.observer, self.held, now, self.store):
            if self._progress is not None:
                self._progress.observe(sid, checkpoint)
        self.changed.set()

    def trouble(self, message: str) -> None:
        log.warning("%s", message)
        self.events.emit("lease_error", message, level=Level.WARNING)

    async def lose(self, sid: str, why: str | None = None) -> None:
        """The lease is someone else's now (or nobody's, after an operator's change): the shard
        stops at once, without a checkpoint; the batch in hand is the new owner's to read."""
        lease = self.held.get(sid)
        if lease is None:
            return
        self.drop(sid)
        self.counts["lost"] += 1
        if self._progress is not None:
            self._progress.forget(sid)
        owner: str | None = None
        if why is None:
            with contextlib.suppress(LeaseTableError):
                now = await self.table.get(lease.key, stream_name(self.key or ""))
                owner = now.owner if now is not None else None
        else:
            self.trouble(f"giving up the lease on {sid}: {why}")
        self._set_owner(sid, owner)
        self.state.update(sid, lag_ms=None)
        if owner == self.worker_id:
            whom = "(it changed under this worker, an operator's change say: read again)"
        elif owner:
            whom = f"to worker {owner}"
        else:
            whom = "(an operator changed it, or it expired: nobody holds it now)"
        self.events.emit(
            "lease_lost",
            f"lease on {sid} lost {whom}; stopped without a checkpoint",
            level=Level.WARNING,
            shard_id=sid,
        )

    # -- heartbeats and marks -------------------------------------------------------------------

    async def beat(self) -> None:
        if self.key is not None and self.companion.exists:
            await self.companion.beat(self.key, self.fleet.heartbeat(self.held))

    async def read_companion(self) -> None:
        assert self.key is not None
        self.store.marks, self.fleet.heartbeats = await self.companion.marks_and_workers(self.key)
