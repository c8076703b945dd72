"""Where progress is kept, and who may read which shard. SQLite by default; a DynamoDB lease
table later."""

from console.checkpoints.base import (
    CheckpointChange,
    CheckpointStore,
    Command,
    Owner,
    ShardOwnership,
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
    "Owner",
    "ShardOwnership",
    "StoreError",
    "StoreLockedError",
    "StreamRecord",
]
