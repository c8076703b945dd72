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
from typing import TYPE_CHECKING, Any

from console.cli.stores import open_store, print_rows, seconds, settings_of, store_flags
from console.engine.changes.database import WAIT
from console.errors import UsageError
from console.settings import CHANGE, READ, add_flags

if TYPE_CHECKING:
    from console.checkpoints.base import CheckpointStore, StreamRecord
    from console.engine.changes.plan import ControlRequest

# A change handed to a running consumer that had not applied it when --wait ran out: not an
# error (it stays queued and will be applied), not a success either.
EXIT_QUEUED = 3


JSON_HELP = "one JSON document, for scripts"
SHARD_HELP = "the shard's id, as checkpoints list shows it"


def _change_flags(p: argparse.ArgumentParser) -> None:
    store_flags(p, CHANGE)
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--force",
        action="store_true",
        help="a lease table: change a lease even while a KCL 3.x handoff of it is under way "
        "(clears its checkpointOwner: for a handoff stuck past its timeout)",
    )
    p.add_argument(
        "--wait",
        type=seconds,
        default=WAIT,
        metavar="SECONDS",
        help=f"how long to wait for a running consumer to apply it (default {WAIT:g})",
    )


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    cp = sub.add_parser("checkpoints", help="list checkpoints (the default) and their history")
    store_flags(cp, READ)
    cp.add_argument("--json", action="store_true", help=JSON_HELP)
    cp.set_defaults(handler=cmd_list)
    cp_sub = cp.add_subparsers(dest="what", metavar="list|history", parser_class=parser_class)
    listing = cp_sub.add_parser("list", help="one line per shard")
    store_flags(listing, READ, given_only=True)
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    listing.set_defaults(handler=cmd_list)
    history = cp_sub.add_parser("history", help="every change, newest first")
    history.add_argument("shard", nargs="?", metavar="SHARD", help="only this shard's entries")
    store_flags(history, READ, given_only=True)
    history.add_argument(
        "--limit", type=int, default=50, metavar="N", help="the newest N entries (default 50)"
    )
    history.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    history.set_defaults(handler=cmd_history)

    rewind = sub.add_parser("rewind", help="read a shard again from an earlier position")
    rewind.add_argument("shard", metavar="SHARD", help=SHARD_HELP)
    rewind.add_argument(
        "--to",
        required=True,
        metavar="TARGET",
        help="trim_horizon | latest | timestamp:ISO | -15m | sequence:N | checkpoint:ENTRY "
        "(an entry of checkpoints history: its entry column)",
    )
    _change_flags(rewind)
    rewind.set_defaults(handler=cmd_change, action="rewind")

    skip = sub.add_parser("skip", help="move a shard forward, or mark it done")
    skip.add_argument("shard", metavar="SHARD", help=SHARD_HELP)
    skip.add_argument(
        "--to",
        required=True,
        choices=("latest", "next-record", "done"),
        help="latest: only records from now on; next-record: past the record the processor "
        "fails on (a running consumer's); done: mark the shard finished, its children start",
    )
    _change_flags(skip)
    skip.set_defaults(handler=cmd_change, action="skip")

    for name, text in (("pause", "stop reading a shard"), ("resume", "read a paused shard")):
        p = sub.add_parser(name, help=text)
        p.add_argument("shard", metavar="SHARD", help=SHARD_HELP)
        _change_flags(p)
        p.set_defaults(handler=cmd_change, action=name)

    replay = sub.add_parser("replay", help="read every shard of the stream again from a time")
    replay.add_argument("--since", required=True, metavar="WHEN", help="ISO 8601 or -1h")
    _change_flags(replay)
    replay.set_defaults(handler=cmd_change, action="replay")

    undo = sub.add_parser("undo", help="take back a change (the last one by default)")
    undo.add_argument(
        "change",
        nargs="?",
        type=int,
        metavar="CHANGE",
        help="the change to take back: the change column of checkpoints history (default: "
        "the last change)",
    )
    _change_flags(undo)
    undo.set_defaults(handler=cmd_change, action="undo")

    info = sub.add_parser(
        "info", help="where config, data and themes live, and every setting and its source"
    )
    add_flags(info, "info")
    info.set_defaults(handler=cmd_info)


