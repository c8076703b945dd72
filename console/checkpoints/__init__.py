"""Where progress is kept: passive stores behind :class:`CheckpointStore`. SQLite
(console.checkpoints.sqlite) by default; a KCL lease table (console.checkpoints.leases) for a
fleet. Who may read which shard is the engine's (console.engine.ownership)."""

from console.checkpoints.base import (
    CheckpointChange,
    CheckpointStore,
    Command,
    Lockable,
    Owner,
    StoreError,
    StoreLockedError,
    StreamRecord,
)
from console.model import HistoryEntry

__all__ = [
    "CheckpointChange",
    "CheckpointStore",
    "Command",
    "HistoryEntry",
    "Lockable",
    "Owner",
    "StoreError",
    "StoreLockedError",
    "StreamRecord",
]
