"""What the commands that read or change checkpoints share: the store flags, the store and the
stream a command is about (a database, or a lease table and the stream's source), and a table
printed for people or as JSON. Heavy imports happen inside, so ``--help`` stays instant."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.errors import UsageError

if TYPE_CHECKING:
    from console.checkpoints.base import CheckpointStore, StreamRecord
    from console.engine.changes.service import ChangeService
    from console.settings import Settings
    from console.sources.base import StreamSource


def seconds(text: str) -> float:
    """An argparse type: a number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds")
    return value


def store_flags(p: argparse.ArgumentParser, command: str, given_only: bool = False) -> None:
    """``--stream`` and the settings ``command`` takes (console.settings). ``given_only``: a
    sub-command's copy of its parent's flags, set only when given there, so
    ``checkpoints --db X list`` and ``checkpoints list --db X`` both work."""
    from console.settings import add_flags

    extra: dict[str, Any] = {"default": argparse.SUPPRESS} if given_only else {}
    p.add_argument(
        "--stream", metavar="S", help="the stream, when the store holds several", **extra
    )
    add_flags(p, command, given_only=given_only)


def settings_of(args: argparse.Namespace) -> Settings:
    from console.settings import flags_given, load_settings

    return load_settings(flags_given(args), config=getattr(args, "config", None))[0]


def existing_database(args: argparse.Namespace) -> str:
    from console.config import default_db_path

    db = settings_of(args).db or default_db_path()
    if not Path(db).exists():
        raise UsageError(f"no database at {db}: pass --db with an existing database")
    return db


@dataclass(frozen=True, slots=True)
class Target:
    """What a command reads or changes: the store, the stream in it, the stream's source (with
    a lease table: times are resolved by reading it), and the change service over the
    transport this store calls for (console.engine.changes)."""

    store: CheckpointStore
    record: StreamRecord
    source: StreamSource | None
    changes: ChangeService
    # A change to a lease table touches leases other processes hold: the operator types the
    # stream's name to confirm, not a yes.
    confirm_by_name: bool = False


@contextlib.asynccontextmanager
async def open_store(args: argparse.Namespace, changes: bool = False) -> AsyncIterator[Target]:
    """The store (a database, which must exist, or a lease table) and the stream in it the
    command is about. ``changes``: the command writes (with a lease table, shard-console's
    table beside it is created to record it; a command that only reads creates nothing)."""
    settings = settings_of(args)
    if settings.lease_table:
        async with _open_leases(args, settings, changes) as opened:
            yield opened
        return
    from console.checkpoints.sqlite import SqliteStore
    from console.cli.wiring import pick_stream
    from console.engine.changes.database import WAIT, DatabaseTransport
    from console.engine.changes.service import ChangeService

    db = existing_database(args)
    store = await SqliteStore.open(db, create=False)
    try:
        record = pick_stream(await store.streams(), args.stream, f"database {db}")
        assert record is not None  # required
        transport = DatabaseTransport(
            store, record, wait=getattr(args, "wait", WAIT), stream=stream_opener(record, settings)
        )
        yield Target(store, record, None, ChangeService(transport))
    finally:
        await store.close()


def stream_opener(record: StreamRecord, settings: Settings) -> Any:
    """Opens the database's stream when a change needs to read it (a sequence number checked
    against its shard): the endpoint, region and profile as given, the region of its ARN."""
    from console.cli.wiring import make_source, startup_error
    from console.sources.aws import AwsSettings
    from console.sources.base import SourceError

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[StreamSource]:
        parts = record.stream.split(":")
        region = settings.region or (parts[3] if record.stream.startswith("arn:") else None)
        aws = AwsSettings(
            region=region, profile=settings.profile, endpoint_url=settings.endpoint_url
        )
        # A Kinesis stream by its name (emulators know no ARN), a DynamoDB one by its ARN.
        named = record.name if record.source == "kinesis" else record.stream
        try:
            async with make_source(named, aws, kind=record.source) as source:
                yield source
        except SourceError as exc:  # no credentials, an unknown profile: said, nothing written
            from console.engine.changes.plan import ControlError

            raise ControlError(
                f"could not read stream {record.name} to check the change ({startup_error(exc)}): "
                "pass --endpoint-url, --region or --profile to reach it"
            ) from None

    return opened


@contextlib.asynccontextmanager
async def _open_leases(
    args: argparse.Namespace, settings: Settings, changes: bool
) -> AsyncIterator[Target]:
    """A lease table that must exist; shard-console's table beside it is created if absent
    when ``changes`` (every change is recorded there). A stream the fleet never registered
    (a KCL application's) is described from --stream."""
    from console.cli.wiring import Fleet, make_source, open_lease_store, pick_stream, startup_error
    from console.engine.changes.fence import FenceTransport
    from console.engine.changes.service import ChangeService
    from console.engine.observe.attached import stream_record_of
    from console.sources.aws import AwsSettings
    from console.sources.base import SourceError, describe_at_start

    assert settings.lease_table is not None
    aws = AwsSettings(
        region=settings.region, profile=settings.profile, endpoint_url=settings.endpoint_url
    )
    fleet = Fleet(settings.lease_table, endpoint_url=settings.dynamodb_endpoint_url, create=False)
    async with contextlib.AsyncExitStack() as stack:
        try:  # no region, bad credentials, an unknown stream: one line, exit 2
            store = await stack.enter_async_context(
                open_lease_store(fleet, aws, create_companion=changes)
            )
            where = f"lease table {settings.lease_table}"
            record = pick_stream(await store.streams(), args.stream, where, required=False)
            name = record.name if record is not None else args.stream
            source = await stack.enter_async_context(
                make_source(name, aws, kind=record.source if record else None)
            )
            if record is None:  # a KCL application's: described now
                described = await describe_at_start(source)
                record, _ = await stream_record_of(store, source, described)
        except SourceError as exc:
            raise startup_error(exc) from None
        transport = FenceTransport(store, record, source)
        yield Target(store, record, source, ChangeService(transport), confirm_by_name=True)


def print_rows(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        json.dump(rows, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return
    widths = {c: max([len(c)] + [len(str(r.get(c, "") or "")) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        print("  ".join(str(r.get(c, "") or "").ljust(widths[c]) for c in columns).rstrip())
