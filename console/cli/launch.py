"""From settings to a running consumer: what ``run`` and ``demo`` share once their flags are
read. The source and its errors at start-up (usage errors, exit 2, or throttling that outlasts
its wait, exit 1), the consumer under the console or headless, and SIGINT/SIGTERM from the
loop's first step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from console.errors import RunError, UsageError
from console.settings import default

if TYPE_CHECKING:
    from console.cli.signals import SignalStop
    from console.cli.wiring import Fleet
    from console.engine.api import Engine
    from console.engine.consume.consumer import ConsumerOptions
    from console.engine.consume.poison import FailurePolicy
    from console.engine.events import EventLog
    from console.headless import LinePrinter
    from console.model import Position
    from console.observe.endpoint import Endpoint
    from console.processors import Processor
    from console.settings import Settings
    from console.sources.aws import AwsSettings
    from console.sources.base import StreamSource


def consumer_options(settings: Settings, initial: Position) -> ConsumerOptions:
    """The consumer's options: every setting that is one (same name), the initial position
    parsed, a processor timeout of 0 as none, the fan-out consumer's name decided."""
    from dataclasses import fields

    from console.engine.consume.consumer import ConsumerOptions
    from console.settings import Settings

    names = {f.name for f in fields(ConsumerOptions)} & {f.name for f in fields(Settings)}
    values = {name: getattr(settings, name) for name in names}
    values.update(
        initial_position=initial,
        processor_timeout=settings.processor_timeout or None,
        fan_out=fan_out_name(settings),
        failure=failure_policy(settings),
    )
    return ConsumerOptions(**values)


def failure_policy(settings: Settings) -> FailurePolicy:
    """``--retries``, ``--on-failure``, ``--max-record-age``; ``--dead-letter`` and
    ``--max-record-age`` mean something only with park."""
    from console.engine.consume.poison import FailurePolicy

    park = settings.on_failure == "park"
    for name in ("dead_letter", "max_record_age"):
        if getattr(settings, name) is not None and not park:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} needs --on-failure park (a blocked shard parks nothing)")
    return FailurePolicy(settings.retries, park, settings.max_record_age)


def fan_out_name(settings: Settings) -> str | None:
    """The stream consumer ``--fan-out`` reads as (None: polling); bad combinations are usage
    errors."""
    from console.sources.base import FatalSourceError
    from console.sources.fanout import DEFAULT_NAME, check_name

    if settings.fan_out is None:
        if settings.deregister_on_exit:
            raise UsageError("--deregister-on-exit needs --fan-out: there is no consumer to remove")
        return None
    if settings.deregister_on_exit and settings.lease_table:
        raise UsageError(
            "--deregister-on-exit with --lease-table would end the other workers' "
            "subscriptions: deregister the consumer once the whole fleet has stopped "
            "(aws kinesis deregister-stream-consumer)"
        )
    try:
        return check_name(settings.fan_out or settings.lease_table or DEFAULT_NAME)
    except FatalSourceError as exc:
        raise UsageError(f"--fan-out: {exc}") from None


def settle_heap() -> None:
    """Before the consumer starts reading: what was built so far (modules, botocore's models,
    the engine) lives as long as the process, so, once collected, the cyclic collector stops
    scanning it, and the young generation is collected every 10,000 allocations, not 700. A
    page of 10,000 records is about 30,000 new objects, nearly none in cycles; at the defaults
    the collector ran some 40 times a page, with full scans of everything start-up built.
    Measured on the P1 drain's read path (100,000 records): 0.30 s CPU with the defaults,
    0.19 s with both (bench/RESULTS.md)."""
    gc.collect()  # nothing dead is frozen for the life of the process
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


