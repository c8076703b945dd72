"""Which leases to take: the KCL 2.x lease taker's algorithm, pure.

No time is stored in a lease table. An observer notes, scan by scan, whether each lease's counter
moved; a lease whose counter has not moved for the failover time is expired (its owner is
presumed dead). A counter that moved between two scans moved at the earliest just after the
first of them: that is the time kept, so a dead owner's lease expires one failover time after
its last renewal, give or take one scan, and a live owner's (renewing several times a scan) never
does. A lease first seen with an owner counts as renewed at that moment; one first seen without
owner is available at once. Each round:

* count the live (unexpired, owned) leases per worker, this worker included;
* target = ceil(leases / workers);
* below target: take expired and unowned leases first (any of them, at random), else steal one
  lease from the most loaded worker, and only when that worker is above target (or exactly at it
  while this one needs more than one).

Finished leases (SHARD_END) are not work: they are neither counted nor taken. A lease that is not
ready (a child whose parents are not all finished) is not taken either.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from console.checkpoints.leases.items import Lease


@dataclass(slots=True)
class Seen:
    lease: Lease
    changed_at: float  # the earliest the counter can have last moved (0: never seen moving)
    moved: bool = False  # it moved since the scan before


class LeaseObserver:
    """Every lease of the stream as last scanned, and when each counter last moved."""

    def __init__(self) -> None:
        self.seen: dict[str, Seen] = {}
        self.scanned_at: float | None = None

    def update(self, leases: Iterable[Lease], now: float) -> None:
        fresh: dict[str, Seen] = {}
        before = self.scanned_at if self.scanned_at is not None else now
        for lease in leases:
            old = self.seen.get(lease.key)
            if old is None:
                fresh[lease.key] = Seen(lease, now if lease.owner is not None else 0.0)
            elif old.lease.counter == lease.counter and old.lease.owner == lease.owner:
                fresh[lease.key] = Seen(lease, old.changed_at)
            else:
                fresh[lease.key] = Seen(lease, before, moved=True)
        self.seen = fresh
        self.scanned_at = now

    def expired(self, seen: Seen, failover: float, now: float) -> bool:
        if seen.lease.owner is None:
            return True
        return not seen.moved and now - seen.changed_at > failover

    def live_owners(self, failover: float, now: float) -> dict[str, int]:
        """Workers with a lease renewed within the failover time, and how many each holds."""
        counts: dict[str, int] = {}
        for s in self.seen.values():
            if s.lease.finished or self.expired(s, failover, now):
                continue
            assert s.lease.owner is not None
            counts[s.lease.owner] = counts.get(s.lease.owner, 0) + 1
        return counts


@dataclass(frozen=True, slots=True)
class Choice:
    take: tuple[Lease, ...]  # expired or unowned
    steal: tuple[Lease, ...]  # from a live worker
    target: int
    workers: int


def choose(
    observer: LeaseObserver,
    me: str,
    failover: float,
    now: float,
    ready: Callable[[Lease], bool] = lambda _: True,
    max_steal: int = 1,
    rng: random.Random | None = None,
    others: Iterable[str] = (),
) -> Choice:
    """The leases this worker should take in this round. ``others``: workers known to be
    alive though they may hold no lease yet (from their heartbeats); one whose leases have
    expired is dead whatever its heartbeat says."""
    rng = rng or random.Random()
    work = [s for s in observer.seen.values() if not s.lease.finished]
    counts = observer.live_owners(failover, now)
    dead = {
        s.lease.owner
        for s in work
        if s.lease.owner is not None and observer.expired(s, failover, now)
    }
    for worker in others:
        if worker not in dead:
            counts.setdefault(worker, 0)
    counts.setdefault(me, 0)
    workers = len(counts)
    if not work:
        return Choice((), (), 0, workers)
    target = 1 if workers >= len(work) else math.ceil(len(work) / workers)
    need = target - counts[me]
    if need <= 0:
        return Choice((), (), target, workers)
    available = [
        s.lease for s in work if takeable(s, me, observer, failover, now) and ready(s.lease)
    ]
    if available:
        rng.shuffle(available)
        return Choice(tuple(available[:need]), (), target, workers)
    busiest, most = max(
        ((w, n) for w, n in counts.items() if w != me), key=lambda wn: wn[1], default=(None, 0)
    )
    if busiest is None:
        return Choice((), (), target, workers)
    over = most - target
    steal_n = min(need, over) if over > 0 else 0
    if need > 1 and over == 0:
        steal_n = 1
    steal_n = min(steal_n, max_steal)
    if steal_n <= 0:
        return Choice((), (), target, workers)
    theirs = [
        s.lease
        for s in work
        if s.lease.owner == busiest and not observer.expired(s, failover, now) and ready(s.lease)
    ]
    rng.shuffle(theirs)
    return Choice((), tuple(theirs[:steal_n]), target, workers)


def takeable(seen: Seen, me: str, observer: LeaseObserver, failover: float, now: float) -> bool:
    """Available to take: expired or unowned, and not already ours."""
    return seen.lease.owner != me and observer.expired(seen, failover, now)
