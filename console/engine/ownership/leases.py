"""This worker's leases: joining the fleet, taking, renewing, losing and giving them back.

Three loops run while the store is watched. The renewer, every failover/3, first has the engine
flush its checkpoints (a checkpoint renews its lease: a lease costs one write per interval, busy
or idle), then renews every lease no checkpoint wrote; each is bounded. A watchdog gives up, on
time, any lease not written for 2/3 of the failover time (counted from when its last write was
sent), before anyone else may take it. The taker,
every failover time (the KCL's runs every 2 x failover; once per failover time lets a dead
worker's shards move within 2 x failover), scans the table and takes this worker's share
(console.checkpoints.leases.taker); every other round it also reads shard-console's own items
(operator marks, heartbeats) and writes this worker's heartbeat.

Every write to a held lease goes through one lock per lease, so a renewal and a checkpoint never
race on one counter; a write whose condition fails reads the lease again, and only a lease
another holds (or nobody, after an operator's change) is lost: the listener hears it at once and
the shard stops without a checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from console.checkpoints.base import LeaseView, OwnershipListener, WorkerView
from console.checkpoints.leases.companion import Companion, Heartbeat, Marks
from console.checkpoints.leases.items import Lease
from console.checkpoints.leases.table import KCL3_VERSIONS, LeaseTable, LeaseTableError
from console.checkpoints.leases.taker import LeaseObserver, choose
from console.model import Checkpoint

log = logging.getLogger("shard_console.leases")

KCL_FAILOVER = 10.0  # the KCL's default: how long a stranger's lease is watched, at least


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


def key_of(lease: Lease, shard_id: str) -> str:
    """The lease key of a shard of the same stream, in the same format as ``lease``'s."""
    if lease.key == lease.shard_id:
        return shard_id
    return lease.key[: len(lease.key) - len(lease.shard_id)] + shard_id


