"""The commands for a consumer this process did not start: ``attach`` (the console over a lease
table or a local database; console.cli.launch.attach), ``serve`` (that console in a browser, one
attach per page; console.web.server) and ``leases list|show`` (a lease table as the KCL, or a
fleet, wrote it)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.cli import launch
from console.cli.stores import open_store, print_rows, settings_of, store_flags
from console.errors import RunError, UsageError
from console.redact import REDACTOR
from console.settings import (
    ATTACH,
    LEASES,
    SERVE,
    Settings,
    add_flags,
    flag_of,
    flags_given,
    load_settings,
)

if TYPE_CHECKING:
    from console.cli.signals import SignalStop


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    attach = sub.add_parser(
        "attach",
        help="the console over a consumer this process did not start: a KCL application or a "
        "shard-console fleet (--lease-table), or a local consumer (--db); consumes nothing",
    )
    _stream_flag(attach)
    add_flags(attach, ATTACH)
    attach.set_defaults(handler=cmd_attach)

    serve = sub.add_parser(
        "serve",
        help="the console in a browser: each page is an attach of its own (--db or "
        "--lease-table), read-only unless --allow-changes",
    )
    _stream_flag(serve)
    add_flags(serve, SERVE)
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDR",
        help="address to listen on (default 127.0.0.1; any other needs a token)",
    )
    serve.add_argument("--port", type=int, default=8566, metavar="PORT", help="default 8566")
    serve.add_argument(
        "--token",
        metavar="TOKEN",
        help="every request must carry it (?token=, a cookie, or a bearer header); "
        "default $SHARD_CONSOLE_TOKEN; required off loopback",
    )
    serve.add_argument(
        "--allow-changes",
        action="store_true",
        help="let the pages rewind, skip, pause and undo (default: read-only)",
    )
    serve.set_defaults(handler=cmd_serve)

    leases = sub.add_parser(
        "leases", help="a lease table's leases, as the KCL (or a fleet) wrote them"
    )
    leases_sub = leases.add_subparsers(
        dest="what", metavar="list|show|migrate|move", parser_class=parser_class
    )
    lease_list = leases_sub.add_parser("list", help="one line per lease")
    store_flags(lease_list, LEASES)
    lease_list.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    lease_list.set_defaults(handler=cmd_leases)
    lease_show = leases_sub.add_parser("show", help="every attribute of one lease, and its history")
    lease_show.add_argument("shard", metavar="SHARD", help="the lease's shard id")
    store_flags(lease_show, LEASES)
    lease_show.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    lease_show.set_defaults(handler=cmd_leases)
    migrate = leases_sub.add_parser(
        "migrate",
        help="move the application between the KCL 2.x protocol (each worker takes its own "
        "leases) and the 3.x one (a leader assigns them), by the KCL's own migration states",
    )
    migrate.add_argument("--to", required=True, choices=("3x", "2x"), help="the protocol")
    _writer_flags(migrate)
    migrate.set_defaults(handler=cmd_leases_migrate)
    move = leases_sub.add_parser(
        "move",
        help="KCL 3.x: hand a lease to a worker: its holder finishes its batch, checkpoints, and "
        "lets go (a graceful handoff, as the leader makes them)",
    )
    move.add_argument("shard", metavar="SHARD", help="the lease's shard id")
    move.add_argument("--to", required=True, metavar="WORKER", help="the worker to hand it to")
    _writer_flags(move)
    move.set_defaults(handler=cmd_leases_move)
    leases.set_defaults(handler=cmd_leases_usage)


def _writer_flags(p: argparse.ArgumentParser) -> None:
    """A ``leases`` command that writes: the table's flags, and its confirmation's."""
    store_flags(p, LEASES)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--dry-run", action="store_true", help="say the move, change nothing")


def _stream_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stream",
        metavar="STREAM",
        help="the stream (needed with --lease-table; with --db when it holds several)",
    )


def _settings(args: argparse.Namespace) -> Settings:
    """attach's and serve's settings: a lease table or a database, not both."""
    settings = load_settings(flags_given(args), config=args.config)[0]
    if args.lease_table is not None and args.db is not None:
        raise UsageError("--lease-table and --db name two consumers: pass one")
    return settings


def cmd_serve(args: argparse.Namespace) -> int:
    import os
    import shlex
    import signal

    from console.observe.endpoint import bind_error
    from console.web.server import MIN_TOKEN, ConsoleServer, host_error, is_loopback

    # Out of the environment, so no page's attach inherits it.
    env_token = os.environ.pop("SHARD_CONSOLE_TOKEN", None)
    token = args.token or env_token or None
    problem = host_error(args.host)
    if problem is not None:
        raise UsageError(problem)
    if token is not None and len(token) < MIN_TOKEN:
        raise UsageError(
            f"the token is {len(token)} character(s): use one of {MIN_TOKEN} or more, as from "
            "python3 -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    if token is None and not is_loopback(args.host):
        raise UsageError(
            f"serving on {args.host} needs a token: pass --token or set SHARD_CONSOLE_TOKEN "
            "(or serve on 127.0.0.1)"
        )
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, not {args.port}")
    _check_target(args)
    argv = served_argv(args)
    if token is not None:
        REDACTOR.add(token)
    # Each page's attach draws the console, whatever the environment or a config file say of
    # --no-ui (the environment wins over the file; textual-serve passes ours on).
    os.environ["SHARD_CONSOLE_NO_UI"] = "0"
    where = args.lease_table or args.db or "the default database"
    server = ConsoleServer(
        shlex.join(argv),
        host=args.host,
        port=args.port,
        token=token,
        title=f"shard-console: {where}",
    )

    def bound(url: str) -> None:
        mode = "changes allowed" if args.allow_changes else "read-only"
        need = "; open it with ?token=TOKEN" if token else ""
        print(f"shard-console serve: the console of {where} at {url}/ ({mode}){need}", flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await server.run(stop, bound)

    try:
        asyncio.run(main())
    except OSError as exc:
        raise UsageError(bind_error(exc, args.host, args.port, ("--host", "--port"))) from None
    return 0


def served_argv(args: argparse.Namespace) -> list[str]:
    """The attach each page runs: serve's flags passed on (every setting serve takes is
    attach's too), read-only unless allowed."""
    argv = [sys.executable, "-m", "console", "attach"]
    for name in ("stream", "config", *(n for n, v in flags_given(args).items() if v is not None)):
        value = getattr(args, name, None)
        if value is not None:
            argv += [flag_of(name), str(value)]
    if not args.allow_changes:
        argv.append("--read-only")
    return argv