async def consume(
    source: StreamSource,
    db: str | None,
    settings: Settings,
    initial: Position,
    printer: LinePrinter,
    processor: Processor,
    stopper: SignalStop,
    events: EventLog | None = None,
) -> int:
    """Describe, open the database, then run the console or the headless loop over the
    consumer until it stops. Returns the exit code."""
    from console.cli.wiring import open_consumer, startup_error
    from console.engine.events import EventLog
    from console.headless import run_headless
    from console.sources.base import SourceError

    fleet = fleet_of(settings)
    events = events or EventLog()
    async with contextlib.AsyncExitStack() as stack:
        endpoint = await stack.enter_async_context(observed(settings, events))
        try:
            consumer = await stack.enter_async_context(
                open_consumer(
                    source,
                    processor,
                    db=db,
                    options=consumer_options(settings, initial),
                    events=events,
                    start=False,
                    fleet=fleet,
                )
            )
        except SourceError as exc:
            raise startup_error(exc) from None
        stopper.attach(consumer.request_stop)
        settle_heap()
        if endpoint is not None:
            endpoint.watch(consumer)
        if settings.no_ui:
            for event in consumer.events.since(0):  # what was said before we listened
                printer.event(event)
            consumer.events.subscribe(printer.event)
        info = consumer.state.info
        if info is not None and info.status in ("DISABLED", "DISABLING"):
            from console.engine.events import Level

            consumer.events.emit(
                "stream_disabled",
                f"stream '{info.name}' is {info.status.lower()}: it gets no new records; "
                "reading what it still holds (DynamoDB keeps it 24 h)",
                level=Level.WARNING,
            )
        try:
            if not settings.no_ui:
                from console.ui.app import run_tui

                return await run_tui(consumer, settings)
            return await run_headless(
                consumer,
                printer,
                duration=settings.duration,
                status_interval=settings.status_interval,
            )
        except SourceError as exc:
            raise RunError(f"could not start: {exc}") from None
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.asynccontextmanager
async def observed(settings: Settings, events: EventLog) -> AsyncIterator[Endpoint | None]:
    """``--metrics-port``: the HTTP endpoints, bound before anything starts (a port in use is
    a usage error) and serving until the consumer has stopped."""
    if settings.metrics_port is None:
        yield None
        return
    from console.observe.endpoint import Endpoint

    endpoint = Endpoint(settings.metrics_host, settings.metrics_port)
    await endpoint.open()
    events.emit(
        "metrics",
        f"metrics on {endpoint.url}/metrics; /healthz, /readyz, /status beside it",
        url=endpoint.url,
    )
    try:
        yield endpoint
    finally:
        await endpoint.close()


def fleet_of(settings: Settings) -> Fleet | None:
    """Fleet mode's settings, when ``--lease-table`` is given."""
    from console.cli.wiring import Fleet

    if not settings.lease_table:
        return None
    return Fleet(
        table=settings.lease_table,
        worker_id=settings.worker_id,
        failover=settings.failover_time,
        endpoint_url=settings.dynamodb_endpoint_url,
        create=not settings.no_create_table,
        take_over=settings.take_over,
        assignment_interval=settings.assignment_interval,
    )


def run_main(main: Callable[[SignalStop], Awaitable[int]], printer: LinePrinter) -> int:
    """Run ``main`` with SIGINT and SIGTERM handled from its first line: a signal before the
    consumer has started stops the start-up cleanly, exit 0 (see console.cli.signals)."""
    from console.cli.signals import SignalStop

    stopper = SignalStop(lambda text: printer.line("error", "forced_exit", text))

    async def wrapper() -> int:
        stopper.install()
        try:
            return await main(stopper)
        except asyncio.CancelledError:
            if stopper.interrupted is None:
                raise
            printer.line(
                "info",
                "stopped",
                f"{stopper.interrupted} during start-up: stopped before reading anything",
            )
            return 0
        finally:
            stopper.remove()

    return asyncio.run(wrapper())


def initial_position(settings: Settings) -> Position:
    from console.model import Position, PositionError

    try:
        return Position.parse_initial(settings.initial_position)
    except PositionError as exc:
        raise UsageError(str(exc)) from None


def check_ui(settings: Settings) -> None:
    """The theme must exist and the key bindings make sense (headless too: a configuration
    is refused whole, wherever it will be used), and the terminal must be one that draws,
    before anything starts. Headless with the bundled theme and no keys, nothing needs the
    checks, so the UI (a fifth of a second of imports) is not loaded."""
    if not settings.no_ui or settings.theme != default("theme"):
        from console.ui.theme import check_theme

        check_theme(settings.theme)
    if settings.keys:
        from console.ui.keymap import check_keymap

        check_keymap(settings.keys)
    if settings.no_ui:
        return
    # Textual draws on stderr, which leaves stdout free for a processor's output; under
    # textual-serve (shard-console serve) it draws to the browser instead.
    served = "web_driver" in os.environ.get("TEXTUAL_DRIVER", "")
    if not served and not sys.stderr.isatty():
        raise UsageError("the console needs a terminal: pass --no-ui to run headless")
    if not served and os.environ.get("TERM") == "dumb":
        raise UsageError(
            "the console cannot draw on a dumb terminal (TERM=dumb): pass --no-ui to run "
            "headless, or use a terminal that draws"
        )
    if settings.processor == "print" and sys.stdout.isatty():
        raise UsageError(
            "--processor print would write over the console: redirect stdout "
            "(> records.txt) or pass --no-ui"
        )


