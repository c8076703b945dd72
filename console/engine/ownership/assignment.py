"""What a KCL 3.x leader assigns in one pass: pure, no I/O, no clock but the one given.

The leader (console.engine.ownership.assigned) scans the lease table every assignment interval
and asks :meth:`Assigner.plan` what to write. In one pass:

1. **Handoffs not completed in time.** A lease with ``checkpointOwner`` set for longer than the
   handoff timeout plus the failover time (the KCL leader's rule; the worker handing it over
   forces it itself at the timeout) is assigned outright: to the worker it was handed to when
   that one may still receive leases, else to the least loaded one.
2. **Every unowned and every expired lease**, ready ones only (a child once every parent is
   finished: it would only wait on another worker), unowned first, to the receiver with the
   least load, each lease adding its load as it goes. Expiry is the observer's: a counter seen
   unchanged for the failover time (console.engine.ownership.taker.LeaseObserver), or for 3/4
   of it when the owner's metric row says it is dead.
3. **Rebalancing**, when asked: by count, a receiver a whole lease above the mean sheds its
   excess; by throughput, one above the mean by more than the threshold (10 %, the KCL's) sheds
   the part of its excess the dampening allows (60 %), at least one lease. Each move is a
   graceful handoff (the holder checkpoints, then lets go: nothing is read twice), only to a
   receiver it leaves less loaded than the donor, at most ``max_moves`` a pass.

A lease's load is one, plus its throughput (the ``throughputKBps`` its holder's renewals write,
the KCL 3.x's off-EC2 measure) relative to the mean lease's: idle leases balance by count,
busy ones by throughput. Receivers are the workers whose metric row is fresh (the caller
decides fresh); a live worker whose row is stale keeps its leases but gets no more, as in the
KCL. Leases in a handoff are neither counted as movable nor moved again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from console.checkpoints.leases import Lease
from console.engine.ownership.taker import LeaseObserver, Seen

THRESHOLD = 0.10  # the KCL's reBalanceThresholdPercentage
DAMPENING = 0.60  # the KCL's dampeningPercentage


class Why(StrEnum):
    UNOWNED = "unowned"
    EXPIRED = "expired"
    REBALANCE = "rebalance"
    HANDOFF_TIMED_OUT = "handoff timed out"


# A worker known dead by its stale row: its leases expire once seen unchanged this long (x
# failover), past its own watchdog's give-up (2/3 failover + a look, 3/4) with a margin.
DEAD_EXPIRY = 5 / 6


@dataclass(frozen=True, slots=True)
class Move:
    lease: Lease
    to: str
    why: Why

    @property
    def graceful(self) -> bool:
        """A handoff (the holder checkpoints first) rather than an outright assignment."""
        return self.why is Why.REBALANCE


@dataclass(slots=True)
class Assigner:
    failover: float
    handoff_timeout: float
    max_moves: Callable[[int], int] = lambda leases: max(1, math.ceil(leases / 4))
    threshold: float = THRESHOLD
    dampening: float = DAMPENING
    rng: random.Random = field(default_factory=random.Random)
    # When each handoff was first seen (lease key -> (from, to, clock)).
    _handoffs: dict[str, tuple[str, str, float]] = field(default_factory=dict)

    def plan(
        self,
        observer: LeaseObserver,
        receivers: Collection[str],
        now: float,
        ready: Callable[[Lease], bool] = lambda _: True,
        rebalance: bool = True,
        dead: Collection[str] = (),
        settled: Callable[[Lease], bool] = lambda _: True,
    ) -> list[Move]:
        """``dead``: workers known dead by their metric rows (shard-console's, written every
        failover/2 while holding none, stale): their leases expire once seen unchanged for 5/6
        of the failover
        time (a renewal missed, whatever the scans' phase), so a leader new to its post does
        not wait a whole one.

        A lease's holder is its ``checkpointOwner`` during a handoff (it renews), else its
        owner. A lease expires when its holder stops renewing it, handoff or not (the KCL's
        ``actualOwner``): a worker that died handing a lease over does not strand it for the
        handoff timeout. A worker holding an expired lease receives none: its metric row may
        still be fresh, its renewals are not. Only ``settled`` leases are moved to rebalance
        (one assigned but not yet renewed by its owner has no holder to hand it over)."""
        work = [s for s in observer.seen.values() if not s.lease.finished]
        self._note_handoffs(work, now)
        failover = self.failover

        def expired(s: Seen) -> bool:
            holder = s.lease.checkpoint_owner or s.lease.owner
            return holder is not None and (
                observer.expired(s, failover, now)
                or (holder in dead and observer.expired(s, failover * DEAD_EXPIRY, now))
            )

        gone = {s.lease.key for s in work if expired(s)}
        stalled = {s.lease.checkpoint_owner or s.lease.owner for s in work if s.lease.key in gone}
        # ...unless nobody else is there: a lease of its that expired may be one it was never
        # told of (assigned, then handed on before it looked), and it is the one left to read.
        receivers = [w for w in receivers if w not in stalled] or list(receivers)
        if not receivers:
            return []
        weight, by_throughput = _weights([s.lease for s in work])
        load = dict.fromkeys(receivers, 0.0)
        moves: list[Move] = []
        movable: dict[str, list[Lease]] = {w: [] for w in receivers}
        pending: list[tuple[int, float, Lease, Why]] = []
        for s in work:
            lease = s.lease
            lapsed = lease.key in gone
            if lease.checkpoint_owner is not None:
                if lapsed:
                    pending.append((1, s.changed_at, lease, Why.EXPIRED))
                elif self._timed_out(lease, now):
                    pending.append((0, s.changed_at, lease, Why.HANDOFF_TIMED_OUT))
                elif lease.owner in load:
                    load[lease.owner] += weight(lease)  # soon theirs
                continue
            if lease.owner is None or lapsed:
                if ready(lease):
                    why = Why.UNOWNED if lease.owner is None else Why.EXPIRED
                    pending.append((1 if lapsed else 0, s.changed_at, lease, why))
                continue
            if lease.owner in load:
                load[lease.owner] += weight(lease)
                if ready(lease) and settled(lease):
                    movable[lease.owner].append(lease)
        # Unowned (and timed-out handoffs) first, then expired, the longest waiting first.
        pending.sort(key=lambda p: (p[0], p[1]))
        for _, _, lease, why in pending:
            to = self._to(lease, why, load)
            load[to] += weight(lease)
            moves.append(Move(lease, to, why))
        if rebalance:
            moves += self._rebalance(
                load, movable, weight, self.max_moves(len(work)), by_throughput
            )
        return moves

    def _note_handoffs(self, work: list[Seen], now: float) -> None:
        current = {}
        for s in work:
            lease = s.lease
            if lease.checkpoint_owner is None or lease.owner is None:
                continue
            pair = (lease.checkpoint_owner, lease.owner)
            old = self._handoffs.get(lease.key)
            current[lease.key] = (*pair, old[2] if old and old[:2] == pair else now)
        self._handoffs = current

    def _timed_out(self, lease: Lease, now: float) -> bool:
        since = self._handoffs.get(lease.key)
        return since is not None and now - since[2] >= self.handoff_timeout + self.failover

    def handoffs(self) -> dict[str, tuple[str, str, float]]:
        """Handoffs under way: lease key -> (from, to, when first seen)."""
        return dict(self._handoffs)

    def _to(self, lease: Lease, why: Why, load: Mapping[str, float]) -> str:
        if lease.checkpoint_owner is not None and lease.owner is not None and lease.owner in load:
            # The move the handoff began, completed: its holder stopped renewing, or did not
            # finish in time.
            return lease.owner
        least = min(load.values())
        return self.rng.choice(sorted(w for w, n in load.items() if n == least))

    def _rebalance(
        self,
        load: dict[str, float],
        movable: dict[str, list[Lease]],
        weight: Callable[[Lease], float],
        budget: int,
        by_throughput: bool,
    ) -> list[Move]:
        """Counts are exact: a donor a whole lease above the mean sheds all its excess.
        Throughput is noisy: a donor more than the threshold above the mean sheds the
        dampened part of its excess."""
        if len(load) < 2:
            return []
        mean = sum(load.values()) / len(load)
        moves: list[Move] = []
        donors = sorted(load, key=lambda w: -load[w])
        for donor in donors:
            excess = load[donor] - mean
            over = self.threshold * mean if by_throughput else 1.0 - 1e-9
            if excess < over or excess <= 0 or not movable[donor]:
                continue
            shed = excess * self.dampening if by_throughput else excess
            leases = list(movable[donor])
            self.rng.shuffle(leases)
            shed_so_far = 0.0
            for lease in leases:
                if len(moves) >= budget or (shed_so_far and shed_so_far >= shed):
                    break
                w = weight(lease)
                to = min(load, key=lambda x: (load[x], x))
                if load[to] + w >= load[donor]:
                    break  # the move would leave the receiver no lighter than the donor
                load[to] += w
                load[donor] -= w
                shed_so_far += w
                moves.append(Move(lease, to, Why.REBALANCE))
        return moves


def _weights(leases: list[Lease]) -> tuple[Callable[[Lease], float], bool]:
    """One per lease, plus its throughput relative to the mean lease's; and whether any
    lease carries throughput (else the leases balance by count)."""
    known = [t for lease in leases if (t := lease.throughput) is not None and t > 0]
    if not known:
        return (lambda _: 1.0), False
    mean = sum(known) / len(leases)

    def weight(lease: Lease) -> float:
        return 1.0 + (lease.throughput or 0.0) / mean

    return weight, True
