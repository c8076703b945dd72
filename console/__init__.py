"""shard-console: the consumer of a sharded stream and its operator console, in one process.

The library, for a program of your own::

    from console import open_consumer

    async with open_consumer("orders", handle, db="orders.db") as consumer:
        await consumer.run()

Everything a library user needs is importable from here; the names load on first use, so
``import console`` (and ``shard-console --help``) stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "open_consumer": "console.cli.wiring",
    "make_source": "console.cli.wiring",
    "Consumer": "console.engine.consume.consumer",
    "ConsumerOptions": "console.engine.consume.consumer",
    "ConsumerStatus": "console.engine.consume.consumer",
    "EventLog": "console.engine.events",
    "ControlRequest": "console.engine.changes.plan",
    "ControlError": "console.engine.changes.plan",
    "Action": "console.engine.changes.plan",
    "SkipTo": "console.engine.changes.plan",
    "KinesisSource": "console.sources.kinesis",
    "DynamoDBSource": "console.sources.dynamodb",
    "AwsSettings": "console.sources.aws",
    "StreamSource": "console.sources.base",
    "SourceError": "console.sources.base",
    "CheckpointStore": "console.checkpoints.base",
    "StoreError": "console.checkpoints.base",
    "SqliteStore": "console.checkpoints.sqlite",
    "Processor": "console.processors.base",
    "RecordFailed": "console.processors.base",
    "ParkRecord": "console.processors.base",
    "FailurePolicy": "console.engine.consume.poison",
    "ParkedRecord": "console.model",
    "Record": "console.model",
    "ChangeRecord": "console.model",
    "ShardContext": "console.model",
    "Position": "console.model",
    "Checkpoint": "console.model",
    "Shard": "console.model",
    "ShardStatus": "console.model",
}

__all__ = [
    "Action",
    "AwsSettings",
    "ChangeRecord",
    "Checkpoint",
    "CheckpointStore",
    "Consumer",
    "ConsumerOptions",
    "ConsumerStatus",
    "ControlError",
    "ControlRequest",
    "DynamoDBSource",
    "EventLog",
    "FailurePolicy",
    "KinesisSource",
    "ParkRecord",
    "ParkedRecord",
    "Position",
    "Processor",
    "Record",
    "RecordFailed",
    "Shard",
    "ShardContext",
    "ShardStatus",
    "SkipTo",
    "SourceError",
    "SqliteStore",
    "StoreError",
    "StreamSource",
    "__version__",
    "make_source",
    "open_consumer",
]

if TYPE_CHECKING:
    from console.checkpoints.base import CheckpointStore, StoreError
    from console.checkpoints.sqlite import SqliteStore
    from console.cli.wiring import make_source, open_consumer
    from console.engine.changes.plan import Action, ControlError, ControlRequest, SkipTo
    from console.engine.consume.consumer import Consumer, ConsumerOptions, ConsumerStatus
    from console.engine.consume.poison import FailurePolicy
    from console.engine.events import EventLog
    from console.model import (
        ChangeRecord,
        Checkpoint,
        ParkedRecord,
        Position,
        Record,
        Shard,
        ShardContext,
        ShardStatus,
    )
    from console.processors.base import ParkRecord, Processor, RecordFailed
    from console.sources.aws import AwsSettings
    from console.sources.base import SourceError, StreamSource
    from console.sources.dynamodb import DynamoDBSource
    from console.sources.kinesis import KinesisSource


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'console' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
