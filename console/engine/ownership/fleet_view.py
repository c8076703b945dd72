"""What a fleet's worker shows of the fleet: the owner of every lease and whether it expired
(the owner column, ``!`` for a lease nobody renews), another worker's lag and rate from its
heartbeat, the workers (``w``), and the heartbeat this worker writes for the others and for
attached consoles."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping

from console.checkpoints.leases import Heartbeat, Lease, LeaseStore
from console.engine.events import EventLog, ExpiryTeller, Level
from console.engine.ownership.taker import LeaseObserver, lease_info
from console.engine.state import EngineState, WorkerView
from console.model import Checkpoint


class FleetView:
    def __init__(
        self,
        state: EngineState,
        events: EventLog,
        worker_id: str,
        beat_interval: float,
        wall_offset: float,
        failover: float,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """``wall_offset``: the scans' clock to wall time, taken once, so a lease's "counter
        moved at" does not jitter from scan to scan. ``wall``: the wall clock (heartbeats)."""
        self.wall = wall
        self.state = state
        self.worker_id = worker_id
        self.beat_interval = beat_interval
        self.wall_offset = wall_offset
        self.failover = failover
        self.heartbeats: list[Heartbeat] = []  # as last read
        self.events = events
        self._expiries = ExpiryTeller(events)
        self._malformed: set[str] = set()
        self._host = socket.gethostname()
        self._started_at = wall()

    def live(self) -> list[Heartbeat]:
        """Heartbeats recent enough to stand for a live worker (a crashed one leaves its last)."""
        wall = self.wall()
        return [hb for hb in self.heartbeats if wall - hb.at < 2.5 * self.beat_interval]

    def heartbeat_of(self, worker: str) -> Heartbeat | None:
        return next((hb for hb in self.heartbeats if hb.worker == worker), None)

    def show(
        self,
        observer: LeaseObserver,
        held: Mapping[str, Lease],
        now: float,
        store: LeaseStore,
    ) -> Iterator[tuple[str, Checkpoint]]:
        """Every lease as scanned, into the snapshot. Yields the checkpoint of each shard
        another worker holds (what its children's readiness goes by)."""
        state = self.state
        wall = self.wall()
        live = self.live()
        reported = {sid: (hb.worker, figures) for hb in live for sid, figures in hb.shards.items()}
        for seen in list(observer.seen.values()):
            lease = seen.lease
            sid = lease.shard_id
            expired = observer.expired(seen, self.failover, now)
            if sid not in held and lease.owner != self.worker_id:
                yield sid, store.checkpoint(lease, store.marks.get(sid))
                holder = reported.get(sid)
                lag, rate = None, 0.0
                if holder is not None and holder[0] == lease.owner:
                    lag = holder[1].get("lag_ms")
                    rate = holder[1].get("rate") or 0.0
                state.update(sid, lag_ms=None if lag is None else int(lag), rate=rate)
            self._expiries.see(sid, lease.checkpoint_owner or lease.owner, expired)
            state.update(sid, lease=lease_info(seen, expired, self.wall_offset))
        self._tell_malformed(store)
        workers = tuple(
            WorkerView(
                hb.worker, hb.host, hb.pid, len(hb.leases), hb.records, hb.rate, wall - hb.at,
                hb.shards,
            )
            for hb in live
        )  # fmt: skip
        if workers:
            state.set_watch(workers=workers)

    def _tell_malformed(self, store: LeaseStore) -> None:
        """A lease item that is not a valid lease: said once (again once fixed and broken
        anew); it is never taken, read or written (its row says why: LeaseOwnership.problem)."""
        bad = store.malformed
        for sid in sorted(set(bad) - self._malformed):
            self.events.emit("lease_malformed", str(bad[sid]), level=Level.ERROR, shard_id=sid)
        self._malformed = set(bad)

    def heartbeat(self, held: Mapping[str, Lease]) -> Heartbeat:
        """This worker's, from the snapshot: its leases, records, rate, each shard's lag."""
        state = self.state
        shards = {
            sid: {"lag_ms": view.lag_ms, "rate": view.rate}
            for sid in held
            if (view := state.shards.get(sid)) is not None
        }
        return Heartbeat(
            worker=self.worker_id,
            host=self._host,
            pid=os.getpid(),
            started_at=self._started_at,
            at=self.wall(),
            leases=tuple(sorted(held)),
            records=state.records_total,
            rate=state.rate,
            shards=shards,
        )
