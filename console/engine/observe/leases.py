"""The console over a consumer it did not start: a KCL application or a shard-console fleet,
seen through its lease table.

:class:`AttachedLeases` is an :class:`~console.engine.api.Engine` that consumes nothing. It
scans the lease table every ``scan_interval`` (one paged scan: the KCL's own leases, as the KCL
wrote them), lists the stream's shards every ``sync_interval``, reads shard-console's table
beside it when there is one (operator marks, heartbeats, history), and reads a little after each
checkpoint for lag (console.engine.observe.lag_probe). From that it keeps the same versioned
snapshot a running consumer keeps, an event for every lease change it sees
(console.engine.observe.lease_changes), and the findings of console.engine.observe.diagnosis.

Operator changes go through the change service over the lease table's transport
(console.engine.changes.fence: fencing writes, refused if a lease moved since it was shown); the
workers screen's rows come from console.engine.observe.workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from console.checkpoints.leases import (
    ASSIGNED_VERSIONS,
    KCL_ROW_INTERVAL,
    Coordinator,
    Heartbeat,
    LeaderLock,
    Lease,
    LeaseStore,
    LeaseTableError,
    MalformedLease,
    Marks,
    Migration,
    checkpoint_of,
    read_leases,
    shard_of,
    stream_name,
)
from console.engine.changes.fence import FenceTransport
from console.engine.changes.plan import Action, ControlError, ControlRequest, ControlResult
from console.engine.changes.service import ChangeService, Preview
from console.engine.events import Level
from console.engine.lineage import Lineage
from console.engine.observe.attached import Attached, stream_record_of
from console.engine.observe.diagnosis import (
    LeaderFacts,
    LeaseFacts,
    ShardFacts,
    diagnose,
    leader_findings,
    malformed_findings,
    renewal_findings,
)
from console.engine.observe.lag_probe import LagProbe, Probe, start_of
from console.engine.observe.lease_changes import LeaseChanges
from console.engine.observe.workers import (
    WORKER_METRIC_STATS,
    MetricRow,
    metric_rows,
    read_metric_table,
    workers_of,
)
from console.engine.ownership.taker import LeaseObserver, Seen, lease_info
from console.engine.state import EngineState, LeaseInfo
from console.errors import UsageError
from console.model import (
    Position,
    Shard,
    ShardStatus,
)
from console.settings import default
from console.sources.base import SourceError, StreamSource, describe_at_start

# What a scan sets of each shard's row, in the order :meth:`AttachedLeases._build` gives them.
_ROW = (
    "parents",
    "closed",
    "status",
    "last_error",
    "lease",
    "checkpoint",
    "position",
    "checkpoint_at",
    "lag_ms",
    "recent",
    "rate",
)


class AttachedLeases(Attached):
    """An engine over a lease table: what the consumer does, seen from outside."""

    def __init__(
        self,
        store: LeaseStore,
        source: StreamSource,
        *,
        read_only: bool = False,
        scan_interval: float = default("scan_interval"),
        sync_interval: float = 30.0,
        probe_interval: float = default("lag_interval"),
        failover: float = default("failover_time"),
        clock: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            store,
            EngineState(
                source.stream, source.kind, f"{source.location} · lease table {store.table.name}"
            ),
            read_only,
        )
        self.leases = store
        self.source = source
        self.scan_interval = scan_interval
        self.sync_interval = sync_interval
        self.failover = failover
        self.clock = clock
        self.mono = mono
        # The scans' clock to wall time, once: a lease's "counter moved at" must not jitter.
        self._wall_offset = clock() - mono()
        self.probe = LagProbe(source, interval=probe_interval, clock=clock, mono=mono)
        self.observer = LeaseObserver()
        self.kcl = True  # a KCL application, until shard-console's table says it is a fleet
        self.scans = 0
        self._listed: dict[str, Shard] | None = None
        self._marks: dict[str, Marks] = {}
        self._beats: list[Heartbeat] = []
        # KCL 3.x worker metric rows: in the lease table (3.5) and in a table of their own.
        self._table_metrics: dict[str, MetricRow] = {}
        self._own_table_metrics: dict[str, MetricRow] = {}
        self._first_seen: dict[str, float] = {}  # lease key -> when a scan first saw it
        self._synced_at = 0.0
        self._refreshing = asyncio.Lock()
        self._checkpoint_seen: dict[str, tuple[str, int, float]] = {}  # text, sub, wall time
        self._changed = LeaseChanges(self.events, self.observer, self.failover, self.mono)
        self._changes: ChangeService | None = None  # once the stream is known
        self._malformed: dict[str, MalformedLease] = {}  # shard -> why, as last scanned
        self._lock = asyncio.Lock()
        # KCL 3.x: the leader's lock (and since when its version is unchanged), the migration
        # item's version, as last read.
        self._leader: LeaderLock | None = None
        self._leader_since = 0.0
        self._client_version: str | None = None

    @property
    def browse_source(self) -> StreamSource | None:
        return self.source

    async def start(self) -> None:
        """Describe the stream, read the table once (the first screen), then keep watching."""
        if self._started:
            return
        self._started = True
        info = await describe_at_start(self.source)
        self.state.info = info
        self.record, registered = await stream_record_of(self.store, self.source, info)
        self.kcl = not registered
        transport = FenceTransport(self.leases, self.record, self.source, expired=self._expired)
        self._changes = ChangeService(
            transport, events=self.events, read_only=self._read_only, refuse=self._refusal
        )
        await self._sync_shards()
        await self.refresh()
        self._check_stream()
        kind = "a KCL application" if self.kcl else "a shard-console fleet"
        self.state.set_watch(attached_to=kind, lease_table=self.leases.table.name)
        self.events.emit(
            "attached",
            f"attached to {kind} on lease table {self.leases.table.name}: "
            f"{len(self.observer.seen)} leases, {len(self._listed or {})} shards",
        )
        self._loop(self._scan_loop(), "scan")
        self._loop(self._sync_loop(), "shard sync")
        self._loop(self.probe.run(), "lag reads")
        self._loop(self._metric_loop(), "worker metrics")

    def _check_stream(self) -> None:
        """A table whose leases name none of the stream's shards belongs to another stream."""
        leased = {s.lease.shard_id for s in self.observer.seen.values()}
        if leased and self._listed and not leased & set(self._listed):
            sample = ", ".join(sorted(leased)[:2])
            raise UsageError(
                f"lease table {self.leases.table.name} holds leases for shards ({sample}) that "
                f"stream {self.source.stream} does not have: is it this stream's application?"
            )

    # -- watching ------------------------------------------------------------------------------

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scan_interval)
            try:
                await self.refresh()
            except (LeaseTableError, SourceError) as exc:
                self.events.emit(
                    "scan_error", f"reading the lease table failed: {exc}", level=Level.ERROR
                )

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            try:
                await self._sync_shards()
            except SourceError as exc:
                self.events.emit(
                    "sync_error", f"listing the shards failed: {exc}", level=Level.ERROR
                )

    async def _sync_shards(self) -> None:
        self._synced_at = self.mono()
        shards = await self.source.list_shards()
        self.leases.know_shards(shards)  # a change may touch a shard that has no lease yet
        old = self._listed
        self._listed = {s.shard_id: s for s in shards}
        if old is not None:
            for sid in sorted(set(self._listed) - set(old)):
                shard = self._listed[sid]
                parents = f" (child of {', '.join(shard.parents)})" if shard.parents else ""
                self.events.emit("shard_appeared", f"shard {sid} appeared{parents}", shard_id=sid)

    async def refresh(self) -> None:
        """One scan of the table (and of shard-console's, when there is one): the snapshot.
        One at a time: an older scan must never land after a newer one."""
        async with self._refreshing:
            await self._refresh()

    async def _refresh(self) -> None:
        assert self.record is not None
        scan_started = self.mono()
        items = await self.leases.table.scan()
        name = stream_name(self.record.stream)
        leases, malformed = read_leases(items, name)
        self._malformed = {bad.shard_id: bad for bad in malformed}
        self._table_metrics = metric_rows(
            i for i in items if i.get("entityType", {}).get("S") == WORKER_METRIC_STATS
        )
        now = self.mono()
        self._first_seen = {lease.key: self._first_seen.get(lease.key, now) for lease in leases}
        listed = self._listed or {}
        # A lease for a shard the last listing did not have, first seen since that listing: a
        # new shard, or one gone? A listing after it says (at most one a scan, and only then).
        unsure = any(
            lease.shard_id not in listed and self._first_seen[lease.key] >= self._synced_at
            for lease in leases
        )
        if unsure and now - self._synced_at > self.scan_interval:
            await self._sync_shards()
            now = self.mono()
        before = {s.lease.shard_id: s.lease for s in self.observer.seen.values()}
        self.observer.update(leases, now)
        if self.leases.companion.exists:
            self._marks, beats = await self.leases.companion.marks_and_workers(self.record.stream)
            # A worker killed leaves its last heartbeat: its figures are not today's.
            wall = self.clock()
            self._beats = [b for b in beats if wall - b.at < 2 * self.failover]
        self.scans += 1
        self._changed.scanned(before, self.scans > 1, scan_started)
        self._build(now)

    async def _metric_loop(self) -> None:
        coordinator = Coordinator(self.leases.table.client, self.leases.table.name)
        while True:
            self._own_table_metrics = await read_metric_table(
                self.leases.table.client, self.leases.table.name
            )
            with contextlib.suppress(LeaseTableError):
                self._coordination(await coordinator.leader(), await coordinator.migration())
            await asyncio.sleep(min(self.sync_interval, self.failover))

    def _coordination(self, lock: LeaderLock | None, migration: Migration) -> None:
        """The KCL 3.x's leader and migration state, told as they change."""
        if migration.version != self._client_version and migration.version is not None:
            self.events.emit(
                "client_version",
                f"the application runs {migration.version}"
                + (f" (set by {migration.by})" if migration.by else ""),
            )
        self._client_version = migration.version
        old = self._leader
        if lock is not None and (old is None or old.version != lock.version):
            self._leader_since = self.mono()
            if old is None or old.owner != lock.owner:
                self.events.emit("leader", f"worker {lock.owner} leads the assignment of leases")
        self._leader = lock

    # -- the snapshot ---------------------------------------------------------------------------

    def _shards(self) -> dict[str, Shard]:
        shards = dict(self._listed or {})
        for seen in self.observer.seen.values():
            if seen.lease.shard_id not in shards:
                shards[seen.lease.shard_id] = shard_of(seen.lease)
        return shards

    def _build(self, now: float) -> None:
        state = self.state
        wall = self.clock()
        shards = self._shards()
        leases = {s.lease.shard_id: s for s in self.observer.seen.values()}
        lineage = Lineage.build(shards.values())
        if lineage != state.lineage:
            state.set_lineage(lineage)
        targets: dict[str, Position] = {}
        write = state.writer(*_ROW)
        for sid, shard in shards.items():
            view = state.view(sid)
            seen = leases.get(sid)
            status, error = self._status(sid, shard, seen, leases, shards)
            info: LeaseInfo | None = None
            checkpoint: Position | None = None
            checkpoint_at = view.checkpoint_at
            if seen is not None:
                lease = seen.lease
                checkpoint = checkpoint_of(lease).position
                info = lease_info(
                    seen, self.observer.expired(seen, self.failover, now), self._wall_offset
                )
                checkpoint_at = self._checkpoint_time(lease, wall)
                if not lease.finished and start_of(checkpoint) is not None:
                    targets[sid] = checkpoint
            lag_ms, recent = view.lag_ms, view.recent
            probe = self.probe.results.get(sid)
            if probe is not None and seen is not None and probe.after == checkpoint:
                lag_ms = probe.lag_ms(wall)
                recent = (probe.next_record,) if probe.next_record is not None else ()
                if probe.error is not None:
                    error = f"lag read: {probe.error}"
            elif seen is not None and seen.lease.finished:
                lag_ms, recent = None, ()
            else:
                recent = ()  # read before the checkpoint moved: processed since
            rate = 0.0  # a KCL worker reports none
            reported = self._reported(sid, seen)
            if reported is not None:  # a shard-console worker's own figures
                lag, rate = reported
                if lag is not None:
                    lag_ms = int(lag)
            write(
                view,
                (
                    shard.parents,
                    shard.is_closed,
                    status,
                    error,
                    info,
                    checkpoint,
                    checkpoint,
                    checkpoint_at,
                    lag_ms,
                    recent,
                    rate,
                ),
            )
        for sid in [s for s in state.shards if s not in shards]:
            state.remove(sid)
        self.probe.set_targets(targets)
        state.set_watch(
            workers=workers_of(
                self.observer.seen.values(),
                self._beats,
                {**self._own_table_metrics, **self._table_metrics},
                now,
                self.clock(),
            )
        )
        # A fleet's workers say how many records they process; a KCL application does not.
        state.rate = sum(b.rate for b in self._beats)
        state.records_total = sum(b.records for b in self._beats)
        state.set_diagnoses(tuple(self._diagnose(shards, leases, now)))

    def _status(
        self,
        sid: str,
        shard: Shard,
        seen: Seen | None,
        leases: Mapping[str, Seen],
        shards: Mapping[str, Shard],
    ) -> tuple[ShardStatus, str | None]:
        mark = self._marks.get(sid, Marks())
        bad = self._malformed.get(sid)
        if bad is not None:
            return ShardStatus.READY, f"malformed lease: {bad.reason}"
        if seen is None:
            if shard.is_closed:
                return ShardStatus.DONE, None  # never leased, or finished and cleaned up
            parent_live = any(
                (p in leases and not leases[p].lease.finished)
                or (p not in leases and p in shards and not shards[p].is_closed)
                for p in shard.parents
            )
            if parent_live:  # its lease comes when the parent ends (the KCL's way)
                return ShardStatus.WAITING, None
            return ShardStatus.READY, "no lease: no worker reads it"
        lease = seen.lease
        if lease.finished:
            return (ShardStatus.SKIPPED if mark.skipped else ShardStatus.DONE), None
        if mark.paused:
            return ShardStatus.PAUSED, None
        if lease.owner is not None:
            return ShardStatus.LEASED, None
        waiting = any(p in leases and not leases[p].lease.finished for p in lease.parents)
        return (ShardStatus.WAITING if waiting else ShardStatus.READY), None

    # -- operator changes -----------------------------------------------------------------------

    def _refusal(self, request: ControlRequest) -> str | None:
        if self.kcl and request.action in (Action.PAUSE, Action.RESUME):
            return (
                f"{request.action.value} is refused for a KCL application: a KCL worker does not "
                "know pauses and would read the shard on; rewind, skip or stop its workers instead"
            )
        return None

    def _expired(self, lease: Lease) -> bool:
        """Whether its holder stopped renewing it, as this console has watched."""
        seen = self.observer.seen.get(lease.key)
        return (
            seen is not None
            and seen.lease.owner == lease.owner
            and self.observer.expired(seen, self.failover, self.mono())
        )

    async def preview(self, request: ControlRequest) -> Preview:
        assert self._changes is not None
        return await self._changes.preview(request)

    async def control(self, request: ControlRequest) -> ControlResult:
        assert self._changes is not None and self.record is not None
        async with self._lock:
            try:
                result = await self._changes.control(request)
            except ControlError as exc:  # nothing was written
                return ControlResult(0, False, str(exc))
        if not result.ok:
            return result
        # A scan that starts from now sees these leases lose their owner: say it was this change.
        written = self.mono()
        holders = {s.lease.shard_id: s.lease.owner for s in self.observer.seen.values()}
        for entry in await self.leases.history_for_command(self.record.stream, result.command_id):
            if holders.get(entry.shard_id):
                self._changed.fencing(entry.shard_id, result.command_id, written)
        self.events.emit(
            "change_applied", f"change #{result.command_id}: {result.message}", level=Level.WARNING
        )
        with contextlib.suppress(LeaseTableError, SourceError):
            await self.refresh()
        return result

    def _checkpoint_time(self, lease: Lease, wall: float) -> float | None:
        """When the checkpoint was written, as far as we can tell: the KCL stores no time, so
        the scan that first saw it move (None while it has not moved since we attached)."""
        old = self._checkpoint_seen.get(lease.shard_id)
        key = (lease.checkpoint, lease.sub)
        if old is None:
            self._checkpoint_seen[lease.shard_id] = (*key, 0.0)
            return None
        if (old[0], old[1]) != key:
            self._checkpoint_seen[lease.shard_id] = (*key, wall)
            return wall
        return old[2] or None

    def _reported(self, sid: str, seen: Seen | None) -> tuple[float | None, float] | None:
        """(lag ms, records/s) from the heartbeat of the shard-console worker that holds the
        lease (None: a KCL worker's, or nobody's)."""
        if seen is None or seen.lease.owner is None:
            return None
        for beat in self._beats:
            if beat.worker == seen.lease.owner and sid in beat.shards:
                figures = beat.shards[sid]
                return figures.get("lag_ms"), float(figures.get("rate") or 0.0)
        return None

    def _diagnose(
        self, shards: Mapping[str, Shard], leases: Mapping[str, Seen], now: float
    ) -> list[Any]:
        facts = {
            sid: LeaseFacts(
                sid,
                s.lease.owner,
                s.lease.finished,
                s.lease.parents,
                now - (s.changed_at or self._first_seen.get(s.lease.key, now)),
                s.lease.checkpoint_owner,
                self._changed.handoff_for(sid, now),
            )
            for sid, s in leases.items()
        }
        listed = None
        if self._listed is not None:
            # A lease first seen after the last listing may be for a shard it did not have yet:
            # no "lease without shard" until a listing has had the chance to show it.
            listed = {
                s.lease.shard_id: ShardFacts(s.lease.shard_id, s.lease.parents, False)
                for s in leases.values()
                if self._first_seen.get(s.lease.key, 0.0) >= self._synced_at
            }
            for sid, shard in self._listed.items():
                probe = self.probe.results.get(sid)
                listed[sid] = ShardFacts(
                    sid,
                    shard.parents,
                    shard.is_closed,
                    probe.caught_up if probe is not None else None,
                    probe.lost if probe is not None else None,
                    self._at_risk(probe),
                )
        # A taker runs every 2 x failover; one scan more before nobody taking it is a finding.
        take_within = 2 * self.failover + self.scan_interval
        found = diagnose(facts, listed, failover=self.failover, take_within=take_within)
        lock = self._leader
        leader = (
            LeaderFacts(
                lock.owner, lock.duration_ms / 1000, now - self._leader_since, lock.released
            )
            if lock is not None
            else None
        )
        wall = self.clock()
        fresh = {
            worker
            for worker, (lut, _) in self._own_table_metrics.items()
            if lut is not None and wall - lut <= 2 * KCL_ROW_INTERVAL + 1
        }
        expired = {
            sid: s.lease.checkpoint_owner or s.lease.owner or ""
            for sid, s in leases.items()
            if s.lease.owner is not None
            and not s.lease.finished
            and self.observer.expired(s, self.failover, now)
        }
        return [
            *malformed_findings(self._malformed.values()),
            *found,
            *leader_findings(leader, self._client_version in ASSIGNED_VERSIONS),
            *renewal_findings(fresh, expired),
        ]

    def _at_risk(self, probe: Probe | None) -> str | None:
        if probe is None or probe.lost is not None:
            return None
        retention = self.record.retention_hours if self.record else None
        record = probe.next_record
        if retention and record is not None and record.approximate_arrival is not None:
            left = record.approximate_arrival + retention * 3600 - self.clock()
            if left < 600:
                return (
                    "the oldest record not processed yet leaves the stream's retention in "
                    f"{max(0, int(left))} s: process or skip it now"
                )
        return None
