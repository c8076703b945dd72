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
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.cli_stores import open_store, print_rows, settings_of, store_flags
from console.errors import UsageError

if TYPE_CHECKING:
    from console.checkpoints.base import CheckpointStore, StreamRecord
    from console.engine.control import ControlRequest, Plan
    from console.sources.base import StreamSource

# A change handed to a running consumer that had not applied it when --wait ran out: not an
# error (it stays queued and will be applied), not a success either.
EXIT_QUEUED = 3


def _change_flags(p: argparse.ArgumentParser) -> None:
    store_flags(p)
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
    store_flags(cp)
    cp.add_argument("--json", action="store_true")
    cp.set_defaults(handler=cmd_list)
    cp_sub = cp.add_subparsers(dest="what", metavar="list|history", parser_class=parser_class)
    listing = cp_sub.add_parser("list", help="one line per shard")
    store_flags(listing, given_only=True)
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    listing.set_defaults(handler=cmd_list)
    history = cp_sub.add_parser("history", help="every change, newest first")
    history.add_argument("shard", nargs="?", metavar="SHARD")
    store_flags(history, given_only=True)
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

    info = sub.add_parser("info", help="where config, data and themes live")
    info.add_argument("--db", metavar="PATH")
    info.add_argument("--config", metavar="FILE")
    info.set_defaults(handler=cmd_info)


def cmd_list(args: argparse.Namespace) -> int:
    from console.model import format_ts

    async def main() -> int:
        async with open_store(args) as (store, record, _):
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
        print_rows(rows, ["shard", "status", "position", "parents", "updated"], args.json)
        return 0

    return asyncio.run(main())


def cmd_history(args: argparse.Namespace) -> int:
    from console.model import format_ts

    async def main() -> int:
        async with open_store(args) as (store, record, _):
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
        print_rows(rows, cols, args.json)
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

    if settings_of(args).read_only:
        raise UsageError(f"read-only: '{args.action}' changes checkpoints and is refused")

    async def main() -> int:
        async with open_store(args, changes=True) as (store, record, source):
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
    from console.engine.attach_changes import holder_text
    from console.engine.control import ControlError, SkipTo, explain
    from console.engine.offline import apply_offline, plan_offline
    from console.engine.resolve import resolve_plan

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
    except (ControlError, LeaseMovedError) as exc:  # SourceError: the opener's (exit 2)
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


def cmd_info(args: argparse.Namespace) -> int:
    from console import __version__
    from console.config import config_dir, data_dir, default_config_path, default_db_path

    settings = settings_of(args)
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