class Coordinator:
    def __init__(
        self,
        table: LeaseTable,
        companion: Companion,
        *,
        worker_id: str,
        failover: float,
        take_over: bool,
        create_companion: bool,
        checkpoint_of: Callable[[Lease, Marks | None], Checkpoint],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.companion = companion
        self.worker_id = worker_id
        self.failover = failover
        self.renew_interval = failover / 3
        self.take_interval = failover
        self.beat_interval = 2 * failover  # every other round
        self._take_over = take_over
        self._create_companion = create_companion
        self._checkpoint_of = checkpoint_of
        self._clock = clock
        self._started_at = time.time()
        self._host = socket.gethostname()
        self.stream: str | None = None
        self.observer = LeaseObserver()
        self.held: dict[str, Lease] = {}
        self.marks: dict[str, Marks] = {}
        self.heartbeats: list[Heartbeat] = []
        self.listener: OwnershipListener | None = None
        self._written: dict[str, float] = {}  # clock of each held lease's last write
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.wake = asyncio.Event()
        self._rounds = 0
        # Leases taken, stolen, lost and given back by this worker (for the metrics to come).
        self.counts = {"taken": 0, "stolen": 0, "lost": 0, "released": 0}

    # -- joining ------------------------------------------------------------------------------

    async def join(self, stream: str) -> None:
        """Refuses (LeaseConflictError) a KCL 3.x application, live workers that are not
        shard-console's, and a worker id another live process uses, unless ``take_over``;
        only then is shard-console's table created and this worker's heartbeat written."""
        items = await self.table.scan()
        version = await self.table.client_version(items)
        if version in KCL3_VERSIONS and not self._take_over:
            raise LeaseConflictError(
                f"lease table '{self.table.name}' belongs to a KCL 3.x application "
                f"(client version {version}): its leader assigns the leases; stop it and pass "
                "--take-over to move it to shard-console"
            )
        self.stream = stream
        await self.companion.ensure(create=False, missing_ok=True)
        await self.read_companion(stream)
        await self._refuse_live_others(stream)
        await self.companion.ensure(create=self._create_companion)
        await self.beat()

    async def _refuse_live_others(self, stream: str) -> None:
        """Owners with no heartbeat of ours are another kind of worker (the KCL); owners named
        as this worker are another process with our id. Both are watched (strangers for the
        KCL's failover time at least): one whose counter moves is live, and refused."""
        ours = {hb.worker for hb in self.heartbeats} - {self.worker_id}
        me = self.heartbeat_of(self.worker_id)
        watch_me = me is not None and time.time() - me.at < 2.5 * self.beat_interval
        start = self._clock()
        self.observer.update(await self._leases(stream), start)
        first = {k: s.lease.counter for k, s in self.observer.seen.items()}
        window = self.failover if self._take_over else max(self.failover, KCL_FAILOVER)
        while True:
            suspects = {
                s.lease.owner
                for s in self.observer.seen.values()
                if s.lease.owner is not None
                and not s.lease.finished
                and (
                    (s.lease.owner == self.worker_id and watch_me)
                    or (s.lease.owner not in ours and s.lease.owner != self.worker_id)
                )
            }
            if self._take_over:
                suspects.discard(None)
                suspects = {o for o in suspects if o == self.worker_id}
            moved = {
                str(s.lease.owner)
                for k, s in self.observer.seen.items()
                if s.lease.owner in suspects and s.lease.counter != first.get(k)
            }
            if self.worker_id in moved:
                assert me is not None
                raise LeaseConflictError(
                    f"worker id '{self.worker_id}' is live in lease table '{self.table.name}' "
                    f"(pid {me.pid} on {me.host}): pick another --worker-id"
                )
            if moved:
                raise LeaseConflictError(
                    f"live workers that are not shard-console's hold leases in "
                    f"'{self.table.name}': {', '.join(sorted(moved))}; stop that application "
                    "first, or pass --take-over to run beside it"
                )
            if not suspects or self._clock() - start > window:
                break  # they held leases but renewed none: dead, their leases expire
            await asyncio.sleep(1.0)
            self.observer.update(await self._leases(stream), self._clock())
        if (
            watch_me
            and me is not None
            and not any(s.lease.owner == self.worker_id for s in self.observer.seen.values())
        ):
            # It holds no lease to watch: its heartbeat is all there is to go by.
            age = time.time() - me.at
            if age < self.beat_interval * 1.5:
                raise LeaseConflictError(
                    f"worker id '{self.worker_id}' is live in lease table '{self.table.name}' "
                    f"(pid {me.pid} on {me.host}, heartbeat {age:.0f} s ago): pick another "
                    f"--worker-id (a stopped worker's id is free {self.beat_interval * 1.5:.0f} "
                    "s after its last heartbeat)"
                )

    def watch(self, stream: str, listener: OwnershipListener) -> None:
        self.stream = stream
        self.listener = listener
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._take_loop(), name="lease taker"),
                asyncio.create_task(self._renew_loop(), name="lease renewer"),
                asyncio.create_task(self._watchdog(), name="lease watchdog"),
            ]
            for task in self._tasks:
                task.add_done_callback(self._loop_ended)

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """A loop that dies (a bug) is said loudly: its leases would expire in silence."""
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("the %s died", task.get_name(), exc_info=exc)
            self.trouble(f"internal error: the {task.get_name()} died: {exc!r}")

    async def release(self) -> None:
        """Stop renewing and taking, and give every lease back (conditionally): the others
        take them at once, from the checkpoints just flushed."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        given = []
        for sid in list(self.held):
            with contextlib.suppress(LeaseTableError):
                if await self.give_back(sid):
                    given.append(sid)
        self.counts["released"] += len(given)
        if self.listener is not None and given:
            self.listener.released(given)
        if self.stream is not None:
            await self.companion.gone(self.stream, self.worker_id)

    # -- the loops ----------------------------------------------------------------------------

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
        """Gives up, on time, every lease not written for the grace time, whatever the
        renewer is stuck on: the shard stops before any other worker may take the lease."""
        while True:
            await asyncio.sleep(self.renew_interval / 4)
            now = self._clock()
            for sid in [s for s in self.held if now - self._written.get(s, now) > self._grace]:
                await self.lose(sid, "not renewed for 2/3 of the failover time")

    async def renew_round(self) -> None:
        """The engine's checkpoints first (each renews its lease; bounded, as every write
        here), then every lease none wrote, at once (the KCL renews in parallel too)."""
        start = self._clock()
        if self.listener is not None:
            try:
                async with asyncio.timeout(self.renew_interval):
                    await self.listener.flush()
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
                ok = await self.write(sid, self.table.renew)
        except (LeaseTableError, TimeoutError) as exc:
            log.info("renewing %s failed: %s", sid, exc or "timed out")
            return  # tried again next round; the watchdog gives it up after the grace time
        if ok is False:
            await self.lose(sid)

    async def write(self, sid: str, op: Callable[[Lease], Awaitable[bool]]) -> bool | None:
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
            sent = self._clock()
            if not await op(lease):
                fresh = await self.table.get(lease.key, stream_name(self.stream or ""))
                if fresh is None or fresh.owner != self.worker_id or fresh.checkpoint_owner:
                    return False if self.held.get(sid) is lease else None
                lease.counter = fresh.counter
                sent = self._clock()
                if not await op(lease):
                    return False if self.held.get(sid) is lease else None
            if self.held.get(sid) is lease:
                self._written[sid] = max(self._written.get(sid, 0.0), sent)
            return True

    async def give_back(self, sid: str) -> bool:
        """Release a held lease (its owner removed, conditionally); it is not ours after."""
        ok = await self.write(sid, self.table.release)
        self.drop(sid)
        return ok is True

    def drop(self, sid: str) -> None:
        """No longer held, without a word (a fence of ours, a finished shard given back)."""
        self.held.pop(sid, None)
        self._written.pop(sid, None)
        self.wake.set()

    async def take_round(self) -> None:
        stream = self.stream
        if stream is None:
            return
        leases = await self._leases(stream)
        now = self._clock()  # after the scan: expiry's margin does not shrink by its length
        self.observer.update(leases, now)
        beat = self._rounds % 2 == 0
        self._rounds += 1
        if beat:
            await self.read_companion(stream)
        self._tell_observed(now)
        if self.listener is not None and not self.listener.taking():
            return  # stopping: take nothing more

        def ready(lease: Lease) -> bool:
            seen = self.observer.seen
            return all(
                (p := key_of(lease, parent)) not in seen or seen[p].lease.finished
                for parent in lease.parents
            )

        alive = [hb.worker for hb in self.live_heartbeats()]
        held = [lease.key for lease in self.held.values()]
        choice = choose(
            self.observer, self.worker_id, self.failover, now, ready, others=alive, held=held
        )
        if (choice.take or choice.steal) and not beat:
            await self.read_companion(stream)  # a lease is read with the operator's marks now
        for lease, stolen in [(x, False) for x in choice.take] + [(x, True) for x in choice.steal]:
            if self.marks.get(lease.shard_id, Marks()).skipped:
                continue
            previous = lease.owner
            mine = replace(lease)
            if not await self.table.take(mine, self.worker_id):
                continue
            self.held[mine.shard_id] = mine
            self._written[mine.shard_id] = self._clock()
            self.counts["stolen" if stolen else "taken"] += 1
            if self.listener is not None:
                cp = self._checkpoint_of(mine, self.marks.get(mine.shard_id))
                self.listener.taken(mine.shard_id, cp, previous if stolen else None)
        if beat:
            await self.beat()

    def _tell_observed(self, now: float) -> None:
        if self.listener is None:
            return
        views = {}
        for s in self.observer.seen.values():
            lease = s.lease
            views[lease.shard_id] = LeaseView(
                shard_id=lease.shard_id,
                owner=lease.owner,
                counter=lease.counter,
                counter_age=now - s.changed_at if s.changed_at else None,
                expired=self.observer.expired(s, self.failover, now),
                checkpoint=self._checkpoint_of(lease, self.marks.get(lease.shard_id)),
            )
        wall = time.time()
        workers = [
            WorkerView(
                hb.worker, hb.host, hb.pid, len(hb.leases), hb.records, hb.rate, wall - hb.at,
                hb.shards,
            )
            for hb in self.live_heartbeats()
        ]  # fmt: skip
        self.listener.observed(views, workers)

    def trouble(self, message: str) -> None:
        log.warning("%s", message)
        if self.listener is not None:
            self.listener.trouble(message)

    async def lose(self, sid: str, why: str | None = None) -> None:
        lease = self.held.get(sid)
        if lease is None:
            return
        self.drop(sid)
        self.counts["lost"] += 1
        owner: str | None = None
        if why is None:
            with contextlib.suppress(LeaseTableError):
                now = await self.table.get(lease.key, stream_name(self.stream or ""))
                owner = now.owner if now is not None else None
        else:
            self.trouble(f"giving up the lease on {sid}: {why}")
        if self.listener is not None:
            self.listener.lost(sid, owner)

    # -- heartbeats and marks -----------------------------------------------------------------

    async def beat(self) -> None:
        if self.stream is None or not self.companion.exists:
            return
        report = self.listener.report() if self.listener is not None else {}
        hb = Heartbeat(
            worker=self.worker_id,
            host=self._host,
            pid=os.getpid(),
            started_at=self._started_at,
            at=time.time(),
            leases=tuple(sorted(self.held)),
            records=int(report.get("records", 0)),
            rate=float(report.get("rate", 0.0)),
            shards=report.get("shards", {}),
        )
        await self.companion.beat(self.stream, hb)

    async def read_companion(self, stream: str) -> None:
        self.marks, self.heartbeats = await self.companion.marks_and_workers(stream)

    def heartbeat_of(self, worker: str) -> Heartbeat | None:
        return next((hb for hb in self.heartbeats if hb.worker == worker), None)

    def live_heartbeats(self) -> list[Heartbeat]:
        """Heartbeats recent enough to stand for a live worker (a crashed one leaves its last)."""
        wall = time.time()
        return [hb for hb in self.heartbeats if wall - hb.at < 2.5 * self.beat_interval]

    async def _leases(self, stream: str) -> list[Lease]:
        return await self.table.leases(stream_name(stream))
