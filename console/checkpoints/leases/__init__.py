"""Leases in the Kinesis Client Library's own DynamoDB table, so several processes (and the KCL
itself, one after the other or side by side) share a stream's shards: passive persistence.

:mod:`items` maps lease items to our values and back (pure), :mod:`table` makes the protocol's
conditional writes (:mod:`handoffs` the KCL 3.x ones; both over :mod:`calls`), :mod:`companion`
keeps shard-console's own table beside it (history, commands, pauses, worker heartbeats),
:mod:`store` is the :class:`~console.checkpoints.base.CheckpointStore` over both. Who takes,
renews and gives back leases is the engine's (console.engine.ownership.leases).
../shared/LEASES.md has the format and the protocol.

This package's face is below: other modules import from ``console.checkpoints.leases``, never
from its modules (an import contract in pyproject.toml keeps it so).
"""

from console.checkpoints.leases.calls import error_code
from console.checkpoints.leases.companion import Companion, Heartbeat, Marks, companion_name
from console.checkpoints.leases.coordinator import (
    ASSIGNED_VERSIONS,
    KCL_ROW_INTERVAL,
    V2,
    V3,
    Coordinator,
    LeaderLock,
    MetricRow,
    Migration,
    moved_version,
)
from console.checkpoints.leases.errors import LeaseTableError, LeaseTableUnavailable, MalformedLease
from console.checkpoints.leases.handoffs import GSI
from console.checkpoints.leases.items import (
    AT_TIMESTAMP,
    LATEST,
    SHARD_END,
    TRIM_HORIZON,
    Lease,
    UnwritablePosition,
    checkpoint_of,
    is_lease,
    kcl_checkpoint,
    lease_of,
    new_item,
    plain,
    shard_of,
)
from console.checkpoints.leases.store import (
    LeaseMovedError,
    LeaseStore,
    PartlyApplied,
    is_operator_change,
    key_of,
    shard_range,
    stream_name,
)
from console.checkpoints.leases.table import (
    CLIENT_VERSION_ENTITY,
    KCL3_VERSIONS,
    LeaseTable,
    read_leases,
)

__all__ = [
    "ASSIGNED_VERSIONS",
    "AT_TIMESTAMP",
    "CLIENT_VERSION_ENTITY",
    "GSI",
    "KCL3_VERSIONS",
    "KCL_ROW_INTERVAL",
    "LATEST",
    "SHARD_END",
    "TRIM_HORIZON",
    "V2",
    "V3",
    "Companion",
    "Coordinator",
    "Heartbeat",
    "LeaderLock",
    "Lease",
    "LeaseMovedError",
    "LeaseStore",
    "LeaseTable",
    "LeaseTableError",
    "LeaseTableUnavailable",
    "MalformedLease",
    "Marks",
    "MetricRow",
    "Migration",
    "PartlyApplied",
    "UnwritablePosition",
    "checkpoint_of",
    "companion_name",
    "error_code",
    "is_lease",
    "is_operator_change",
    "kcl_checkpoint",
    "key_of",
    "lease_of",
    "moved_version",
    "new_item",
    "plain",
    "read_leases",
    "shard_of",
    "shard_range",
    "stream_name",
]
