"""A consumer put together from names: the source a stream name means, the SQLite store, the
processor. ``shard-console run`` does exactly this before it hands the consumer to the console
or the headless runner; a program of your own does the same with :func:`open_consumer`::

    async with open_consumer("orders", handle, db="orders.db") as consumer:
        await consumer.run()
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from console.checkpoints.base import CheckpointStore, ParkedStore, StreamRecord
from console.checkpoints.leases import ASSIGNED_VERSIONS, V3, Coordinator, LeaseStore
from console.checkpoints.sqlite import SqliteStore
from console.config import data_dir, default_db_path
from console.engine.consume.consumer import Consumer, ConsumerOptions
from console.engine.consume.poison import Parking
from console.engine.events import EventLog
from console.engine.ownership.assigned import AssignedOwnership
from console.engine.ownership.base import Ownership
from console.engine.ownership.leases import LeaseOwnership, check_failover
from console.engine.state import EngineState
from console.errors import ConsoleError, RunError, UsageError
from console.model import Position, Record, ShardContext
from console.processors.base import CallableProcessor, Processor
from console.processors.loader import load_processor
from console.settings import default
from console.sources.aws import AwsSettings, open_client
from console.sources.base import FatalSourceError, SourceError, StreamSource, describe_at_start
from console.sources.dead_letter import open_dead_letter
from console.sources.dynamodb import DynamoDBSource, is_stream_arn
from console.sources.faults import FaultInjector
from console.sources.kinesis import KinesisSource

ProcessorLike = Processor | Callable[[list[Record], ShardContext], Awaitable[None] | None] | str
OwnershipFactory = Callable[[EngineState, EventLog], Ownership]


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


@dataclass(frozen=True, slots=True)
class Fleet:
    """Fleet mode: the stream's shards shared with other processes through a KCL lease table."""

    table: str
    worker_id: str | None = None  # default: host-pid-random
    failover: float = default("failover_time")
    endpoint_url: str | None = None  # DynamoDB's; default: the stream's endpoint
    create: bool = True
    take_over: bool = False
    assignment_interval: float | None = None  # KCL 3.x: default failover/4, at least 1 s


@contextlib.asynccontextmanager
async def open_lease_store(
    fleet: Fleet,
    aws: AwsSettings | None = None,
    initial: Position | None = None,
    *,
    create_companion: bool | None = None,
) -> AsyncIterator[LeaseStore]:
    """The lease table (created unless ``fleet.create`` is False), through a DynamoDB client
    of its own. shard-console's table beside it: by default created when the worker joins,
    once the checks of joining have passed; for the control CLI, created now if
    ``create_companion`` (a change is recorded there) or only read if it exists (False)."""
    check_failover(fleet.failover)
    aws = aws or AwsSettings()
    settings = replace(aws, endpoint_url=fleet.endpoint_url or aws.endpoint_url)
    async with open_client("dynamodb", settings) as client:
        store = LeaseStore(
            client,
            fleet.table,
            create=fleet.create,
            initial=initial,
            create_companion=create_companion,
        )
        try:
            await store.prepare()
            if create_companion is not None:  # the control CLI, an attached console
                migration = await Coordinator(client, fleet.table).migration()
                store.keeps_holder = migration.version in ASSIGNED_VERSIONS
            yield store
        finally:
            await store.close()


async def lease_protocol(store: LeaseStore, fleet: Fleet) -> Coordinator | None:
    """How the application's workers share its leases, as its migration item says: under a
    leader (KCL 3.x: a Coordinator over its tables) or each taking its own (KCL 2.x: None).
    A new application (a table this process created, or an empty one) runs 3.x, as the KCL's
    first worker makes it; a table with leases and no migration item is a 2.x application's
    until an operator moves it (``shard-console leases migrate``)."""
    coordinator = Coordinator(store.table.client, store.table.name)
    migration = await coordinator.migration()
    if migration.version is None and (store.created or not await store.table.scan()):
        # Workers started together: the first made the table, the others find it empty.
        await coordinator.ensure()
        if not await coordinator.set_migration(V3, fleet.worker_id or "shard-console", migration):
            migration = await coordinator.migration()  # another worker wrote it first
        else:
            migration = replace(migration, version=V3)
    store.keeps_holder = migration.version in ASSIGNED_VERSIONS
    return coordinator if store.keeps_holder else None