def cmd_list(args: argparse.Namespace) -> int:
    from console.model import format_ts

    async def main() -> int:
        async with open_store(args) as target:
            key = target.record.stream
            checkpoints = await target.store.load(key)
            shards = {s.shard_id: s for s in await target.store.shards(key)}
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
        async with open_store(args) as target:
            entries = await target.store.history(target.record.stream, args.shard, args.limit)
        rows = [
            {
                "entry": h.id,
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
        cols = ["entry", "at", "shard", "cause", "who", "from", "to", "status", "change", "note"]
        print_rows(rows, cols, args.json)
        return 0

    return asyncio.run(main())


async def _request(
    args: argparse.Namespace, store: CheckpointStore, record: StreamRecord
) -> ControlRequest:
    from console.engine.changes.plan import Action, ControlRequest, SkipTo, parse_target
    from console.engine.changes.service import checkpoint_position
    from console.identity import actor_name
    from console.model import Position, PositionError, parse_when

    actor = actor_name()
    action = Action(args.action)
    force = bool(getattr(args, "force", False))
    try:
        if action is Action.REWIND:
            target = parse_target(args.to)
            position = target.position
            if target.checkpoint_id is not None:
                position = await checkpoint_position(
                    store, record.stream, args.shard, target.checkpoint_id
                )
            return ControlRequest(action, args.shard, position=position, actor=actor, force=force)
        if action is Action.SKIP:
            return ControlRequest(
                action, args.shard, skip_to=SkipTo(args.to), actor=actor, force=force
            )
        if action in (Action.PAUSE, Action.RESUME):
            return ControlRequest(action, args.shard, actor=actor, force=force)
        if action is Action.REPLAY:
            since = Position.at_timestamp(parse_when(args.since))
            return ControlRequest(action, position=since, actor=actor, force=force)
        return ControlRequest(action, change_id=args.change, actor=actor, force=force)
    except PositionError as exc:
        raise UsageError(str(exc)) from None


def approved(args: argparse.Namespace, name: str | None = None, what: str = "stream") -> bool:
    """After the plan is shown: False (and said) for a dry run or a No; True to apply.
    ``name``: the operator types it (the ``what``'s name) instead of a yes."""
    if args.dry_run:
        print("dry run: nothing changed")
        return False
    if args.yes:
        return True
    if name is not None:
        ok = _ask(f"Type the {what}'s name ({name}) to apply:").strip() == name
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
    """One route, whatever the store: the change service's preview, the operator's yes (or
    the stream's name, for a lease table), then the change over the store's transport: a
    database's lock or its running consumer, or a lease table's fencing writes."""
    from console.engine.changes.plan import ControlError

    if settings_of(args).read_only:
        raise UsageError(f"read-only: '{args.action}' changes checkpoints and is refused")

    async def main() -> int:
        async with open_store(args, changes=True) as target:
            request = await _request(args, target.store, target.record)
            try:
                # The lock is taken only to look and, after the operator said yes, to apply:
                # never across the question, where it would keep a consumer from starting.
                print((await target.changes.preview(request)).text())
                if not approved(args, target.record.name if target.confirm_by_name else None):
                    return 0
                result = await target.changes.control(request)
            except ControlError as exc:
                raise UsageError(str(exc)) from None
        if not result.ok:
            raise UsageError(result.message)
        print(result.message)
        return EXIT_QUEUED if result.queued else 0

    return asyncio.run(main())


def cmd_info(args: argparse.Namespace) -> int:
    """Where things live, and every setting's value and where it came from (the settings'
    table: console.settings)."""
    from console import __version__
    from console.config import config_dir, data_dir, default_db_path
    from console.redact import REDACTOR
    from console.settings import config_path, flags_given, load, rows

    path, named = config_path(args.config, os.environ)
    missing = named and not path.is_file()
    # A named file that is not there: everything else is shown all the same, then said.
    loaded = load(flags_given(args), config=args.config, read_file=not missing)
    found = "read" if loaded.path is not None else ("missing" if missing else "none")
    lines = [
        f"shard-console {__version__}",
        f"config file     {path} ({found})",
        f"database        {loaded.settings.db or default_db_path()}",
        f"data folder     {data_dir()}",
        "logs            stderr (headless: --log-format text|json); the console shows events",
        f"user themes     {config_dir() / 'themes'}",
    ]
    try:
        from console.ui.theme import available_themes

        lines.append(f"themes          {', '.join(available_themes())}")
    except Exception as exc:  # a broken user theme must not hide the rest
        lines.append(f"themes          unavailable: {exc}")
    lines.append("settings        (flag > SHARD_CONSOLE_* > file > default)")
    for f, _ in rows():
        value = getattr(loaded.settings, f.name)
        source = loaded.sources.get(f.name, "default")
        lines.append(f"  {f.name:<22} {REDACTOR(repr(value)):<24} {source}")
    print("\n".join(lines))
    if missing:
        raise UsageError(f"config file {path} does not exist (the settings above are without it)")
    return 0
