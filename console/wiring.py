"""A consumer put together from names: the source a stream name means, the SQLite store, the
processor. ``shard-console run`` does exactly this before it hands the consumer to the console
or the headless runner; a program of your own does the same with :func:`open_consumer`::

    async with open_consumer("orders", handle, db="orders.db") as consumer:
        await consumer.run()
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from console.checkpoints.sqlite import SqliteStore
from console.config import data_dir, default_db_path
from console.engine.consumer import Consumer, ConsumerOptions
from console.engine.events import EventLog
from console.model import Record, ShardContext
from console.processors.base import CallableProcessor, Processor
from console.processors.loader import load_processor
from console.sources.aws import AwsSettings
from console.sources.base import FatalSourceError, StreamSource
from console.sources.dynamodb import DynamoDBSource, is_stream_arn
from console.sources.faults import FaultInjector
from console.sources.kinesis import KinesisSource

ProcessorLike = Processor | Callable[[list[Record], ShardContext], Awaitable[None] | None] | str


def make_source(
    stream: str,
    aws: AwsSettings | None = None,
    *,
    kind: str | None = None,
    faults: FaultInjector | None = None,
) -> StreamSource:
    """The source ``stream`` names: a DynamoDB stream ARN is one (unless ``kind`` says
    kinesis, which is an error), a table name with ``kind="dynamodb"`` is its latest stream,
    anything else a Kinesis stream name or ARN. ``faults`` rehearse an incident at the client
    boundary. The source is not opened: use it as ``async with``."""
    aws = aws or AwsSettings()
    if kind not in (None, "kinesis", "dynamodb"):
        raise FatalSourceError(f"unknown source kind '{kind}': use kinesis or dynamodb")
    if kind == "dynamodb" or (kind is None and is_stream_arn(stream)):
        hooks = faults.hooks("dynamodbstreams") if faults else []
        return DynamoDBSource(stream, aws, hooks, table=not stream.startswith("arn:"))
    if is_stream_arn(stream):
        raise FatalSourceError(
            f"'{stream}' is a DynamoDB stream ARN: drop --source kinesis, or pass --source dynamodb"
        )
    if stream.startswith("arn:") and stream.split(":")[2:3] != ["kinesis"]:
        raise FatalSourceError(
            f"'{stream}' is not a Kinesis stream ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)"
        )
    return KinesisSource(stream, aws, faults.hooks("kinesis") if faults else [])


def as_processor(processor: ProcessorLike, stream: str) -> Processor:
    """A :class:`Processor`; a function ``(records, ctx)``, sync or async; or a spec string
    as ``--processor`` takes it (``null``, ``print``, ``jsonl:PATH``, ``module:function``)."""
    if isinstance(processor, Processor):
        return processor
    if isinstance(processor, str):
        return load_processor(processor, stream)
    if callable(processor):
        name = getattr(processor, "__qualname__", None) or type(processor).__name__
        return CallableProcessor(processor, name)
    raise TypeError(f"not a processor: {processor!r}")


@contextlib.asynccontextmanager
async def open_consumer(
    stream: str | StreamSource,
    processor: ProcessorLike = "null",
    *,
    db: str | Path | None = None,
    kind: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    endpoint_url: str | None = None,
    aws: AwsSettings | None = None,
    options: ConsumerOptions | None = None,
    events: EventLog | None = None,
    faults: FaultInjector | None = None,
    start: bool = True,
) -> AsyncIterator[Consumer]:
    """A consumer of ``stream`` (a name or ARN, or a source made with :func:`make_source`),
    started (unless ``start=False``), stopped on the way out (batches in hand finished,
    checkpoints flushed).

    Credentials come from boto3's chain (``profile`` picks one). Checkpoints go to ``db``, an
    SQLite file, by default ``~/.local/share/shard-console/checkpoints.db``. The stream is
    described before the database is opened, so a wrong name or credentials write nothing.
    Raises :class:`~console.sources.base.SourceError` (the stream cannot be read) or
    :class:`~console.checkpoints.base.StoreError` (the database cannot be used)."""
    if isinstance(stream, str):
        settings = aws or AwsSettings(region=region, profile=profile, endpoint_url=endpoint_url)
        source = make_source(stream, settings, kind=kind, faults=faults)
    else:
        source = stream
    sink = as_processor(processor, source.stream)
    async with source:
        info = await source.describe()
        path = str(db) if db is not None else default_db_path()
        if db is None:
            # The default folder is ours to create, private, once the stream is known good.
            data_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
        store = await SqliteStore.open(path)
        try:
            consumer = Consumer(source, store, sink, options, events, info)
            try:
                if start:
                    await consumer.start()
                yield consumer
            finally:
                await consumer.stop()
        finally:
            await store.close()


__all__ = ["ProcessorLike", "as_processor", "make_source", "open_consumer"]