def lease_ownership(
    store: LeaseStore, fleet: Fleet, coordinator: Coordinator | None = None
) -> OwnershipFactory:
    """A fleet's worker on ``store``: what a consumer in fleet mode is given; under the 3.x
    protocol when ``coordinator`` (:func:`lease_protocol`)."""

    def make(state: EngineState, events: EventLog) -> Ownership:
        common: dict[str, Any] = {
            "worker_id": fleet.worker_id,
            "failover": fleet.failover,
            "take_over": fleet.take_over,
            "create_companion": fleet.create,
        }
        if coordinator is not None:
            return AssignedOwnership(
                store, state, events, coordinator=coordinator,
                assignment_interval=fleet.assignment_interval, **common,
            )  # fmt: skip
        return LeaseOwnership(store, state, events, **common)

    return make


def pick_stream(
    streams: list[StreamRecord], wanted: str | None, where: str, *, required: bool = True
) -> StreamRecord | None:
    """The stream a command is about: ``wanted`` (a name or a key), or the only one there is
    (a usage error when there are several). ``wanted`` not there: a usage error, or None when
    not ``required`` (a lease table of a KCL application registers no stream)."""
    names = ", ".join(s.name for s in streams) or "none"
    if wanted is None:
        if len(streams) != 1:
            raise UsageError(f"{where} holds {len(streams)} streams ({names}): pass --stream")
        return streams[0]
    found = next((r for r in streams if wanted in (r.stream, r.name)), None)
    if found is None and required:
        raise UsageError(f"{where} holds no stream '{wanted}' (it has {names})")
    return found


def startup_error(exc: SourceError) -> ConsoleError:
    """What fails before anything is read: bad names, credentials, endpoints and flags, and an
    endpoint that keeps failing, are usage errors (exit 2); throttling that outlasts its wait
    (console.sources.base.describe_at_start) is a run error (exit 1): try again later."""
    from console.sources.base import EndpointUnreachableError, FatalSourceError, RetryableError

    if isinstance(exc, FatalSourceError | EndpointUnreachableError):
        return UsageError(str(exc))
    if isinstance(exc, RetryableError):
        return RunError(f"could not describe the stream: {exc}")
    return RunError(str(exc))


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
    fleet: Fleet | None = None,
) -> AsyncIterator[Consumer]:
    """A consumer of ``stream`` (a name or ARN, or a source made with :func:`make_source`),
    started (unless ``start=False``), stopped on the way out (batches in hand finished,
    checkpoints flushed).

    Credentials come from boto3's chain (``profile`` picks one). Checkpoints go to ``db``, an
    SQLite file, by default ``~/.local/share/shard-console/checkpoints.db``. The stream is
    described before the database is opened, so a wrong name or credentials write nothing.
    Raises :class:`~console.sources.base.SourceError` (the stream cannot be read) or
    :class:`~console.checkpoints.base.StoreError` (the database cannot be used).

    With ``fleet``, checkpoints and leases go to a KCL lease table in DynamoDB instead, shared
    with the other workers of the fleet; ``db`` is not used."""
    if isinstance(stream, str):
        aws = aws or AwsSettings(region=region, profile=profile, endpoint_url=endpoint_url)
        source = make_source(stream, aws, kind=kind, faults=faults)
    else:
        source = stream
    sink = as_processor(processor, source.stream)
    options = options or ConsumerOptions()
    async with source, contextlib.AsyncExitStack() as stack:
        info = await describe_at_start(source)
        dead_letter = None  # reached before anything is written: a bad one writes nothing
        if options.failure.park and options.dead_letter:
            dead_letter = await stack.enter_async_context(
                open_dead_letter(options.dead_letter, aws_of(source, aws))
            )
        store: CheckpointStore
        ownership: OwnershipFactory | None = None  # the database's lock
        if fleet is not None:
            leases = await stack.enter_async_context(
                open_lease_store(fleet, aws_of(source, aws), options.initial_position)
            )
            protocol = await lease_protocol(leases, fleet)
            store, ownership = leases, lease_ownership(leases, fleet, protocol)
        else:
            path = str(db) if db is not None else default_db_path()
            if db is None:
                # The default folder is ours to create, private, once the stream is known good.
                data_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
            store = await SqliteStore.open(path)
            stack.push_async_callback(store.close)
        parking = None
        if options.failure.park:
            parking = Parking(cast(ParkedStore, store), dead_letter)
        consumer = Consumer(source, store, sink, options, events, info, ownership, parking)
        try:
            if start:
                await consumer.start()
            yield consumer
        finally:
            await consumer.stop()


def aws_of(source: StreamSource, aws: AwsSettings | None) -> AwsSettings:
    """The AWS settings a source was made with (for the lease table's client)."""
    settings = getattr(source, "settings", None)
    return settings if isinstance(settings, AwsSettings) else aws or AwsSettings()


__all__ = [
    "Fleet",
    "ProcessorLike",
    "as_processor",
    "make_source",
    "open_consumer",
    "open_lease_store",
    "startup_error",
]
