"""Where progress is kept. SQLite by default; a DynamoDB lease table later."""

from console.checkpoints.base import (
    CheckpointChange,
    CheckpointStore,
    Command,
    HistoryEntry,
    Owner,
    StoreError,
    StoreLockedError,
    StreamRecord,
)

__all__ = [
    "CheckpointChange",
    "CheckpointStore",
    "Command",
    "HistoryEntry",
    "Owner",
    "StoreError",
    "StoreLockedError",
    "StreamRecord",
]