def _check_target(args: argparse.Namespace) -> None:
    """What a page would attach to must be there now, rather than fail in every page."""
    from console.config import default_db_path

    settings = _settings(args)
    if settings.lease_table:
        if not args.stream:
            raise UsageError("serve --lease-table needs --stream: the stream it leases")
        return
    db = settings.db or default_db_path()
    if not Path(db).exists():
        raise UsageError(
            f"no database at {db}: pass --db with a consumer's database, or --lease-table"
        )


def cmd_attach(args: argparse.Namespace) -> int:
    from console.cli.signals import before_the_loop

    with before_the_loop():
        return _cmd_attach(args)


def _cmd_attach(args: argparse.Namespace) -> int:
    from console.headless import LinePrinter

    settings = _settings(args)
    launch.check_ui(settings)
    if not settings.lease_table:
        from console.config import default_db_path

        db = settings.db or default_db_path()
        if not Path(db).exists():
            raise UsageError(
                f"no database at {db}: pass --db with a consumer's database, or --lease-table"
            )
    options = launch.AttachOptions(args.stream, settings.scan_interval, settings.lag_interval)
    printer = LinePrinter(settings.log_format)

    async def main(stopper: SignalStop) -> int:
        return await launch.attach(settings, options, printer, stopper)

    return launch.run_main(main, printer)


def cmd_leases_usage(args: argparse.Namespace) -> int:
    raise UsageError(
        "leases needs a sub-command: list, show SHARD, migrate --to 3x|2x, or move SHARD --to W"
    )


