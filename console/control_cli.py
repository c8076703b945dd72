"""The control CLI: read checkpoints and history; rewind, skip, pause, resume, replay, undo.

A change goes through the same control path as the console's keys. With a consumer running on
the stream, it becomes a row in ``commands`` that the consumer applies between batches (within
a second or two); this command waits for the result and prints it. With none running, it takes
the stream's lock and applies the change to the store itself, in one transaction; the next
start honours it. ``--dry-run`` prints the plan and changes nothing; without ``--yes`` a change
asks first, and No is the default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.errors import UsageError

if TYPE_CHECKING:
    from console.checkpoints.base import CheckpointStore, StreamRecord
    from console.config import Settings
    from console.engine.control import ControlRequest, Plan
    from console.sources.base import StreamSource

# A change handed to a running consumer that had not applied it when --wait ran out: not an
# error (it stays queued and will be applied), not a success either.
EXIT_QUEUED = 3


def _store_flags(p: argparse.ArgumentParser, given_only: bool = False) -> None:
    """``given_only``: a sub-command's copy of its parent's flags, set only when given there,
    so ``checkpoints --db X list`` and ``checkpoints list --db X`` both work."""
    extra: dict[str, Any] = {"default": argparse.SUPPRESS} if given_only else {}
    p.add_argument(
        "--db", metavar="PATH", help="the checkpoint database (default: the usual one)", **extra
    )
    p.add_argument(
        "--stream", metavar="S", help="the stream, when the database holds several", **extra
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration file", **extra)
    p.add_argument(
        "--lease-table",
        metavar="TABLE",
        help="a fleet's (or a KCL application's) lease table in DynamoDB, instead of --db",
        **extra,
    )
    p.add_argument("--dynamodb-endpoint-url", metavar="URL", **extra)
    p.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="the stream's endpoint (with --lease-table, times are resolved by reading it)",
        **extra,
    )
    p.add_argument("--region", metavar="R", **extra)
    p.add_argument("--profile", metavar="P", **extra)


def _change_flags(p: argparse.ArgumentParser) -> None:
    _store_flags(p)
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--read-only", action="store_const", const=True, help="refuse (for scripts that must not)"
    )
    p.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for a running consumer to apply it (default 10)",
    )


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    cp = sub.add_parser("checkpoints", help="list checkpoints (the default) and their history")
    _store_flags(cp)
    cp.add_argument("--json", action="store_true")
    cp.set_defaults(handler=cmd_list)
    cp_sub = cp.add_subparsers(dest="what", metavar="list|history", parser_class=parser_class)
    listing = cp_sub.add_parser("list", help="one line per shard")
    _store_flags(listing, given_only=True)
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    listing.set_defaults(handler=cmd_list)
    history = cp_sub.add_parser("history", help="every change, newest first")
    history.add_argument("shard", nargs="?", metavar="SHARD")
    _store_flags(history, given_only=True)
    history.add_argument("--limit", type=int, default=50, metavar="N")
    history.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    history.set_defaults(handler=cmd_history)

    rewind = sub.add_parser("rewind", help="read a shard again from an earlier position")
    rewind.add_argument("shard", metavar="SHARD")
    rewind.add_argument(
        "--to",
        required=True,
        metavar="TARGET",
        help="trim_horizon | latest | timestamp:ISO | -15m | sequence:N | checkpoint:ID",
    )
    _change_flags(rewind)
    rewind.set_defaults(handler=cmd_change, action="rewind")

    skip = sub.add_parser("skip", help="move a shard forward, or mark it done")
    skip.add_argument("shard", metavar="SHARD")
    skip.add_argument("--to", required=True, choices=("latest", "next-record", "done"))
    _change_flags(skip)
    skip.set_defaults(handler=cmd_change, action="skip")

    for name, text in (("pause", "stop reading a shard"), ("resume", "read a paused shard")):
        p = sub.add_parser(name, help=text)
        p.add_argument("shard", metavar="SHARD")
        _change_flags(p)
        p.set_defaults(handler=cmd_change, action=name)

    replay = sub.add_parser("replay", help="read every shard of the stream again from a time")
    replay.add_argument("--since", required=True, metavar="WHEN", help="ISO 8601 or -1h")
    _change_flags(replay)
    replay.set_defaults(handler=cmd_change, action="replay")

    undo = sub.add_parser("undo", help="take back a change (the last one by default)")
    undo.add_argument("change", nargs="?", type=int, metavar="CHANGE_ID")
    _change_flags(undo)
    undo.set_defaults(handler=cmd_change, action="undo")

    leases = sub.add_parser(
        "leases", help="a lease table's leases, as the KCL (or a fleet) wrote them"
    )
    leases_sub = leases.add_subparsers(dest="what", metavar="list|show", parser_class=parser_class)
    lease_list = leases_sub.add_parser("list", help="one line per lease")
    _store_flags(lease_list)
    lease_list.add_argument("--json", action="store_true")
    lease_list.set_defaults(handler=cmd_leases)
    lease_show = leases_sub.add_parser("show", help="every attribute of one lease, and its history")
    lease_show.add_argument("shard", metavar="SHARD")
    _store_flags(lease_show)
    lease_show.add_argument("--json", action="store_true")
    lease_show.set_defaults(handler=cmd_leases)
    leases.set_defaults(handler=cmd_leases_usage)

    info = sub.add_parser("info", help="where config, data and themes live")
    info.add_argument("--db", metavar="PATH")
    info.add_argument("--config", metavar="FILE")
    info.set_defaults(handler=cmd_info)


def _settings(args: argparse.Namespace) -> Settings:
    from console.config import load_settings

    names = ("db", "read_only", "lease_table", "dynamodb_endpoint_url", "endpoint_url")
    flags = {name: getattr(args, name, None) for name in (*names, "region", "profile")}
    settings, _ = load_settings(flags, config=getattr(args, "config", None))
    return settings


def _existing_database(args: argparse.Namespace) -> str:
    from console.config import default_db_path

    db = _settings(args).db or default_db_path()
    if not Path(db).exists():
        raise UsageError(f"no database at {db}: pass --db with an existing database")
    return db


@contextlib.asynccontextmanager
async def _open(
    args: argparse.Namespace, changes: bool = False
) -> AsyncIterator[tuple[CheckpointStore, StreamRecord, StreamSource | None]]:
    """The store (a database, which must exist, or a lease table), the stream in it the
    command is about, and with a lease table the stream's source (to resolve times).
    ``changes``: the command writes (with a lease table, shard-console's table beside it is
    created to record it; a command that only reads creates nothing)."""
    settings = _settings(args)
    if settings.lease_table:
        async with _open_leases(args, settings, changes) as opened:
            yield opened
        return
    from console.checkpoints.sqlite import SqliteStore
    from console.wiring import pick_stream

    db = _existing_database(args)
    store = await SqliteStore.open(db, create=False)
    try:
        record = pick_stream(await store.streams(), args.stream, f"database {db}")
        if record is None:
            names = ", ".join(s.name for s in await store.streams()) or "none"
            raise UsageError(f"database {db} holds no stream '{args.stream}' (it has {names})")
        yield store, record, None
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _open_leases(
    args: argparse.Namespace, settings: Settings, changes: bool
) -> AsyncIterator[tuple[CheckpointStore, StreamRecord, StreamSource | None]]:
    """A lease table that must exist; shard-console's table beside it is created if absent
    when ``changes`` (every change is recorded there). A stream the fleet never registered
    (a KCL application's) is described from --stream."""
    from console.checkpoints.base import StreamRecord
    from console.model import Position
    from console.sources.aws import AwsSettings
    from console.sources.base import SourceError
    from console.wiring import Fleet, make_source, open_lease_store, pick_stream, startup_error

    assert settings.lease_table is not None
    aws = AwsSettings(
        region=settings.region, profile=settings.profile, endpoint_url=settings.endpoint_url
    )
    fleet = Fleet(settings.lease_table, endpoint_url=settings.dynamodb_endpoint_url, create=False)
    async with open_lease_store(fleet, aws, create_companion=changes) as store:
        where = f"lease table {settings.lease_table}"
        record = pick_stream(await store.streams(), args.stream, where)
        name = record.name if record is not None else args.stream
        source = make_source(name, aws, kind=record.source if record else None)
        try:
            async with source:
                if record is None:
                    info = await source.describe()
                    record = StreamRecord(
                        info.arn or name,
                        name,
                        source.kind,
                        Position.trim_horizon(),
                        time.time(),
                        info.retention_hours,
                    )
                yield store, record, source
        except SourceError as exc:
            raise startup_error(exc) from None


def _print(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        json.dump(rows, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return
    widths = {c: max([len(c)] + [len(str(r.get(c, "") or "")) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        print("  ".join(str(r.get(c, "") or "").ljust(widths[c]) for c in columns).rstrip())


def cmd_list(args: argparse.Namespace) -> int:
    from console.model import format_ts

    async def main() -> int:
        async with _open(args) as (store, record, _):
            checkpoints = await store.load(record.stream)
            shards = {s.shard_id: s for s in await store.shards(record.stream)}
        rows = []
        for sid in sorted(set(checkpoints) | set(shards)):
            cp = checkpoints.get(sid)
            shard = shards.get(sid)
            rows.append(
                {
                    "shard": sid,
                    "status": (cp.status.value + (", paused" if cp.paused else "")) if cp else "-",
                    "position": cp.position.encode() if cp else "-",
                    "parents": ",".join(shard.parents) if shard else "",
                    "closed": bool(shard and shard.is_closed),
                    "updated": format_ts(cp.updated_at) if cp and cp.updated_at else "",
                    "arrival": format_ts(cp.arrival) if cp and cp.arrival else "",
                }
            )
        _print(rows, ["shard", "status", "position", "parents", "updated"], args.json)
        return 0

    return asyncio.run(main())


def cmd_history(args: argparse.Namespace) -> int:
    from console.model import format_ts

    async def main() -> int:
        async with _open(args) as (store, record, _):
            entries = await store.history(record.stream, args.shard, args.limit)
        rows = [
            {
                "id": h.id,
                "at": format_ts(h.at),
                "shard": h.shard_id,
                "cause": h.cause,
                "who": h.actor,
                "from": h.old_position.encode() if h.old_position else "",
                "to": h.new_position.encode() if h.new_position else "",
                "status": f"{h.old_status or ''}->{h.new_status or ''}",
                "change": h.command_id,
                "note": h.note or "",
            }
            for h in entries
        ]
        cols = ["id", "at", "shard", "cause", "who", "from", "to", "status", "change", "note"]
        _print(rows, cols, args.json)
        return 0

    return asyncio.run(main())


async def _request(
    args: argparse.Namespace, store: CheckpointStore, record: StreamRecord
) -> ControlRequest:
    from console.engine.control import Action, ControlRequest, SkipTo, parse_target
    from console.engine.offline import checkpoint_position
    from console.identity import actor_name
    from console.model import Position, PositionError, parse_when

    actor = actor_name()
    action = Action(args.action)
    try:
        if action is Action.REWIND:
            target = parse_target(args.to)
            position = target.position
            if target.checkpoint_id is not None:
                position = await checkpoint_position(
                    store, record.stream, args.shard, target.checkpoint_id
                )
            return ControlRequest(action, args.shard, position=position, actor=actor)
        if action is Action.SKIP:
            return ControlRequest(action, args.shard, skip_to=SkipTo(args.to), actor=actor)
        if action in (Action.PAUSE, Action.RESUME):
            return ControlRequest(action, args.shard, actor=actor)
        if action is Action.REPLAY:
            since = Position.at_timestamp(parse_when(args.since))
            return ControlRequest(action, position=since, actor=actor)
        return ControlRequest(action, change_id=args.change, actor=actor)
    except PositionError as exc:
        raise UsageError(str(exc)) from None


def _show_plan(plan: Plan) -> None:
    from console.engine.control import explain

    print(explain(plan))


def _approved(args: argparse.Namespace, name: str | None = None) -> bool:
    """After the plan is shown: False (and said) for a dry run or a No; True to apply.
    ``name``: the operator types it (the stream's) instead of a yes."""
    if args.dry_run:
        print("dry run: nothing changed")
        return False
    if args.yes:
        return True
    if name is not None:
        ok = _ask(f"Type the stream's name ({name}) to apply:").strip() == name
    else:
        ok = _ask("Apply? [y/N]").strip().lower() in ("y", "yes")
    if not ok:
        print("nothing changed")
    return ok


def _ask(prompt: str, ask: Callable[[str], str] = input) -> str:
    if not sys.stdin.isatty():
        raise UsageError("no terminal to confirm on: pass --yes (or --dry-run to only look)")
    return ask(f"{prompt} ")


def cmd_change(args: argparse.Namespace) -> int:
    from console.engine.control import ControlError, SkipTo
    from console.engine.offline import apply_if_free, plan_offline

    if _settings(args).read_only:
        raise UsageError(f"read-only: '{args.action}' changes checkpoints and is refused")

    async def main() -> int:
        async with _open(args, changes=True) as (store, record, source):
            request = await _request(args, store, record)
            if store.shared:
                return await _change_leases(args, store, record, request, source)
            try:
                # The lock is held only to look and, after the operator said yes, to apply:
                # never across the question, where it would keep a consumer from starting.
                running = not await _free(store, record.stream)
                if not (running and request.skip_to is SkipTo.NEXT_RECORD):
                    _show_plan(await plan_offline(store, record, request))
                if not _approved(args):
                    return 0
                # A consumer holds the stream (or has just started): it applies it.
                result = await apply_if_free(store, record, request)
                if result is not None:
                    print(f"applied as change #{result.command_id}; the next start honours it")
                    return 0
            except ControlError as exc:
                raise UsageError(str(exc)) from None
            return await _send(store, record, request, args.wait)

    return asyncio.run(main())


async def _change_leases(
    args: argparse.Namespace,
    store: CheckpointStore,
    record: StreamRecord,
    request: ControlRequest,
    source: StreamSource | None,
) -> int:
    """A lease table is changed from here, whoever runs: each lease gets a fencing write, so
    its holder drops it at its next renewal and the next taker reads from the new checkpoint.
    The plan shows who holds each lease; if a holder changes before the write, nothing is
    written. The stream's name is typed to confirm."""
    from console.checkpoints.leases.coordinator import stream_name
    from console.checkpoints.leases.store import LeaseMovedError, LeaseStore
    from console.engine.attach import holder_text
    from console.engine.control import ControlError, SkipTo, explain
    from console.engine.offline import apply_offline, plan_offline
    from console.engine.resolve import resolve_plan
    from console.sources.base import SourceError

    assert isinstance(store, LeaseStore)
    try:
        if request.skip_to is SkipTo.NEXT_RECORD:
            raise ControlError(
                "skip --to next-record needs the console of the worker that holds the shard: "
                "only it knows which record the processor fails on"
            )
        plan = await plan_offline(store, record, request)
        if source is not None:
            plan = await resolve_plan(plan, source)
        leases = await store.table.leases(stream_name(record.stream))
        holders = {lease.shard_id: holder_text(lease, False) for lease in leases}
        print(explain(plan, holders, no_holder=holder_text(None, False)))
        if not _approved(args, name=record.name):
            return 0
        shown: dict[str, str | None] = {lease.shard_id: lease.owner for lease in leases}
        for change in plan.changes:  # no lease yet: it must still have none, or nobody's
            shown.setdefault(change.checkpoint.shard_id, None)
        with store.expecting(shown):
            result = await apply_offline(store, record, request, source)
    except (ControlError, LeaseMovedError, SourceError) as exc:
        raise UsageError(str(exc)) from None
    print(
        f"applied as change #{result.command_id}: the worker holding each lease drops it at "
        "its next renewal, and the next taker reads from the new checkpoint"
    )
    return 0


async def _free(store: CheckpointStore, stream: str) -> bool:
    """Whether no consumer holds the stream right now."""
    from console.checkpoints.base import StoreLockedError

    try:
        await store.acquire(stream)
    except StoreLockedError:
        return False
    await store.release(stream)
    return True


async def _send(
    store: CheckpointStore, record: StreamRecord, request: ControlRequest, wait: float
) -> int:
    """A consumer runs: hand it the command and wait for its verdict."""
    from console.engine.offline import send_command

    command_id, command = await send_command(store, record, request, wait)
    if command is not None:
        if command.state == "applied":
            print(f"applied by the running consumer as change #{command_id}: {command.result}")
            return 0
        raise UsageError(f"the running consumer refused it: {command.result}")
    print(
        f"command #{command_id} is queued, not applied yet: the running consumer applies it "
        "between batches (see: shard-console checkpoints history)"
    )
    return EXIT_QUEUED


def cmd_leases_usage(args: argparse.Namespace) -> int:
    raise UsageError("leases needs a sub-command: list, or show SHARD")


def cmd_leases(args: argparse.Namespace) -> int:
    from console.checkpoints.leases.coordinator import stream_name
    from console.checkpoints.leases.items import lease_of, plain

    if not _settings(args).lease_table:
        raise UsageError("leases needs --lease-table: the application's lease table")

    async def main() -> int:
        async with _open(args) as (store, record, _):
            table = store.table  # type: ignore[attr-defined]
            items = await table.scan()
            name = stream_name(record.stream)
            pairs = [(item, lease) for item in items if (lease := lease_of(item, name))]
            if args.what == "show":
                found = [(i, lease) for i, lease in pairs if lease.shard_id == args.shard]
                if not found:
                    raise UsageError(f"lease table {table.name} has no lease for {args.shard}")
                item, _ = found[0]
                history = await store.history(record.stream, args.shard, 10)
                doc: dict[str, Any] = {
                    "lease": plain(item),
                    "history": [
                        f"#{h.id} {h.cause} by {h.actor}: "
                        f"{h.old_position.encode() if h.old_position else '-'} -> "
                        f"{h.new_position.encode() if h.new_position else '-'}"
                        for h in history
                    ],
                }
                if args.json:
                    json.dump(doc, sys.stdout, indent=1, default=str)
                    sys.stdout.write("\n")
                else:
                    for key, value in sorted(doc["lease"].items()):
                        print(f"{key:<34} {value}")
                    for line in doc["history"]:
                        print(f"history  {line}")
                return 0
        rows = [
            {
                "shard": lease.shard_id,
                "owner": lease.owner or "",
                "counter": lease.counter,
                "checkpoint": lease.checkpoint + (f"/{lease.sub}" if lease.sub else ""),
                "parents": ",".join(lease.parents),
                "children": ",".join(lease.children),
                "handoff": lease.checkpoint_owner or "",
            }
            for _, lease in sorted(pairs, key=lambda p: p[1].shard_id)
        ]
        cols = ["shard", "owner", "counter", "checkpoint", "parents", "children", "handoff"]
        _print(rows, cols, args.json)
        return 0

    return asyncio.run(main())


def cmd_info(args: argparse.Namespace) -> int:
    from console import __version__
    from console.config import config_dir, data_dir, default_config_path, default_db_path

    settings = _settings(args)
    config = Path(args.config) if args.config else default_config_path()
    themes_dir = config_dir() / "themes"
    lines = [
        f"shard-console {__version__}",
        f"config file     {config} ({'found' if config.is_file() else 'none'})",
        f"database        {settings.db or default_db_path()}",
        f"data folder     {data_dir()}",
        "logs            stderr (headless: --log-format text|json); the console shows events",
        f"user themes     {themes_dir}",
    ]
    try:
        from console.ui.theme import available_themes

        lines.append(f"themes          {', '.join(available_themes())}")
    except Exception as exc:  # a broken user theme must not hide the rest
        lines.append(f"themes          unavailable: {exc}")
    env = [k for k in sorted(os.environ) if k.startswith("SHARD_CONSOLE_")]
    lines.append(f"environment     {', '.join(env) or 'no SHARD_CONSOLE_* set'}")
    print("\n".join(lines))
    return 0