def source_for(stream: str, kind: str | None, aws: AwsSettings, settings: Settings) -> StreamSource:
    """The source ``stream`` names (console.cli.wiring.make_source); what is wrong with it, or
    with ``--inject-faults``, is a usage error."""
    from console.cli.wiring import make_source
    from console.sources.base import FatalSourceError
    from console.sources.faults import FaultInjector

    faults = FaultInjector.parse(settings.inject_faults) if settings.inject_faults else None
    try:
        aws = dataclasses.replace(aws, read_path=settings.read_path)
        source = make_source(stream, aws, kind=kind, faults=faults)
    except FatalSourceError as exc:
        raise UsageError(str(exc)) from None
    if settings.fan_out is not None and source.kind != "kinesis":
        raise UsageError(
            "--fan-out reads Kinesis Data Streams: DynamoDB Streams has no enhanced fan-out"
        )
    return source


@dataclass(frozen=True, slots=True)
class AttachOptions:
    stream: str | None
    scan_interval: float = default("scan_interval")
    lag_interval: float = default("lag_interval")


async def attach(
    settings: Settings, options: AttachOptions, printer: LinePrinter, stopper: SignalStop
) -> int:
    """The console (or headless lines) over a consumer this process did not start: a lease
    table's (a KCL application, a shard-console fleet) or a local database's."""
    from console.cli.wiring import Fleet, open_lease_store, startup_error
    from console.sources.aws import AwsSettings
    from console.sources.base import SourceError

    async with contextlib.AsyncExitStack() as stack:
        engine: Engine
        if settings.lease_table:
            from console.engine.observe.leases import AttachedLeases

            if not options.stream:
                raise UsageError("attach --lease-table needs --stream: the stream it leases")
            aws = AwsSettings(
                region=settings.region, profile=settings.profile, endpoint_url=settings.endpoint_url
            )
            source = source_for(options.stream, None, aws, settings)
            fleet = Fleet(
                settings.lease_table, endpoint_url=settings.dynamodb_endpoint_url, create=False
            )
            store = await stack.enter_async_context(
                open_lease_store(fleet, aws, create_companion=False)
            )
            await stack.enter_async_context(source)
            engine = AttachedLeases(
                store,
                source,
                read_only=settings.read_only,
                scan_interval=options.scan_interval,
                probe_interval=options.lag_interval,
                failover=settings.failover_time,
            )
        else:
            engine = await stack.enter_async_context(_attach_db(settings, options))
        try:
            await engine.start()
        except SourceError as exc:
            raise startup_error(exc) from None
        stopper.attach(engine.request_stop)
        if settings.no_ui:
            from console.headless import run_headless

            for event in engine.events.since(0):
                printer.event(event)
            engine.events.subscribe(printer.event)
            return await run_headless(
                engine,
                printer,
                duration=settings.duration,
                status_interval=settings.status_interval,
            )
        from console.ui.app import run_tui

        return await run_tui(engine, settings)
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.asynccontextmanager
async def _attach_db(settings: Settings, options: AttachOptions) -> AsyncIterator[Engine]:
    from console.checkpoints.sqlite import SqliteStore
    from console.cli.stores import stream_opener
    from console.cli.wiring import pick_stream
    from console.config import default_db_path
    from console.engine.observe.database import AttachedDb

    db = settings.db or default_db_path()
    store = await SqliteStore.open(db, create=False)
    try:
        record = pick_stream(await store.streams(), options.stream, f"database {db}")
        assert record is not None  # required
        stream = stream_opener(record, settings)
        yield AttachedDb(store, record, read_only=settings.read_only, stream=stream)
    finally:
        await store.close()