def cmd_leases_migrate(args: argparse.Namespace) -> int:
    """The application's migration item moved one step of the KCL's state machine: to 3.x,
    2X (or none) -> 3X_WITH_ROLLBACK -> 3X, the table's ``leaseOwner`` index added first; to
    2.x, 3X_WITH_ROLLBACK -> 2X (3X is final for the KCL: its workers would keep following a
    leader). shard-console's workers read it when they start."""
    import getpass
    import socket

    from console.checkpoints.leases import Coordinator, LeaseTableError, moved_version
    from console.cli.control import approved
    from console.cli.wiring import Fleet, open_lease_store
    from console.sources.aws import AwsSettings

    settings = settings_of(args)
    if not settings.lease_table:
        raise UsageError("leases migrate needs --lease-table: the application's lease table")
    aws = AwsSettings(
        region=settings.region, profile=settings.profile, endpoint_url=settings.endpoint_url
    )
    fleet = Fleet(settings.lease_table, endpoint_url=settings.dynamodb_endpoint_url, create=False)

    async def main() -> int:
        async with open_lease_store(fleet, aws, create_companion=False) as store:
            coordinator = Coordinator(store.table.client, store.table.name)
            seen = await coordinator.migration()
            try:
                target = moved_version(seen.version, args.to)
            except LeaseTableError as exc:
                raise UsageError(f"lease table {store.table.name}: {exc}") from None
            was = seen.version or "no migration item (a KCL 2.x application)"
            print(f"lease table {store.table.name}: {was} -> {target}")
            if not approved(args, store.table.name, "lease table"):
                return 0
            if args.to == "3x" and not await store.table.has_owner_index():
                print("adding the LeaseOwnerToLeaseKeyIndex index (minutes on a large table)")
                await store.table.add_owner_index()
            await coordinator.ensure()
            who = f"shard-console leases migrate ({getpass.getuser()}@{socket.gethostname()})"
            if not await coordinator.set_migration(target, who, seen):
                raise RunError("the migration item changed meanwhile: nothing written; run again")
            print(
                f"lease table {store.table.name} is at {target}: shard-console workers started "
                "from now on follow it (running ones when restarted)"
            )
            return 0

    return asyncio.run(main())


def cmd_leases_move(args: argparse.Namespace) -> int:
    """A lease handed to a worker the operator names, by the KCL 3.x's own graceful handoff
    (unowned: assigned outright); recorded in the history. Refused under KCL 2.x, where a
    worker's taker would steal it back to keep its share."""
    import getpass
    import socket
    import time

    from console.checkpoints.leases import (
        ASSIGNED_VERSIONS,
        Coordinator,
        LeaseStore,
        checkpoint_of,
        stream_name,
    )
    from console.cli.control import approved
    from console.model import HistoryEntry

    if not settings_of(args).lease_table:
        raise UsageError("leases move needs --lease-table: the application's lease table")

    async def main() -> int:
        async with open_store(args, changes=True) as target:
            store, record = target.store, target.record
            assert isinstance(store, LeaseStore)  # --lease-table
            table = store.table
            migration = await Coordinator(table.client, table.name).migration()
            if migration.version not in ASSIGNED_VERSIONS:
                raise UsageError(
                    f"lease table {table.name} runs the KCL 2.x protocol: each worker takes its "
                    "own leases, and one given a lease beyond its share gives it up again; "
                    "`leases migrate --to 3x` first"
                )
            await store.leases(record.stream)  # the table's keys (multi-stream ones too)
            lease = await table.get(store.lease_key(args.shard), stream_name(record.stream))
            if lease is None:
                raise UsageError(f"lease table {table.name} has no lease for {args.shard}")
            if lease.finished:
                raise UsageError(f"{args.shard} is finished (SHARD_END): nobody reads it")
            if lease.checkpoint_owner is not None:
                raise UsageError(
                    f"{args.shard} is being handed from {lease.checkpoint_owner} to "
                    f"{lease.owner}: move it once that ends"
                )
            if lease.owner == args.to:
                print(f"{args.shard} is {args.to}'s already: nothing to do")
                return 0
            rows = {r.worker: r for r in await Coordinator(table.client, table.name).metric_rows()}
            row = rows.get(args.to)
            how = (
                f"{lease.owner} finishes its batch, checkpoints, and hands it to {args.to}"
                if lease.owner
                else f"nobody holds it: assigned to {args.to} outright"
            )
            print(f"{args.shard}: {how}")
            if row is None or not row.fresh(time.time()):
                print(
                    f"warning: {args.to} has no fresh metric row: it may not be running; a lease "
                    "it does not renew expires and moves on"
                )
            print("the leader may move it again later, to keep the fleet balanced")
            if not approved(args, table.name, "lease table"):
                return 0
            before = lease.owner
            ok = (
                await table.hand_off(lease, args.to)
                if before is not None
                else await table.assign(lease, args.to)
            )
            if not ok:
                raise RunError(f"{args.shard} changed meanwhile: nothing written; run again")
            position = checkpoint_of(lease).position
            who = f"{getpass.getuser()}@{socket.gethostname()}"
            await store.companion.add_history(
                record.stream,
                [
                    HistoryEntry(
                        args.shard, "move", who, position, None, position, None,
                        note=f"lease moved from {before or 'nobody'} to {args.to}",
                        at=time.time(),
                    )
                ],
            )  # fmt: skip
            back = f"shard-console leases move {args.shard} --to {before}" if before else None
            print(f"{args.shard} goes to {args.to}" + (f"; to undo: {back}" if back else ""))
            return 0

    return asyncio.run(main())


