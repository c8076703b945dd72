"""Which leases to take: the KCL 2.x lease taker's algorithm, pure.

No time is stored in a lease table. An observer notes, scan by scan, when it first saw each
lease's counter at its current value; a lease whose counter it has seen unchanged for the failover
time is expired (its owner is presumed dead). A live owner renews several times per failover time,
so any scan at least that long after the last one that saw a change sees a new counter: the rule
holds however irregular the scans are (a round woken early, a slow table). A dead owner's lease
expires at the first scan one failover time after the scan that saw its last renewal. A lease
first seen with an owner counts as renewed at that moment; one first seen without owner is
available at once. Each round:

* count the live (unexpired, owned) leases per worker, this worker included;
* target = ceil(leases / workers);
* below target: take expired and unowned leases first (any of them, at random), else steal one
  lease from the most loaded worker, and only when that worker is above target (or exactly at it
  while this one needs more than one);
* at or above target: expired and unowned leases all the same when this worker holds no more
  than any other worker that renews leases, so a lease (a new child, a dead worker's) never
  waits for the counts to change: a dead worker's heartbeat may still count it for a while.

Finished leases (SHARD_END) are not work: they are neither counted nor taken. A lease that is not
ready (a child whose parents are not all finished) is not taken either.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from console.checkpoints.leases import Lease
from console.engine.state import LeaseInfo


@dataclass(slots=True)
class Seen:
    lease: Lease
    changed_at: float  # when a scan first saw the counter at its current value (0: never)


class LeaseObserver:
    """Every lease of the stream as last scanned, and when each counter last moved."""

    def __init__(self) -> None:
        self.seen: dict[str, Seen] = {}

    def update(self, leases: Iterable[Lease], now: float) -> None:
        fresh: dict[str, Seen] = {}
        for lease in leases:
            old = self.seen.get(lease.key)
            if old is None:
                fresh[lease.key] = Seen(lease, now if lease.owner is not None else 0.0)
            elif old.lease.counter == lease.counter and old.lease.owner == lease.owner:
                fresh[lease.key] = Seen(lease, old.changed_at)
            else:
                fresh[lease.key] = Seen(lease, now)
        self.seen = fresh

    def expired(self, seen: Seen, failover: float, now: float) -> bool:
        if seen.lease.owner is None:
            return True
        return now - seen.changed_at >= failover

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
    held: Iterable[str] = (),
) -> Choice:
    """The leases this worker should take in this round. ``others``: workers known to be
    alive though they may hold no lease yet (from their heartbeats); one whose leases have
    expired is dead whatever its heartbeat says. ``held``: the keys of the leases this worker
    holds now; a lease the table says is ours but we do not hold (a write whose answer was lost,
    a restart with the same worker id) is taken back at once."""
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
    mine = set(held)
    # What this worker holds is what it reads: a lease the table says is ours but we do not
    # hold counts as nobody's until we take it back.
    counts[me] = sum(1 for s in work if s.lease.key in mine)
    workers = len(counts)
    if not work:
        return Choice((), (), 0, workers)
    target = math.ceil(len(work) / workers)  # 1 when there are more workers than leases
    need = target - counts[me]
    available = [
        s.lease
        for s in work
        if s.lease.key not in mine
        and (s.lease.owner == me or observer.expired(s, failover, now))
        and ready(s.lease)
    ]
    if need <= 0:
        # At target, but a lease nobody holds must not wait for the counts to change (a dead
        # worker's heartbeat still counted, say): the least loaded of the workers that renew
        # leases takes it (conditionally: if several do, one wins). A live worker holding none
        # is below target and takes it anyway.
        renewing = observer.live_owners(failover, now)
        renewing[me] = counts[me]
        if available and counts[me] <= min(renewing.values()):
            rng.shuffle(available)
            return Choice(tuple(available), (), target, workers)
        return Choice((), (), target, workers)
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


def lease_info(seen: Seen, expired: bool, wall_offset: float) -> LeaseInfo:
    """A shard's lease as its row shows it, from the scan that saw it: a fleet's worker and an
    attached console alike. ``wall_offset`` turns the scans' clock into wall time."""
    lease = seen.lease
    moved = seen.changed_at + wall_offset if seen.changed_at else None
    return LeaseInfo(lease.owner, lease.counter, moved, expired and lease.owner is not None)
