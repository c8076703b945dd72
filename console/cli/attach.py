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
from console.cli.stores import open_store, print_rows, seconds, settings_of, store_flags
from console.errors import UsageError
from console.redact import REDACTOR

if TYPE_CHECKING:
    from console.cli.signals import SignalStop


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    attach = sub.add_parser(
        "attach",
        help="the console over a consumer this process did not start: a KCL application or a "
        "shard-console fleet (--lease-table), or a local consumer (--db); consumes nothing",
    )
    _target_flags(attach)
    attach.add_argument("--no-ui", action="store_const", const=True, help="log lines instead")
    attach.add_argument("--duration", type=seconds, metavar="SECONDS", help="stop after this long")
    attach.add_argument("--status-interval", type=seconds, metavar="SECONDS")
    attach.add_argument("--log-format", choices=("text", "json"))
    attach.add_argument(
        "--read-only",
        action="store_const",
        const=True,
        help="watch only: every change is refused",
    )
    attach.set_defaults(handler=cmd_attach)

    serve = sub.add_parser(
        "serve",
        help="the console in a browser: each page is an attach of its own (--db or "
        "--lease-table), read-only unless --allow-changes",
    )
    _target_flags(serve)
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
    leases_sub = leases.add_subparsers(dest="what", metavar="list|show", parser_class=parser_class)
    lease_list = leases_sub.add_parser("list", help="one line per lease")
    store_flags(lease_list)
    lease_list.add_argument("--json", action="store_true")
    lease_list.set_defaults(handler=cmd_leases)
    lease_show = leases_sub.add_parser("show", help="every attribute of one lease, and its history")
    lease_show.add_argument("shard", metavar="SHARD")
    store_flags(lease_show)
    lease_show.add_argument("--json", action="store_true")
    lease_show.set_defaults(handler=cmd_leases)
    leases.set_defaults(handler=cmd_leases_usage)


def _target_flags(p: argparse.ArgumentParser) -> None:
    """What to attach to, and how to show it: shared by attach and serve."""
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--lease-table", metavar="TABLE", help="the application's lease table (its name)"
    )
    where.add_argument("--db", metavar="PATH", help="a local consumer's database")
    p.add_argument(
        "--stream",
        metavar="STREAM",
        help="the stream (needed with --lease-table; with --db when it holds several)",
    )
    p.add_argument("--endpoint-url", metavar="URL", help="the stream's endpoint")
    p.add_argument(
        "--dynamodb-endpoint-url", metavar="URL", help="DynamoDB endpoint (default: --endpoint-url)"
    )
    p.add_argument("--region", metavar="R")
    p.add_argument("--profile", metavar="P")
    p.add_argument(
        "--failover-time",
        type=seconds,
        metavar="SECONDS",
        help="the application's failover time: a lease not renewed this long shows as expired "
        "(default 10, the KCL's)",
    )
    p.add_argument(
        "--scan-interval",
        type=seconds,
        default=2.0,
        metavar="SECONDS",
        help="seconds between two scans of the lease table (default 2)",
    )
    p.add_argument(
        "--lag-interval",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds between two lag reads of one shard (default 10: 2%% of its read limit)",
    )
    p.add_argument("--theme", metavar="NAME")
    p.add_argument("--refresh-rate", type=float, metavar="HZ")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")


# attach's flags a served page's attach is given, as the operator gave them to serve.
_SERVED_FLAGS = (
    "lease_table",
    "db",
    "stream",
    "endpoint_url",
    "dynamodb_endpoint_url",
    "region",
    "profile",
    "failover_time",
    "scan_interval",
    "lag_interval",
    "theme",
    "refresh_rate",
    "config",
)


def cmd_serve(args: argparse.Namespace) -> int:
    import os
    import shlex
    import signal

    from console.observe.endpoint import bind_error
    from console.web.server import ConsoleServer, is_loopback

    # Out of the environment, so no page's attach inherits it.
    env_token = os.environ.pop("SHARD_CONSOLE_TOKEN", None)
    token = args.token or env_token or None
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
    """The attach each page runs: serve's flags passed on, read-only unless allowed."""
    argv = [sys.executable, "-m", "console", "attach"]
    for name in _SERVED_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            argv += ["--" + name.replace("_", "-"), str(value)]
    if not args.allow_changes:
        argv.append("--read-only")
    return argv


def _check_target(args: argparse.Namespace) -> None:
    """What a page would attach to must be there now, rather than fail in every page."""
    from console.config import default_db_path, load_settings

    flags = {"db": args.db, "lease_table": args.lease_table}
    settings, _ = load_settings(flags, config=args.config)
    if settings.lease_table:
        if not args.stream:
            raise UsageError("serve --lease-table needs --stream: the stream it leases")
        return
    db = settings.db or default_db_path()
    if not Path(db).exists():
        raise UsageError(
            f"no database at {db}: pass --db with a consumer's database, or --lease-table"
        )


# The settings attach reads from its flags (then the environment and the config file).
_ATTACH_FLAGS = (
    "db",
    "lease_table",
    "endpoint_url",
    "dynamodb_endpoint_url",
    "region",
    "profile",
    "failover_time",
    "no_ui",
    "duration",
    "status_interval",
    "log_format",
    "theme",
    "refresh_rate",
    "read_only",
)


def cmd_attach(args: argparse.Namespace) -> int:
    from console.cli.signals import before_the_loop

    with before_the_loop():
        return _cmd_attach(args)


def _cmd_attach(args: argparse.Namespace) -> int:
    from console.config import load_settings
    from console.headless import LinePrinter

    flags = {name: getattr(args, name, None) for name in _ATTACH_FLAGS}
    settings, _ = load_settings(flags, config=args.config)
    launch.check_ui(settings)
    for name in ("scan_interval", "lag_interval"):
        if not getattr(args, name) > 0:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must be a positive number of seconds")
    if not settings.lease_table:
        from console.config import default_db_path

        db = settings.db or default_db_path()
        if not Path(db).exists():
            raise UsageError(
                f"no database at {db}: pass --db with a consumer's database, or --lease-table"
            )
    options = launch.AttachOptions(args.stream, args.scan_interval, args.lag_interval)
    printer = LinePrinter(settings.log_format)

    async def main(stopper: SignalStop) -> int:
        return await launch.attach(settings, options, printer, stopper)

    return launch.run_main(main, printer)


def cmd_leases_usage(args: argparse.Namespace) -> int:
    raise UsageError("leases needs a sub-command: list, or show SHARD")


def cmd_leases(args: argparse.Namespace) -> int:
    from console.checkpoints.leases import LeaseStore, lease_of, plain, stream_name

    if not settings_of(args).lease_table:
        raise UsageError("leases needs --lease-table: the application's lease table")

    async def main() -> int:
        async with open_store(args) as target:
            store, record = target.store, target.record
            assert isinstance(store, LeaseStore)  # --lease-table
            table = store.table
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
        print_rows(rows, cols, args.json)
        return 0

    return asyncio.run(main())
