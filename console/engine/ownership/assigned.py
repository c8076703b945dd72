"""A fleet's worker under the KCL 3.x protocol: a leader assigns the leases, workers never take,
and a lease moves among live workers by graceful handoff, so a move re-reads nothing
(../shared/LEASES.md; the KCL 3.1.3's LeaseAssignmentManager, DynamoDBLeaseDiscoverer and
LeaseGracefulShutdownHandler, read in its source).

Beside the renewer and the watchdog every fleet worker runs (console.engine.ownership.leases),
four loops:

* the **reporter** writes this worker's row in ``<app>-WorkerMetricStats``, every failover/2
  while it holds no lease and every 30 s (the KCL's period) while it does (its renewals say it
  lives): a leader (ours or the KCL's) assigns leases only to workers whose row is fresh;
* the **coordinator**, every assignment interval, keeps or contends for the leader's lock in
  ``<app>-CoordinatorState`` (the DynamoDB lock client's item, so a KCL worker and ours never
  both lead); while it leads, it scans the lease table and writes what
  :class:`~console.engine.ownership.assignment.Assigner` plans: every unowned and expired lease
  assigned in one pass, then the load rebalanced by handoffs. Not leading, it scans only every
  other failover time, for the fleet's view;
* **discovery** finds the leases assigned to this worker through the table's
  ``LeaseOwnerToLeaseKeyIndex``, renews each (conditional on the counter it read: one moved
  meanwhile is not read here too) and reads it from its checkpoint. It looks every assignment
  interval while this worker holds no lease or one is being handed to it; else when the
  leader nudges it (``scNudge`` on a lease it holds, seen in its renewal's answer), or after an
  operator's change of one of its leases, and otherwise every minute (every 10 s under a KCL
  leader, which does not nudge);
* the renewer's failed condition tells of a **handoff**: ``leaseOwner`` is another worker and
  ``checkpointOwner`` this one. The shard's reader finishes the batch in hand, its checkpoint is
  written (conditional on ``checkpointOwner``), and :meth:`AssignedOwnership.hand_over` assigns
  the lease to the new owner (``checkpointOwner`` removed, counter + 1), which reads on from
  exactly there. One not completed within the handoff timeout is forced, as the KCL forces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace

from console.checkpoints.base import CheckpointChange
from console.checkpoints.leases import (
    KCL_ROW_INTERVAL,
    Coordinator,
    Lease,
    LeaseStore,
    LeaseTableError,
    Marks,
    MetricRow,
    is_operator_change,
    key_of,
    stream_name,
)
from console.engine.events import EventLog, Level
from console.engine.ownership.assignment import Assigner, Move, Why
from console.engine.ownership.base import Allowance, Duties, Progress, start_loops
from console.engine.ownership.leases import LeaseOwnership
from console.engine.state import EngineState
from console.settings import default

HANDOFF_TIMEOUT = 30.0  # the KCL's gracefulLeaseHandoffTimeoutMillis
LOOK_WHILE_HOLDING = 10.0  # the KCL's discovery period (leaseAssignmentIntervalMillis / 2)
LOOK_WHEN_NUDGED = 60.0  # under shard-console's leader, in case a nudge was lost
WRITES_AT_ONCE = 16  # a leader's assignments in flight at once


class AssignedOwnership(LeaseOwnership):
    assigned = True

    def __init__(
        self,
        store: LeaseStore,
        state: EngineState,
        events: EventLog,
        *,
        coordinator: Coordinator,
        worker_id: str | None = None,
        failover: float = default("failover_time"),
        take_over: bool = False,
        create_companion: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        handoff_timeout: float = HANDOFF_TIMEOUT,
        assignment_interval: float | None = None,
    ) -> None:
        super().__init__(
            store,
            state,
            events,
            worker_id=worker_id,
            failover=failover,
            take_over=take_over,
            create_companion=create_companion,
            clock=clock,
            wall=wall,
        )
        self.coordinator = coordinator
        # Every unowned or expired lease is read again within failover + about two intervals
        # (the leader's pass, then the new owner's discovery).
        self.assign_interval = assignment_interval or max(1.0, failover / 4)
        # The lock renewed every other pass, read by the others every fourth: a dead leader is
        # replaced within about two of its durations.
        self.lock_duration = max(failover, 4 * self.assign_interval)
        self._rows: list[MetricRow] = []  # the workers' metric rows, read every fourth pass
        self._passes = 0
        self._lock_read_at = -math.inf
        self._nudges: dict[str, float | None] = {}  # each held lease's nudge, as last seen
        self._incoming = False  # a lease is being handed to this worker: look every pass
        self._unfound: dict[str, int] = {}  # lease key -> its counter as this leader assigned it
        self._leader_nudges = False  # the leader is shard-console's: it nudges
        # shard-console's own table (operator marks, heartbeats): as often as a metric row.
        self.beat_interval = self.fleet.beat_interval = max(2 * failover, KCL_ROW_INTERVAL)
        self.handoff_timeout = handoff_timeout
        self.assigner = Assigner(failover, handoff_timeout, rng=self.rng)
        self.handing: dict[str, tuple[str, float]] = {}  # shard -> (to whom, since when)
        self.leader_version: str | None = None  # the lock's record version while we lead
        self._lock_seen: tuple[str, float] | None = None  # another's record version, first seen
        self._lock_beat_at = 0.0
        self._bytes: dict[str, tuple[int, float]] = {}  # shard -> (bytes read, when): KB/s
        self._found = asyncio.Event()  # the leader assigned this worker a lease: look now
        self.counts.update({"assigned": 0, "handed": 0})

    # -- joining and leaving --------------------------------------------------------------------

    async def join(self, key: str, progress: Progress) -> None:
        await super().join(key, progress)
        await self.coordinator.ensure()
        await self.coordinator.report(self.worker_id, self.report_interval, self.wall())

    async def start(self, duties: Duties) -> None:
        if self._tasks:
            return
        self._tasks = start_loops(
            [
                ("lease coordinator", self._loop(self.coordinate, self.wake, self._pass_every)),
                ("lease discovery", self._loop(self.discover, self._found, self._look_every)),
                ("lease renewer", self._renew_loop()),
                ("lease watchdog", self._watchdog()),
                ("worker metrics", self._loop(self.report, None, lambda: self.report_interval)),
            ],
            duties.fail,
        )

    async def leave(self) -> None:
        """This worker's metric row removed first (no leader gives it leases again), every lease
        given back (one being handed over: handed on), the leases assigned to it and not yet
        found given back too, then the leader's lock released: the next leader assigns them
        at its first pass."""
        await self.stop_loops()  # no metric row written after it is removed
        with contextlib.suppress(LeaseTableError):  # first: no leader gives it leases again
            await self.coordinator.retire(self.worker_id)
        try:
            await super().leave()
            with contextlib.suppress(LeaseTableError):
                await self._give_back_unfound()
        finally:
            with contextlib.suppress(LeaseTableError):
                if self.leader_version is not None:
                    await self.coordinator.release_leader(self.worker_id, self.leader_version)
                    self.leader_version = None

    async def _give_back_unfound(self) -> None:
        """Leases assigned to this worker that it had not found yet: given back too, so the
        next leader assigns them at once rather than once they expire; one still being
        handed to it is declined, so the worker handing it over keeps it and reads on (else
        it would complete the handoff to a worker gone, and the lease wait for its expiry).
        Read again once if the write loses a race (the handoff completed meanwhile, say)."""
        if self.key is None:
            return
        me = self.worker_id
        for key in await self.table.owned_keys(me):
            for _ in range(2):
                lease = await self.table.get(key, stream_name(self.key))
                if lease is None or lease.owner != me or lease.finished:
                    break
                holder = lease.checkpoint_owner
                if holder in (None, me):
                    if await self.table.release(lease):
                        break
                elif await self.table.decline(lease, me):
                    self.events.emit(
                        "lease_declined",
                        f"declined lease on {lease.shard_id} from worker {holder}: leaving; "
                        "it reads on",
                        shard_id=lease.shard_id,
                    )
                    break

    # -- what the consumer asks -----------------------------------------------------------------

    def allowance(self, shard_id: str) -> Allowance:
        if shard_id in self.handing and shard_id in self.held:
            return Allowance.HAND_OFF
        return super().allowance(shard_id)

    def claims(self) -> Collection[str]:
        return self.held.keys()

    async def hand_over(self, shard_id: str) -> None:
        """The reader stopped after its batch in hand: its checkpoint written, then the lease
        assigned to the worker it goes to, which reads on from exactly there."""
        entry = self.handing.get(shard_id)
        if entry is None or shard_id not in self.held:
            return
        to = entry[0]
        if self._progress is not None:
            try:
                await self._progress.flush()
            except Exception as exc:  # the checkpoint could not be written: forced later
                self.trouble(f"checkpoint before handing {shard_id} over failed: {exc}")
                return
        await self._complete(shard_id, to)

    async def _complete(self, sid: str, to: str) -> bool:
        """The handoff's last write; not made if it was declined meanwhile (its worker left):
        the lease is still this worker's then, and is found again at once, from the
        checkpoint just written."""
        me = self.worker_id

        async def complete(lease: Lease) -> bool:
            return lease.checkpoint_owner == me and await self.table.assign(lease, to)

        ok = await self.write_lease(sid, complete) is True
        self.handing.pop(sid, None)
        self.drop(sid)
        if self._progress is not None:
            self._progress.forget(sid)
        if not ok:
            self._found.set()
        if ok:
            self.counts["handed"] += 1
            self._set_owner(sid, to)
            self.events.emit(
                "lease_handed", f"lease on {sid} handed to worker {to} at its checkpoint",
                shard_id=sid,
            )  # fmt: skip
        return ok

    # -- renewals and handoffs ------------------------------------------------------------------

    def renewal(self, sid: str) -> Callable[[Lease], Awaitable[bool]]:
        """The renewal writes the shard's throughput (KB/s since the last one), as the KCL 3.x
        renewer does: what a leader balances by."""
        view = self.state.shards.get(sid)
        now = self.clock()
        kbps: float | None = None
        if view is not None:
            last = self._bytes.get(sid)
            if last is not None and now > last[1]:
                kbps = max(0.0, (view.bytes - last[0]) / 1024 / (now - last[1]))
            self._bytes[sid] = (view.bytes, now)

        async def renew(lease: Lease) -> bool:
            return await self.table.renew(lease, kbps)

        return renew

    def still_held(self, sid: str, lease: Lease, fresh: Lease) -> bool:
        """A handoff begun (``leaseOwner`` another worker, ``checkpointOwner`` this one): still
        ours until its checkpoint is written; the reader is told to finish. Anything else that
        moved the counter (an operator's change, which keeps the holder: a rewind, a pause; a
        write of ours whose answer was lost) and the shard stops and is read again from the
        lease as the table has it, with the operator's marks as they are now (discovery
        adopts it again at once). A handoff declined (its worker left before it completed:
        ``leaseOwner`` this one again, the checkpoint as held): ours still, read on."""
        me = self.worker_id
        if (
            sid in self.handing
            and fresh.owner == me
            and fresh.checkpoint_owner is None
            and (fresh.checkpoint, fresh.sub) == (lease.checkpoint, lease.sub)
        ):  # the handoff declined by the worker it went to, as it left: read on
            to, _ = self.handing.pop(sid)
            lease.owner, lease.checkpoint_owner = me, None
            self.events.emit(
                "lease_kept", f"lease on {sid} kept: worker {to} left before taking it; reading on",
                shard_id=sid,
            )  # fmt: skip
            self.changed.set()
            return True
        if fresh.checkpoint_owner == me and fresh.owner not in (None, me):
            lease.owner, lease.checkpoint_owner = fresh.owner, me
            if sid not in self.handing:
                self.handing[sid] = (fresh.owner or "", self.clock())
                self.events.emit(
                    "lease_handoff",
                    f"lease on {sid} goes to worker {fresh.owner}: finishing the batch in hand",
                    shard_id=sid,
                )
                self.changed.set()
            return True
        return False

    async def lose(self, sid: str, why: str | None = None) -> None:
        self.handing.pop(sid, None)  # found again later, it is read, not handed on
        await super().lose(sid, why)
        self._found.set()  # still ours in the table (an operator's change): adopted again now

    async def overdue(self, now: float) -> None:
        """A handoff not completed within its timeout (a processor slow on its batch) is
        forced, as the KCL forces it: the batch in hand is the next holder's to read."""
        for sid, (to, since) in list(self.handing.items()):
            if now - since >= self.handoff_timeout and sid in self.held:
                self.trouble(
                    f"handing {sid} to {to} did not complete within {self.handoff_timeout:g} s: "
                    "forced; what was read since its checkpoint will be read again"
                )
                lease = self.held[sid]
                self.handing.pop(sid, None)
                self.drop(sid)
                if self._progress is not None:
                    self._progress.forget(sid)
                forced = False
                with contextlib.suppress(LeaseTableError):
                    forced = await self.table.assign(replace(lease), to)
                if not forced:  # declined meanwhile, say: still ours, found again
                    self._found.set()

    async def give_back(self, sid: str) -> bool:
        """Released; or, a handoff under way (found by the release's failed condition too),
        completed: the worker it goes to reads on from the checkpoint just flushed."""
        if sid not in self.handing:
            ok = await self.write_lease(sid, self.table.release)
            if sid not in self.handing:
                self.drop(sid)
                return ok is True
        return await self._complete(sid, self.handing[sid][0])

    async def write(
        self, changes: Sequence[CheckpointChange], finish: tuple[int, str] | None
    ) -> set[str]:
        """As the 2.x worker's; an operator's change of a lease this worker holds keeps it this
        worker's (3.x), so it is found again at once and read from the new checkpoint."""
        written = await super().write(changes, finish)
        if any(is_operator_change(c) for c in changes):
            self._found.set()
        return written

    # -- the loops ------------------------------------------------------------------------------

    @property
    def report_interval(self) -> float:
        """A worker that holds leases writes its row as often as the KCL's (its renewals tell
        the leader it lives); one that holds none, every failover/2, so it is counted alive
        and given leases within the failover time."""
        return KCL_ROW_INTERVAL if self.held else self.failover / 2

    def _pass_every(self) -> float:
        return self.assign_interval

    def _look_every(self) -> float:
        """How often to look for assigned leases: every pass while holding none or while one
        is being handed over to this worker; else as seldom as the KCL's discovery, since
        shard-console's leader nudges (:meth:`_nudge`) a worker it assigned to, through a
        lease the worker renews anyway. A finished lease still held counts for nothing: the
        leader cannot nudge through it."""
        if self._incoming or all(lease.finished for lease in self.held.values()):
            return self.assign_interval
        if self._leader_nudges or self.leader_version is not None:
            return LOOK_WHEN_NUDGED
        return max(LOOK_WHILE_HOLDING, self.assign_interval / 2)  # a KCL leader's

    async def _loop(
        self,
        work: Callable[[], Awaitable[None]],
        wake: asyncio.Event | None,
        period: Callable[[], float],
    ) -> None:
        while True:
            try:
                await work()
            except LeaseTableError as exc:
                self.trouble(f"{work.__name__} failed, will retry: {exc}")
            if wake is None:
                await asyncio.sleep(period())
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period()):
                    await wake.wait()
            wake.clear()

    async def report(self) -> None:
        if self._taking:
            await self.coordinator.report(self.worker_id, self.report_interval, self.wall())

    async def discover(self) -> None:
        """The leases the leader assigned this worker, each read from its checkpoint."""
        if not self._taking or self.key is None:
            return
        stream = self.key
        held = {lease.key for lease in self.held.values()}
        marks_read = False
        incoming = False
        for key in await self.table.owned_keys(self.worker_id):
            if key in held:
                continue
            if not marks_read:  # a lease is read with the operator's marks as they are now
                await self.read_companion()
                marks_read = True
            lease = await self.table.get(key, stream_name(stream))
            if lease is not None and lease.owner == self.worker_id and lease.checkpoint_owner:
                incoming = True  # its holder still checkpoints: look again next pass
                continue
            if (
                lease is None
                or lease.owner != self.worker_id
                or lease.finished
                or lease.shard_id in self.held
                or self.store.marks.get(lease.shard_id, Marks()).skipped
            ):
                continue
            # Renewed before it is read: conditional on the counter just read, so a lease the
            # leader expired and moved meanwhile (this worker slow to look) is not read here too,
            # and its grace counts from a write that landed.
            if not await self.table.renew(lease):
                continue
            self.store.remember([lease])
            self._adopt(lease)
        self._incoming = incoming

    def _adopt(self, lease: Lease) -> None:
        sid = lease.shard_id
        self.held[sid] = lease
        self._nudges[sid] = lease.nudge
        self._written[sid] = self.clock()
        self.counts["taken"] += 1
        checkpoint = self.store.checkpoint(lease, self.store.marks.get(sid))
        if self._progress is not None:
            self._progress.adopt(sid, checkpoint)
        self._set_owner(sid, self.worker_id, lease.counter)
        self.events.emit(
            "lease_taken",
            f"lease on {sid} assigned; reading {checkpoint.position.describe()}",
            shard_id=sid,
        )
        self.changed.set()

    async def coordinate(self) -> None:
        """The leader's lock kept or contended for; while leading, one assignment pass."""
        key = self.key
        if key is None:
            return
        await self._lead()
        interval = self.assign_interval
        scan = self._rounds % max(1, round(2 * self.failover / interval)) == 0
        beat = self._rounds % max(1, round(self.beat_interval / interval)) == 0
        self._rounds += 1
        if self.leader_version is None and not (scan or beat):
            return
        leases = await self.store.leases(key)
        now = self.clock()
        self.observer.update(leases, now)
        if beat:
            await self.read_companion()
        self._observed(now)
        if self.leader_version is not None and self._taking:
            await self._assign(now)
        if beat:
            await self.beat()

    async def _nudge(self, workers: Collection[str], moved: Collection[str]) -> None:
        """Each worker just assigned a lease is told through one it holds and renews (its
        next renewal's answer carries the nudge); one that holds none looks every pass."""
        now, wall = self.clock(), self.wall()
        for worker in sorted(workers):
            lease = next(
                (
                    s.lease
                    for s in self.observer.seen.values()
                    if s.lease.owner == worker
                    and s.lease.key not in moved
                    and s.lease.checkpoint_owner is None
                    and not s.lease.finished
                    and not self.observer.expired(s, self.failover, now)
                ),
                None,
            )
            if lease is not None:
                with contextlib.suppress(LeaseTableError):
                    await self.table.nudge(lease, wall)

    async def renew_round(self) -> None:
        await super().renew_round()
        seen, now = self._nudges, {sid: lease.nudge for sid, lease in self.held.items()}
        if any(sid in seen and seen[sid] != nudge for sid, nudge in now.items()):
            self._found.set()  # the leader assigned this worker more: look now
        self._nudges = now

    async def _lead(self) -> None:
        coordinator, me, now = self.coordinator, self.worker_id, self.clock()
        duration_ms = int(self.lock_duration * 1000)
        if self.leader_version is not None:
            if not self._taking:
                await coordinator.release_leader(me, self.leader_version)
                self.leader_version = None
            elif now - self._lock_beat_at >= 2 * self.assign_interval * 0.9:
                new = await coordinator.heartbeat_leader(me, self.leader_version, duration_ms)
                if new is None:
                    self.leader_version = None
                    self.trouble("the leader's lock was taken by another worker")
                else:
                    self.leader_version, self._lock_beat_at = new, now
            return
        if not self._taking or now - self._lock_read_at < 4 * self.assign_interval * 0.9:
            return
        self._lock_read_at = now
        lock = await coordinator.leader()
        self._leader_nudges = lock is not None and lock.ours and not lock.released
        if lock is None:
            version = await coordinator.acquire_leader(me, duration_ms, None)
        elif lock.released or lock.owner == me:  # ours from a run before: take it back
            version = await coordinator.acquire_leader(me, duration_ms, lock)
        else:
            seen = self._lock_seen
            if seen is None or seen[0] != lock.version:
                self._lock_seen = (lock.version, now)
                return
            if now - seen[1] < lock.duration_ms / 1000:
                return
            version = await coordinator.acquire_leader(me, duration_ms, lock)
        if version is not None:
            self.leader_version, self._lock_beat_at, self._lock_seen = version, now, None
            self.assigner = Assigner(self.failover, self.handoff_timeout, rng=self.rng)
            self._unfound.clear()
            self._rows = []  # read afresh at the first pass
            self.events.emit("leader", f"worker {me} leads the assignment of leases")

    async def _assign(self, now: float) -> None:
        malformed = self.store.malformed
        seen = self.observer.seen

        def ready(lease: Lease) -> bool:
            if self.store.marks.get(lease.shard_id, Marks()).skipped:
                return False
            return all(
                ((p := key_of(lease, parent)) not in seen or seen[p].lease.finished)
                and parent not in malformed
                for parent in lease.parents
            )

        waiting = any(
            s.lease.owner is None and not s.lease.finished and ready(s.lease) for s in seen.values()
        )
        fresh = self._passes % 4 == 0 or not self._rows or waiting
        if fresh:  # who is there, for them
            self._rows = await self.coordinator.metric_rows()
        self._passes += 1
        wall = self.wall()
        receivers = {r.worker for r in self._rows if r.fresh(wall)}
        dead = {r.worker for r in self._rows if r.ours and r.worker not in receivers}

        unfound = self._unfound

        def settled(lease: Lease) -> bool:
            return unfound.get(lease.key) != lease.counter  # renewed since: its owner has it

        moves = self.assigner.plan(self.observer, receivers, now, ready, dead=dead, settled=settled)
        if moves and not fresh:  # moved only to a worker still there (not one leaving now)
            self._rows = await self.coordinator.metric_rows()
            here = {r.worker for r in self._rows if r.fresh(self.wall())}
            moves = [m for m in moves if m.to in here]
        if not moves:
            return
        gate = asyncio.Semaphore(WRITES_AT_ONCE)

        async def write(move: Move) -> bool:
            async with gate:
                lease = replace(move.lease)  # the scan's copy stays as scanned
                if move.graceful:
                    return await self.table.hand_off(lease, move.to)
                ok = await self.table.assign(lease, move.to)
                if ok:
                    unfound[lease.key] = lease.counter
                return ok

        done = await asyncio.gather(*(write(m) for m in moves), return_exceptions=True)
        made = [m for m, ok in zip(moves, done, strict=True) if ok is True]
        self.counts["assigned"] += len(made)
        if any(m.to == self.worker_id for m in made):
            self._found.set()
        await self._nudge({m.to for m in made} - {self.worker_id}, {m.lease.key for m in made})
        by = {why: sum(1 for m in made if m.why is why) for why in Why}
        parts = [f"{n} {why.value}" for why, n in by.items() if n]
        if parts:
            level = Level.INFO
            self.events.emit("leases_assigned", f"leader assigned leases: {', '.join(parts)}",
                             level=level)  # fmt: skip
        failed = [d for d in done if isinstance(d, BaseException)]
        if failed:
            self.trouble(f"{len(failed)} assignment(s) failed, will retry: {failed[0]}")