def cmd_leases(args: argparse.Namespace) -> int:
    from console.checkpoints.leases import LeaseStore, MalformedLease, lease_of, plain, stream_name

    if not settings_of(args).lease_table:
        raise UsageError("leases needs --lease-table: the application's lease table")

    def read(item: dict[str, Any], name: str) -> tuple[str, Any] | None:
        """(shard id, the lease or why the item is not a valid one), for the stream's items."""
        try:
            lease = lease_of(item, name)
        except MalformedLease as bad:
            return bad.shard_id, bad
        return (lease.shard_id, lease) if lease is not None else None

    async def main() -> int:
        async with open_store(args) as target:
            store, record = target.store, target.record
            assert isinstance(store, LeaseStore)  # --lease-table
            table = store.table
            items = await table.scan()
            name = stream_name(record.stream)
            found = [(item, got) for item in items if (got := read(item, name)) is not None]
            if args.what == "show":
                mine = [(i, got) for i, got in found if got[0] == args.shard]
                if not mine:
                    raise UsageError(f"lease table {table.name} has no lease for {args.shard}")
                item, (_, lease) = mine[0]
                history = await store.history(record.stream, args.shard, 10)
                doc: dict[str, Any] = {
                    "lease": plain(item),
                    "malformed": lease.reason if isinstance(lease, MalformedLease) else None,
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
                    if doc["malformed"] is not None:
                        print(f"{'malformed':<34} {doc['malformed']}")
                    for line in doc["history"]:
                        print(f"history  {line}")
                return 0
        rows = []
        for _, (sid, lease) in sorted(found, key=lambda f: f[1][0]):
            if isinstance(lease, MalformedLease):
                rows.append({"shard": sid, "malformed": lease.reason})
                continue
            rows.append(
                {
                    "shard": sid,
                    "owner": lease.owner or "",
                    "counter": lease.counter,
                    "checkpoint": lease.checkpoint + (f"/{lease.sub}" if lease.sub else ""),
                    "parents": ",".join(lease.parents),
                    "children": ",".join(lease.children),
                    "handoff": lease.checkpoint_owner or "",
                    "malformed": "",
                }
            )
        cols = ["shard", "owner", "counter", "checkpoint", "parents", "children", "handoff"]
        if any(r["malformed"] for r in rows):
            cols.append("malformed")
        print_rows(rows, cols, args.json)
        return 0

    return asyncio.run(main())
