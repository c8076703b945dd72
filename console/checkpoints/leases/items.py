"""Lease items as the KCL writes them, and our values: pure, no I/O.

A KCL checkpoint is the *last processed* record (sequence and sub-sequence); ours is the position
to read from. ``AFTER_SEQUENCE_NUMBER(S, k)`` is exactly the KCL's (S, k): the worker reads at S and
drops user records up to k, as the KCL does. Sentinels: TRIM_HORIZON, LATEST, SHARD_END, and
AT_TIMESTAMP (which stores no time: the reader's own initial position supplies it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from console.checkpoints.leases.errors import MalformedLease
from console.model import (
    Checkpoint,
    CheckpointStatus,
    Position,
    PositionKind,
    Shard,
    is_sequence_number,
)

TRIM_HORIZON = "TRIM_HORIZON"
LATEST = "LATEST"
SHARD_END = "SHARD_END"
AT_TIMESTAMP = "AT_TIMESTAMP"
SENTINELS = frozenset({TRIM_HORIZON, LATEST, SHARD_END, AT_TIMESTAMP})
LEASE_ENTITY = "LEASE"


class UnwritablePosition(ValueError):
    """A position the lease table cannot hold as it is: resolve it to a record first."""


@dataclass(slots=True)
class Lease:
    """One lease item of our stream."""

    key: str  # leaseKey: the shard id, or account:stream:epoch:shardId (multi-stream)
    shard_id: str
    owner: str | None
    counter: int
    checkpoint: str  # a sequence number or a sentinel
    sub: int = 0
    parents: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    owner_switches: int = 0
    checkpoint_owner: str | None = None
    hash_range: tuple[str, str] | None = None
    pending: str | None = None
    throughput: float | None = None  # throughputKBps, as a KCL 3.x holder's renewals write it
    # scNudge: shard-console's leader marks a lease so its holder looks for new assignments
    # (console.checkpoints.leases.table.LeaseTable.nudge); the KCL ignores it.
    nudge: float | None = None

    @property
    def finished(self) -> bool:
        return self.checkpoint == SHARD_END


def stream_part(key: str) -> tuple[str | None, str]:
    """(the stream name, the shard id) of a lease key: (None, key) for single-stream keys,
    (stream, shard) for ``account:stream:epoch:shardId``."""
    parts = key.split(":")
    if len(parts) == 4:
        return parts[1], parts[3]
    return None, key


def _s(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if value is None else value.get("S")


NUDGE = "scNudge"


class _Reader:
    """An item's attributes, each of the type the KCL writes: one that is not says why."""

    def __init__(self, item: Mapping[str, Any], key: str, shard_id: str) -> None:
        self.item = item
        self.key = key
        self.shard_id = shard_id

    def bad(self, reason: str) -> MalformedLease:
        return MalformedLease(self.key, self.shard_id, reason)

    def text(self, name: str, required: bool = False) -> str | None:
        value = self.item.get(name)
        if value is None:
            if required:
                raise self.bad(f"it has no {name}")
            return None
        if "S" not in value:
            raise self.bad(f"{name} is {_type(value)}, not a string")
        return str(value["S"])

    def number(self, name: str, required: bool = False) -> int:
        value = self.item.get(name)
        if value is None:
            if required:
                raise self.bad(f"it has no {name}")
            return 0
        if "N" not in value:
            raise self.bad(f"{name} is {_type(value)}, not a number")
        raw = str(value["N"])
        if not raw.lstrip("-").isdigit():
            raise self.bad(f"{name} {raw!r} is not a whole number")
        return int(raw)

    def decimal(self, name: str) -> float | None:
        """A figure only shown and balanced by (never a position): one that is not a number
        is read as absent rather than make the lease unusable."""
        value = self.item.get(name)
        try:
            return float(value["N"]) if value is not None and "N" in value else None
        except ValueError:
            return None

    def shards(self, name: str) -> tuple[str, ...]:
        value = self.item.get(name)
        if value is None:
            return ()
        if "SS" in value:
            return tuple(sorted(value["SS"]))
        if "S" in value:  # never written so, but read generously
            return (value["S"],)
        raise self.bad(f"{name} is {_type(value)}, not a string set")


def _type(value: Mapping[str, Any]) -> str:
    kinds = {"S": "a string", "N": "a number", "B": "binary", "SS": "a string set",
             "NS": "a number set", "BS": "a binary set", "M": "a map", "L": "a list",
             "BOOL": "a boolean", "NULL": "null"}  # fmt: skip
    return kinds.get(next(iter(value), ""), "of an unknown type")


def is_lease(item: Mapping[str, Any]) -> bool:
    """KCL 3.5's single-table format keeps other entities in the lease table: skip them."""
    entity = _s(item, "entityType")
    return entity is None or entity == LEASE_ENTITY


