"""The console over a consumer it did not start: a KCL application or a shard-console fleet,
seen through its lease table.

:class:`AttachedLeases` is an :class:`~console.engine.api.Engine` that consumes nothing. It
scans the lease table every ``scan_interval`` (one paged scan: the KCL's own leases, as the KCL
wrote them), lists the stream's shards every ``sync_interval``, reads shard-console's table
beside it when there is one (operator marks, heartbeats, history), and reads a little after each
checkpoint for lag (console.engine.lag_probe). From that it keeps the same versioned snapshot a
running consumer keeps, an event for every lease change it sees, and the findings of
console.engine.diagnosis.

Operator changes are the fencing writes of console.checkpoints.leases.store, applied from here
as the control CLI applies them: times resolved to records first, previewed with who holds each
lease now and how much will be read again, refused if a lease moved since it was shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any

from console.checkpoints.base import CheckpointStore, StreamRecord, WorkerView
from console.checkpoints.leases.companion import Heartbeat, Marks
from console.checkpoints.leases.coordinator import stream_name
from console.checkpoints.leases.items import Lease, checkpoint_of, lease_of, shard_of
from console.checkpoints.leases.store import LeaseStore
from console.checkpoints.leases.table import LeaseTableError
from console.checkpoints.leases.taker import LeaseObserver, Seen
from console.engine.control import (
    Action,
    ControlError,
    ControlRequest,
    ControlResult,
    Plan,
    explain,
)
from console.engine.diagnosis import LeaseFacts, ShardFacts, diagnose
from console.engine.events import EventLog, ExpiryTeller, Level
from console.engine.lag_probe import DEFAULT_INTERVAL, LagProbe, Probe, start_of
from console.engine.lineage import Lineage
from console.engine.offline import apply_offline, checkpoint_position, plan_offline
from console.engine.resolve import count_between
from console.engine.state import EngineState, ShardView
from console.errors import UsageError
from console.model import (
    HistoryEntry,
    Position,
    PositionKind,
    Shard,
    ShardStatus,
    seq_int,
)
from console.sources.base import SourceError, StreamInfo, StreamSource

WORKER_METRIC_STATS = "WORKER_METRIC_STATS"
COUNT_CAP = 10_000  # records counted for a preview before it says "more than"


async def stream_record_of(
    store: CheckpointStore, source: StreamSource, info: StreamInfo
) -> tuple[StreamRecord, bool]:
    """The stream as the store registered it (a shard-console fleet's), or as described now
    (a KCL application's: it registers nothing); and whether it was registered."""
    for record in await store.streams():
        if source.stream in (record.stream, record.name) or info.arn == record.stream:
            return record, True
    record = StreamRecord(
        info.arn or source.stream,
        source.stream,
        source.kind,
        Position.trim_horizon(),
        time.time(),
        info.retention_hours,
    )
    return record, False


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


class Attached:
    """What every attached engine shares: the snapshot, the events, the loops, history."""

    confirm_by_name = True  # a change to someone else's consumer: type the stream's name

    def __init__(self, store: CheckpointStore, state: EngineState, read_only: bool) -> None:
        self.store: CheckpointStore = store
        self.state = state
        self.events = EventLog()
        self.record: StreamRecord | None = None
        self._read_only = read_only
        self._failure: str | None = None
        self._stopped = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    @property
    def lineage(self) -> Lineage:
        return self.state.lineage

    @property
    def failure(self) -> str | None:
        return self._failure

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def stopped(self) -> asyncio.Event:
        return self._stopped

    async def start(self) -> None:
        raise NotImplementedError

    def _loop(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)

        def done(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                self._failure = f"{name} failed: {t.exception()}"
                self._stopped.set()

        task.add_done_callback(done)
        self._tasks.append(task)
        return task

    def request_stop(self, reason: str | None = None) -> None:
        self._stopped.set()

    async def run(self, duration: float | None = None) -> None:
        try:
            await self.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), duration)
        finally:
            await self.stop()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self._stopped.set()

    async def history(self, shard_id: str | None = None, limit: int = 50) -> list[HistoryEntry]:
        assert self.record is not None
        return await self.store.history(self.record.stream, shard_id, limit)

    async def checkpoint_position(self, shard_id: str, entry_id: int) -> Position:
        assert self.record is not None
        return await checkpoint_position(self.store, self.record.stream, shard_id, entry_id)


class AttachedLeases(Attached):
    """An engine over a lease table: what the consumer does, seen from outside."""

    def __init__(
        self,
        store: LeaseStore,
        source: StreamSource,
        *,
        read_only: bool = False,
        scan_interval: float = 2.0,
        sync_interval: float = 30.0,
        probe_interval: float = DEFAULT_INTERVAL,
        failover: float = 10.0,
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
        # shard -> (the change that took its lease away, when it was written)
        self._fenced: dict[str, tuple[int, float]] = {}
        self._refreshing = asyncio.Lock()
        self._checkpoint_seen: dict[str, tuple[str, int, float]] = {}  # text, sub, wall time
        self._handoff_seen: dict[str, float] = {}
        self._expiries = ExpiryTeller(self.events)
        self._previewed: dict[tuple[str, str | None], dict[str, str | None]] = {}
        self._counts: dict[tuple[str, Position, str], str] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Describe the stream, read the table once (the first screen), then keep watching."""
        if self._started:
            return
        self._started = True
        info = await self.source.describe()
        self.state.info = info
        self.record, registered = await stream_record_of(self.store, self.source, info)
        self.kcl = not registered
        await self._sync_shards()
        await self.refresh()
        self._check_stream()
        kind = self.state.attached_to = "a KCL application" if self.kcl else "a shard-console fleet"
        self.state.lease_table = self.leases.table.name
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
        leases = [lease for item in items if (lease := lease_of(item, name))]
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
        self._tell_changes(before, self.scans > 1, scan_started)
        self._build(now)

    async def _metric_loop(self) -> None:
        while True:
            await self.read_metric_table()
            await asyncio.sleep(self.sync_interval)

    async def read_metric_table(self) -> None:
        """KCL 3.x's ``<app>-WorkerMetricStats`` table, when there is one (KCL 3.5 keeps the
        same rows in the lease table: read with each scan)."""
        client = self.leases.table.client
        kwargs: dict[str, Any] = {"TableName": f"{self.leases.table.name}-WorkerMetricStats"}
        items: list[dict[str, Any]] = []
        try:
            while True:
                resp = await client.scan(**kwargs)
                items.extend(resp.get("Items", ()))
                if not resp.get("LastEvaluatedKey"):
                    break
                kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        except Exception:  # absent (KCL 2.x) or not readable: nothing to show
            items = []
        self._own_table_metrics = metric_rows(items)

    def _tell_changes(self, before: Mapping[str, Lease], tell: bool, scan_started: float) -> None:
        """An event for every lease change between two scans."""
        after = {s.lease.shard_id: s for s in self.observer.seen.values()}
        now = self.mono()
        if tell:
            for sid in sorted(set(before) - set(after)):
                self.events.emit("lease_deleted", f"lease {sid} was deleted", shard_id=sid)
        for sid, seen in sorted(after.items()):
            lease = seen.lease
            old = before.get(sid)
            expired = self.observer.expired(seen, self.failover, now) and not lease.finished
            self._expiries.see(sid, lease.owner, expired)
            if lease.checkpoint_owner is not None:
                self._handoff_seen.setdefault(sid, now)
            else:
                self._handoff_seen.pop(sid, None)
            if not tell:
                continue
            if old is None:
                parents = f" (child of {', '.join(lease.parents)})" if lease.parents else ""
                self.events.emit("lease_created", f"lease {sid} was created{parents}", shard_id=sid)
                continue
            if old.owner != lease.owner:
                self._tell_owner(sid, old.owner, lease.owner)
            if old.checkpoint != lease.checkpoint and lease.finished:
                self.events.emit("shard_done", f"{sid} reached SHARD_END", shard_id=sid)
            elif _moved_back(old, lease):
                self.events.emit(
                    "checkpoint_back",
                    f"checkpoint of {sid} moved back: {old.checkpoint} -> {lease.checkpoint}",
                    level=Level.WARNING,
                    shard_id=sid,
                )
            if lease.checkpoint_owner is not None and old.checkpoint_owner is None:
                self.events.emit(
                    "lease_handoff",
                    f"{lease.owner} hands {sid} over to {lease.checkpoint_owner}",
                    shard_id=sid,
                )
        # A scan that started after a change's write has told what it fenced (or never will).
        self._fenced = {
            sid: (change, at) for sid, (change, at) in self._fenced.items() if at > scan_started
        }

    def _tell_owner(self, sid: str, old: str | None, new: str | None) -> None:
        fenced = self._fenced.pop(sid, None)
        change = fenced[0] if fenced is not None else None
        if new is None and change is not None:
            self.events.emit(
                "lease_fenced",
                f"change #{change} took lease {sid} from {old}: it drops the shard at its next "
                "renewal, and the next taker reads from the new checkpoint",
                shard_id=sid,
            )
        elif new is None:
            self.events.emit("lease_released", f"{old} gave up lease {sid}", shard_id=sid)
        elif old is None:
            self.events.emit("lease_taken", f"{new} took lease {sid}", shard_id=sid)
        else:
            self.events.emit("lease_stolen", f"{new} took lease {sid} from {old}", shard_id=sid)

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
        for sid, shard in shards.items():
            view = state.view(sid)
            seen = leases.get(sid)
            before = _shown(view)
            view.parents = shard.parents
            view.closed = shard.is_closed
            status, error = self._status(sid, shard, seen, leases, shards)
            view.status = status
            view.last_error = error
            if seen is None:
                view.owner, view.lease_counter, view.lease_expired = None, None, False
                view.checkpoint = view.position = None
            else:
                lease = seen.lease
                cp = checkpoint_of(lease)
                view.owner = lease.owner
                view.lease_counter = lease.counter
                view.counter_age = now - seen.changed_at if seen.changed_at else None
                view.lease_expired = lease.owner is not None and self.observer.expired(
                    seen, self.failover, now
                )
                view.checkpoint = view.position = cp.position
                view.checkpoint_at = self._checkpoint_time(lease, wall)
                if not lease.finished and start_of(cp.position) is not None:
                    targets[sid] = cp.position
            probe = self.probe.results.get(sid)
            if probe is not None and seen is not None and probe.after == view.checkpoint:
                view.lag_ms = probe.lag_ms(wall)
                view.recent = (probe.next_record,) if probe.next_record is not None else ()
                if probe.error is not None:
                    view.last_error = f"lag read: {probe.error}"
            elif seen is not None and seen.lease.finished:
                view.lag_ms, view.recent = None, ()
            else:
                view.recent = ()  # read before the checkpoint moved: processed since
            reported = self._reported(sid, seen)
            view.rate = 0.0  # a KCL worker reports none
            if reported is not None:  # a shard-console worker's own figures
                lag, view.rate = reported
                if lag is not None:
                    view.lag_ms = int(lag)
            if before != _shown(view):
                state.touch(view)
        for sid in [s for s in state.shards if s not in shards]:
            del state.shards[sid]
        self.probe.set_targets(targets)
        state.workers = self._workers(now)
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

    def _workers(self, now: float) -> tuple[WorkerView, ...]:
        """Every worker that holds a lease or sent a heartbeat, with its metric row if any."""
        held: dict[str, int] = {}
        renewed: dict[str, float] = {}
        for seen in self.observer.seen.values():
            owner = seen.lease.owner
            if owner is None:
                continue
            held[owner] = held.get(owner, 0) + (0 if seen.lease.finished else 1)
            if seen.changed_at:
                renewed[owner] = min(renewed.get(owner, 1e18), now - seen.changed_at)
        beats = {b.worker: b for b in self._beats}
        wall = self.clock()
        views = []
        metric = {**self._own_table_metrics, **self._table_metrics}
        for worker in sorted(set(held) | set(beats) | set(metric)):
            beat = beats.get(worker)
            updated, metrics = metric.get(worker, (None, {}))
            last = renewed.get(worker)
            if beat is not None:
                last = wall - beat.at
            elif last is None and updated is not None:
                last = wall - updated
            views.append(
                WorkerView(
                    worker=worker,
                    host=beat.host if beat else "-",
                    pid=beat.pid if beat else 0,
                    leases=held.get(worker, 0),
                    records=beat.records if beat else 0,
                    rate=beat.rate if beat else 0.0,
                    heartbeat_age=last if last is not None else float("nan"),
                    shards=beat.shards if beat else {},
                    metrics=metrics,
                )
            )
        return tuple(views)

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
                (now - self._handoff_seen[sid]) if sid in self._handoff_seen else None,
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
        return diagnose(facts, listed, failover=self.failover, take_within=take_within)

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

    # -- operator changes -------------------------------------------------------------------

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
            plan = await plan_offline(self.store, self.record, request)
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
        changed = await self.store.history_for_command(self.record.stream, result.command_id)
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


MetricRow = tuple[float | None, dict[str, float]]  # last update (epoch s), latest values


def _shown(view: ShardView) -> tuple[object, ...]:
    """What a row shows that the rebuild may change: compared to stamp only changed rows."""
    return (
        view.status,
        view.owner,
        view.lease_counter,
        view.lease_expired,
        view.checkpoint,
        view.lag_ms,
        view.rate,
        view.last_error,
        view.closed,
    )


def metric_rows(items: Iterable[Mapping[str, Any]]) -> dict[str, MetricRow]:
    """Each worker's metric row (``wid``, or the lease key in the single-table format)."""
    rows = {}
    for item in items:
        wid = item.get("wid", item.get("leaseKey", {})).get("S")
        if wid:
            rows[wid] = metric_row(item)
    return rows


def metric_row(item: Mapping[str, Any]) -> MetricRow:
    """(last update, each metric's latest value) of a KCL 3.x WorkerMetricStats item: ``lut``
    epoch seconds, ``sts`` a map of metric name to its recent values."""
    lut = item.get("lut", {}).get("N")
    metrics: dict[str, float] = {}
    for name, values in item.get("sts", {}).get("M", {}).items():
        listed = values.get("L", ())
        if listed:
            with contextlib.suppress(KeyError, ValueError):
                metrics[name] = float(listed[-1]["N"])
    return (float(lut) if lut is not None else None), metrics


def _moved_back(old: Lease, new: Lease) -> bool:
    """A checkpoint that went back (an operator's rewind, or a worker's bug)."""
    if not (old.checkpoint.isdigit() and new.checkpoint.isdigit()):
        return new.checkpoint == "TRIM_HORIZON" and old.checkpoint.isdigit()
    return seq_int(new.checkpoint) < seq_int(old.checkpoint)
