"""The checks a fleet's worker passes before it joins a lease table: a table a KCL 3.x
application runs (its leader assigns the leases) is refused, and so are live workers that are
not shard-console's (the KCL) and another live process with this worker's id, unless the
operator says ``--take-over``.

No lease table stores a time: a worker is live when its counters move. Owners with no heartbeat
of ours are another kind of worker (the KCL), watched for the KCL's failover time at least;
owners named as this worker are another process with our id, watched while its heartbeat is
fresh. One whose counter moves while watched is live.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from console.checkpoints.leases import KCL3_VERSIONS, LeaseTableError

if TYPE_CHECKING:
    from console.engine.ownership.leases import LeaseOwnership

KCL_FAILOVER = 10.0  # the KCL's default: how long a stranger's lease is watched, at least


class LeaseConflictError(LeaseTableError):
    """Live workers of another kind (the KCL, or a worker with our id) hold the table."""


async def check_joining(worker: LeaseOwnership, key: str) -> None:
    """Raises LeaseConflictError when the worker must not join; watches the table meanwhile
    (its observer holds the leases as last scanned)."""
    table = worker.table
    items = await table.scan()
    version = await table.client_version(items)
    if version in KCL3_VERSIONS and not (worker.take_over or worker.assigned):
        raise LeaseConflictError(
            f"lease table '{table.name}' belongs to a KCL 3.x application (client version "
            f"{version}): its leader assigns the leases; stop it and pass --take-over to move "
            "it to shard-console"
        )
    me = worker.worker_id
    ours = {hb.worker for hb in worker.fleet.heartbeats} - {me}
    mine = worker.fleet.heartbeat_of(me)
    watch_me = mine is not None and time.time() - mine.at < 2.5 * worker.beat_interval
    clock = worker.clock
    observer = worker.observer
    start = clock()
    observer.update(await worker.store.leases(key), start)
    first = {k: s.lease.counter for k, s in observer.seen.items()}
    alone = worker.take_over or worker.assigned
    window = worker.failover if alone else max(worker.failover, KCL_FAILOVER)
    while True:
        suspects = {
            s.lease.owner
            for s in observer.seen.values()
            if s.lease.owner is not None
            and not s.lease.finished
            and (
                (s.lease.owner == me and watch_me)
                or (s.lease.owner not in ours and s.lease.owner != me)
            )
        }
        if worker.take_over or worker.assigned:  # a 3.x leader assigns: others are welcome
            suspects = {o for o in suspects if o == me}
        moved = {
            str(s.lease.owner)
            for k, s in observer.seen.items()
            if s.lease.owner in suspects and s.lease.counter != first.get(k)
        }
        if me in moved:
            assert mine is not None
            raise LeaseConflictError(
                f"worker id '{me}' is live in lease table '{table.name}' (pid {mine.pid} on "
                f"{mine.host}): pick another --worker-id"
            )
        if moved:
            raise LeaseConflictError(
                f"live workers that are not shard-console's hold leases in '{table.name}': "
                f"{', '.join(sorted(moved))}; stop that application first, or pass "
                "--take-over to run beside it"
            )
        if not suspects or clock() - start > window:
            break  # they held leases but renewed none: dead, their leases expire
        await asyncio.sleep(1.0)
        observer.update(await worker.store.leases(key), clock())
    if (
        watch_me
        and mine is not None
        and not any(s.lease.owner == me for s in observer.seen.values())
    ):
        # It holds no lease to watch: its heartbeat is all there is to go by.
        age = time.time() - mine.at
        if age < worker.beat_interval * 1.5:
            raise LeaseConflictError(
                f"worker id '{me}' is live in lease table '{table.name}' (pid {mine.pid} on "
                f"{mine.host}, heartbeat {age:.0f} s ago): pick another --worker-id (a stopped "
                f"worker's id is free {worker.beat_interval * 1.5:.0f} s after its last "
                "heartbeat)"
            )