def lease_of(item: Mapping[str, Any], stream: str | None) -> Lease | None:
    """The lease an item holds, or None when it is not a lease of ``stream`` (another
    entity, another stream of a multi-stream application). ``stream`` None: single-stream
    keys only. A lease item whose attributes are not what the KCL writes (a counter that is
    not a number, no checkpoint, a checkpoint that is neither a sentinel nor a sequence
    number) raises MalformedLease: it is never read as a position it does not hold."""
    if not is_lease(item):
        return None
    key = _s(item, "leaseKey")
    if key is None:
        return None
    named, shard_id = stream_part(key)
    if named is not None and named != stream:  # the key says which stream: it is authoritative
        return None
    read = _Reader(item, key, shard_id)
    checkpoint = read.text("checkpoint", required=True)
    assert checkpoint is not None
    if not valid_checkpoint(checkpoint):
        raise read.bad(f"checkpoint {checkpoint!r} is neither a sequence number nor a sentinel")
    start, end = read.text("startingHashKey"), read.text("endingHashKey")
    return Lease(
        key=key,
        shard_id=shard_id,
        owner=read.text("leaseOwner"),
        counter=read.number("leaseCounter", required=True),
        checkpoint=checkpoint,
        sub=read.number("checkpointSubSequenceNumber"),
        parents=read.shards("parentShardId"),
        children=read.shards("childShardIds"),
        owner_switches=read.number("ownerSwitchesSinceCheckpoint"),
        checkpoint_owner=read.text("checkpointOwner"),
        hash_range=(start, end) if start is not None and end is not None else None,
        pending=read.text("pendingCheckpoint"),
        throughput=read.decimal("throughputKBps"),
        nudge=read.decimal(NUDGE),
    )


def new_item(
    key: str,
    checkpoint: str,
    sub: int = 0,
    parents: tuple[str, ...] = (),
    hash_range: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A lease nobody holds yet, as the KCL's shard sync creates one."""
    item: dict[str, Any] = {
        "leaseKey": {"S": key},
        "leaseCounter": {"N": "0"},
        "checkpoint": {"S": checkpoint},
        "checkpointSubSequenceNumber": {"N": str(sub)},
        "ownerSwitchesSinceCheckpoint": {"N": "0"},
    }
    if parents:
        item["parentShardId"] = {"SS": sorted(parents)}
    if hash_range is not None:
        item["startingHashKey"] = {"S": hash_range[0]}
        item["endingHashKey"] = {"S": hash_range[1]}
    named, shard_id = stream_part(key)
    if named is not None:  # as the KCL's multi-stream serializer: the stream's identifier
        item["streamName"] = {"S": key[: -len(shard_id) - 1]}
        item["shardId"] = {"S": shard_id}
    return item


def checkpoint_of(lease: Lease, at_timestamp: float | None = None) -> Checkpoint:
    """The lease's checkpoint in our terms. An AT_TIMESTAMP sentinel reads as this reader's
    own initial time (``at_timestamp``), else as TRIM_HORIZON (nothing skipped)."""
    text = lease.checkpoint
    sid = lease.shard_id
    if text == SHARD_END:
        return Checkpoint(sid, Position.latest(), CheckpointStatus.DONE)
    if text == TRIM_HORIZON:
        return Checkpoint(sid, Position.trim_horizon())
    if text == LATEST:
        return Checkpoint(sid, Position.latest())
    if text == AT_TIMESTAMP:
        if at_timestamp is None:
            return Checkpoint(sid, Position.trim_horizon())
        return Checkpoint(sid, Position.at_timestamp(at_timestamp))
    return Checkpoint(sid, Position.after_sequence(text, lease.sub))


def kcl_checkpoint(cp: Checkpoint) -> tuple[str, int]:
    """What the lease table stores for a checkpoint of ours. Finished (done or skipped) is
    SHARD_END; a position between records must have been resolved to the record before it
    (UnwritablePosition otherwise): the table has no "at" and no time."""
    if cp.status.finished:
        return SHARD_END, 0
    position = cp.position
    kind = position.kind
    if kind is PositionKind.TRIM_HORIZON:
        return TRIM_HORIZON, 0
    if kind is PositionKind.LATEST:
        return LATEST, 0
    if kind is PositionKind.AFTER_SEQUENCE_NUMBER:
        assert position.sequence_number is not None
        return position.sequence_number, position.sub_sequence_number or 0
    raise UnwritablePosition(
        f"{position.describe()} cannot be written to a lease table: resolve it to the record "
        "before it first"
    )


def valid_checkpoint(text: str) -> bool:
    return text in SENTINELS or is_sequence_number(text)


def shard_of(lease: Lease) -> Shard:
    """The shard a lease tells of: its id, parents and hash range (a KCL application's table
    has no more; a listing of the stream has)."""
    parents = lease.parents
    start, end = lease.hash_range or (None, None)
    return Shard(
        lease.shard_id,
        parents[0] if parents else None,
        parents[1] if len(parents) > 1 else None,
        start,
        end,
    )


def plain(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain values (sets as sorted lists, numbers as ints), for people."""
    out: dict[str, Any] = {}
    for name, value in item.items():
        kind, raw = next(iter(value.items()))
        if kind == "N":
            out[name] = int(raw) if str(raw).lstrip("-").isdigit() else float(raw)
        elif kind in ("SS", "NS"):
            out[name] = sorted(raw)
        elif kind == "B":
            out[name] = f"<{len(raw)} bytes>"
        else:
            out[name] = raw
    return out
