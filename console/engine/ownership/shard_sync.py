"""The KCL's shard sync, as a fleet's worker does it: a lease for every shard that has none,
created only if absent (PutItem with a condition: any number of workers may do it at once), and
a parent's children recorded on it at its end.

A new lease starts as the KCL's shard sync decides: a child from the start of its shard; a root
(or every shard, the first time a stream is seen) at the initial position, and with LATEST a
shard already closed is done.
"""

from __future__ import annotations

from collections.abc import Sequence

from console.checkpoints.leases import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    Lease,
    LeaseStore,
    MalformedLease,
    key_of,
    shard_range,
    stream_name,
)
from console.engine.ownership.taker import LeaseObserver
from console.model import PositionKind, Shard


def first_checkpoint(shard: Shard, initial: PositionKind, fresh_stream: bool) -> str:
    """What a new lease's checkpoint says."""
    if shard.parents and not fresh_stream:
        return TRIM_HORIZON
    if initial is PositionKind.LATEST:
        return SHARD_END if shard.is_closed else LATEST
    if initial is PositionKind.AT_TIMESTAMP:
        return AT_TIMESTAMP
    return TRIM_HORIZON


async def sync_leases(
    store: LeaseStore, key: str, observer: LeaseObserver, shards: Sequence[Shard]
) -> bool:
    """Leases for the listed shards the last scan did not have; childShardIds on finished
    parents. Returns whether a lease was created."""
    known = {s.lease.shard_id: s.lease for s in observer.seen.values()}
    fresh = not known
    template = next(iter(known.values()), None)
    created = False
    for shard in shards:
        if shard.shard_id in known:
            continue
        lease_key = key_of(template, shard.shard_id) if template else shard.shard_id
        checkpoint = first_checkpoint(shard, store.initial.kind, fresh)
        created |= await store.table.create(
            lease_key, checkpoint, shard.parents, shard_range(shard)
        )
    await record_children(store, key, [s for s in shards if s.parents])
    return created


async def record_children(store: LeaseStore, key: str, children: Sequence[Shard]) -> None:
    """childShardIds on each finished parent, as the KCL sets it at SHARD_END: a parent may
    reach its end before any listing has shown its children."""
    known = store.known_shards
    for parent in sorted({p for child in children for p in child.parents}):
        try:
            lease = await store.table.get(store.lease_key(parent), stream_name(key))
        except MalformedLease:
            continue  # left untouched (said where it is scanned)
        kids = tuple(s.shard_id for s in known.values() if parent in s.parents)
        if lease is not None and lease.finished and not set(kids) <= set(lease.children):
            await store.table.set_children(lease.key, kids)


async def create_children(store: LeaseStore, parent: Lease) -> None:
    """At a parent's end, before its SHARD_END: the leases of its children, if absent."""
    for shard in store.known_shards.values():
        if parent.shard_id in shard.parents:
            await store.table.create(
                key_of(parent, shard.shard_id), TRIM_HORIZON, shard.parents, shard_range(shard)
            )
