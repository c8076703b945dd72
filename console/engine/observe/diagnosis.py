"""What is wrong with a consumer, in words, from what an observer sees of its leases.

Pure: the attached console (console.engine.observe.leases) gathers the facts (the lease table as
last scanned, how long each counter has stood still, the stream's shard listing, what the lag reads
found) and :func:`diagnose` turns them into findings for the first screen. Each finding names
what it is about and says why, in an operator's words, and what usually fixes it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from console.engine.findings import Diagnosis, Finding
from console.model import format_duration

HANDOFF_TIMEOUT = 30.0  # the KCL's default gracefulLeaseHandoffTimeoutMillis, in seconds


@dataclass(frozen=True, slots=True)
class LeaseFacts:
    """One lease as the observer last saw it."""

    shard_id: str
    owner: str | None
    finished: bool  # at SHARD_END
    parents: tuple[str, ...]
    still_for: float | None  # seconds its counter (or, unowned, the lease) has stood still
    # checkpointOwner: a KCL 3.x handoff in progress, from this worker (which checkpoints
    # before letting go) to ``owner``.
    handoff_from: str | None = None
    handoff_for: float | None = None  # seconds that handoff has been seen


@dataclass(frozen=True, slots=True)
class ShardFacts:
    """One shard as the stream lists it, and what a lag read found after its checkpoint."""

    shard_id: str
    parents: tuple[str, ...]
    closed: bool
    caught_up: bool | None = None  # nothing after the checkpoint (None: not read yet)
    lost: str | None = None  # why the records after its checkpoint are gone, if they are
    at_risk: str | None = None  # the next record leaves the stream's retention soon


def diagnose(
    leases: Mapping[str, LeaseFacts],
    shards: Mapping[str, ShardFacts] | None,
    *,
    failover: float,
    handoff_timeout: float = HANDOFF_TIMEOUT,
    take_within: float | None = None,
) -> list[Diagnosis]:
    """Every finding, the severe ones first, then by shard. ``shards`` is None while the
    stream's listing is not known (then nothing is said about shards without leases).
    ``take_within``: how long a lease nobody holds may wait for a taker before it is a finding
    (default 2 x failover: the KCL's taker runs every 2 x failover)."""
    found: list[Diagnosis] = []
    wait = 2 * failover if take_within is None else take_within
    for lease in leases.values():
        found.extend(_lease_findings(lease, leases, shards, failover, handoff_timeout, wait))
    if shards is not None:
        found.extend(_shard_findings(leases, shards))
    found.extend(_idle_workers(leases.values()))
    return sorted(found, key=lambda d: (not d.severe, d.subject, d.finding.value))


def _lease_findings(
    lease: LeaseFacts,
    leases: Mapping[str, LeaseFacts],
    shards: Mapping[str, ShardFacts] | None,
    failover: float,
    handoff_timeout: float,
    take_within: float,
) -> list[Diagnosis]:
    sid = lease.shard_id
    out: list[Diagnosis] = []
    still = lease.still_for
    if lease.finished:
        if shards is not None and sid not in shards:
            pass  # a finished lease for a shard gone past retention: the KCL deletes it later
        return out
    if shards is not None and sid not in shards:
        out.append(
            Diagnosis(
                Finding.ORPHAN_LEASE,
                sid,
                f"lease {sid} is for a shard the stream no longer has, and never reached "
                "SHARD_END: what it had not read is gone with retention, and its children wait "
                "on it until the lease is deleted or marked done",
                severe=True,
            )
        )
    if lease.owner is not None and still is not None and still >= failover:
        out.append(
            Diagnosis(
                Finding.EXPIRED,
                sid,
                f"nobody renews lease {sid}: worker {lease.owner} last renewed it "
                f"{format_duration(still)} ago (failover {format_duration(failover)}); a live "
                "worker takes it at its next lease round; if none does, no worker is running",
            )
        )
    waiting_on = [p for p in lease.parents if p in leases and not leases[p].finished]
    if (
        lease.owner is None
        and not waiting_on
        and still is not None
        and still >= take_within
        and not (shards is not None and sid not in shards)
    ):
        out.append(
            Diagnosis(
                Finding.UNOWNED,
                sid,
                f"nobody holds lease {sid}: no worker reads it (are the workers running, and is "
                "there one with room for it?)",
            )
        )
    if lease.handoff_from is not None and (lease.handoff_for or 0.0) >= handoff_timeout:
        out.append(
            Diagnosis(
                Finding.HANDOFF_STUCK,
                sid,
                f"lease {sid} has been handed over to {lease.owner or 'nobody'} for "
                f"{format_duration(lease.handoff_for or 0.0)}, past the "
                f"{format_duration(handoff_timeout)} timeout: {lease.handoff_from} never "
                "checkpointed its last batch; changes to it are refused until it ends",
            )
        )
    for parent in waiting_on:
        p = leases[parent]
        shard = shards.get(parent) if shards is not None else None
        if shard is None and shards is not None:
            reason = "the stream no longer has it, but its lease never reached SHARD_END"
        elif shard is not None and shard.closed and shard.caught_up:
            reason = (
                "it is read to its end but never checkpointed SHARD_END (its processor must "
                "checkpoint in shard_ended)"
            )
        elif p.still_for is not None and p.still_for >= (
            take_within if p.owner is None else failover
        ):
            reason = "nobody reads it"
        else:
            continue  # its parent is being read: waiting is right
        out.append(
            Diagnosis(
                Finding.STUCK_CHILD,
                sid,
                f"child {sid} waits on parent {parent}: {reason}",
                severe=True,
                about=parent,
            )
        )
    return out


def _shard_findings(
    leases: Mapping[str, LeaseFacts], shards: Mapping[str, ShardFacts]
) -> list[Diagnosis]:
    out: list[Diagnosis] = []
    for shard in shards.values():
        sid = shard.shard_id
        # A child of a parent still being read gets its lease when the parent ends (KCL 2.x).
        parent_live = any(
            (p in leases and not leases[p].finished)
            or (p not in leases and p in shards and not shards[p].closed)
            for p in shard.parents
        )
        if sid not in leases and not shard.closed and not parent_live:
            out.append(
                Diagnosis(
                    Finding.NO_LEASE,
                    sid,
                    f"shard {sid} of the stream has no lease: no worker reads it (the "
                    "application's shard sync has not run since it appeared, or ignores it)",
                    severe=True,
                )
            )
        if shard.lost is not None:
            out.append(Diagnosis(Finding.DATA_LOST, sid, f"shard {sid}: {shard.lost}", True))
        elif shard.at_risk is not None:
            out.append(Diagnosis(Finding.RETENTION, sid, f"shard {sid}: {shard.at_risk}", True))
    return out


def _idle_workers(leases: Collection[LeaseFacts]) -> list[Diagnosis]:
    """A worker whose leases are all finished while another holds several live ones: the KCL
    2.x balancer counts finished leases, so it takes no more work."""
    live: dict[str, int] = {}
    finished: dict[str, int] = {}
    for lease in leases:
        if lease.owner is None:
            continue
        bucket = finished if lease.finished else live
        bucket[lease.owner] = bucket.get(lease.owner, 0) + 1
    busiest = max(live.values(), default=0)
    if busiest < 2:
        return []
    return [
        Diagnosis(
            Finding.IDLE_WORKER,
            worker,
            f"worker {worker} holds only finished leases ({count}) while another holds "
            f"{busiest} live ones: finished leases count toward its share, so it takes no work "
            "until they are cleaned up",
        )
        for worker, count in sorted(finished.items())
        if worker not in live
    ]


class Malformed(Protocol):
    shard_id: str
    reason: str


def malformed_findings(items: Iterable[Malformed]) -> list[Diagnosis]:
    """A lease item that is not a valid lease (a counter that is not a number, no checkpoint):
    nobody reads its shard and its children wait, until it is fixed."""
    return [
        Diagnosis(
            Finding.MALFORMED,
            item.shard_id,
            f"lease {item.shard_id} is malformed ({item.reason}): no worker reads its shard and "
            "its children wait; shard-console leaves it untouched: fix or delete the item",
            severe=True,
        )
        for item in sorted(items, key=lambda i: i.shard_id)
    ]


@dataclass(frozen=True, slots=True)
class LeaderFacts:
    """A KCL 3.x application's leader lock, as an attached console watched it."""

    owner: str
    duration: float  # seconds, as the lock says
    unchanged_for: float  # seconds its record version has been seen unchanged
    released: bool = False


def leader_findings(leader: LeaderFacts | None, assigned: bool) -> list[Diagnosis]:
    """``assigned``: the application runs the KCL 3.x protocol (its migration item says so),
    where only a leader assigns leases."""
    if not assigned or leader is None or leader.released:
        return []
    if leader.unchanged_for < leader.duration:
        return []
    return [
        Diagnosis(
            Finding.LEADER_STALE,
            leader.owner,
            f"the leader's lock, held by {leader.owner}, has not been renewed for "
            f"{format_duration(leader.unchanged_for)} (its duration: "
            f"{format_duration(leader.duration)}): no worker assigns leases until another "
            "takes the lock over; unowned and expired leases wait",
        )
    ]


def renewal_findings(fresh_rows: Collection[str], expired: Mapping[str, str]) -> list[Diagnosis]:
    """Workers whose metric row says they live (a leader gives them leases) while a lease they
    hold (shard -> holder) has expired: counted, but not renewing."""
    by_worker: dict[str, list[str]] = {}
    for sid, holder in expired.items():
        if holder in fresh_rows:
            by_worker.setdefault(holder, []).append(sid)
    return [
        Diagnosis(
            Finding.NOT_RENEWING,
            worker,
            f"worker {worker} writes its metric row but does not renew "
            f"{', '.join(sorted(sids))}: a stuck process (a full disk, a hung processor, lost "
            "credentials for the lease table); the leader moves its expired leases "
            "(shard-console's gives it no new ones meanwhile; the KCL's still does)",
        )
        for worker, sids in sorted(by_worker.items())
    ]
