"""The command line. Heavy imports happen inside the commands, so ``--help`` is instant.

Exit codes: 0 ok, 1 the run failed, 2 usage or configuration error (nothing was written).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from console import __version__
from console.cli import launch
from console.cli.stores import seconds as _seconds
from console.errors import ConsoleError, Error, UsageError
from console.redact import REDACTOR

if TYPE_CHECKING:
    from console.cli.signals import SignalStop
    from console.config import Settings


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


def _common(p: argparse.ArgumentParser) -> None:
    """Flags shared by run and demo. Defaults are None: a flag not given leaves the
    environment and the config file to decide."""
    p.add_argument("--db", metavar="PATH", help="SQLite checkpoint database")
    p.add_argument(
        "--processor",
        metavar="SPEC",
        help="null, print, jsonl:PATH or package.module:function (default: null)",
    )
    p.add_argument("--no-ui", action="store_const", const=True, help="run headless")
    p.add_argument("--duration", type=_seconds, metavar="SECONDS", help="stop after this long")
    p.add_argument(
        "--max-records", type=_whole, metavar="N", help="stop after processing N records"
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--log-format", choices=("text", "json"), help="headless log lines")
    p.add_argument("--flush-interval", type=_seconds, metavar="SECONDS")
    p.add_argument("--discovery-interval", type=_seconds, metavar="SECONDS")
    p.add_argument("--idle-interval", type=_seconds, metavar="SECONDS")
    p.add_argument("--status-interval", type=_seconds, metavar="SECONDS")
    p.add_argument(
        "--processor-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="a batch not processed within this stops the run (0: wait forever; default 300)",
    )
    p.add_argument("--records-per-call", type=_whole, metavar="N")
    p.add_argument(
        "--theme", metavar="NAME", help="shard-dark (default), shard-light, or a Textual theme"
    )
    p.add_argument(
        "--refresh-rate", type=float, metavar="HZ", help="UI redraws per second (default 4)"
    )
    p.add_argument(
        "--read-only",
        action="store_const",
        const=True,
        help="watch only: every change (rewind, skip, pause, undo, replay) is refused",
    )
    p.add_argument(
        "--read-path",
        choices=("fast", "botocore"),
        help="GetRecords and shard listings: fast (default; signed by botocore, decoded "
        "past its parser) or botocore (its client methods)",
    )
    p.add_argument(
        "--fan-out",
        nargs="?",
        const=True,  # the default name
        metavar="NAME",
        help="read through enhanced fan-out (SubscribeToShard) as the stream consumer NAME, "
        "registered if absent (default: the lease table's name, or shard-console)",
    )
    p.add_argument(
        "--deregister-on-exit",
        action="store_const",
        const=True,
        help="with --fan-out: deregister the stream consumer when the run ends",
    )
    p.add_argument(
        "--metrics-port",
        type=_whole,
        metavar="PORT",
        help="serve /metrics (Prometheus), /healthz, /readyz and /status on this port "
        "(0: any free one; the address is logged)",
    )
    p.add_argument(
        "--metrics-host",
        metavar="ADDR",
        help="the address they listen on (default 127.0.0.1; 0.0.0.0 for a container)",
    )
    p.add_argument(
        "--inject-faults",
        metavar="SPEC",
        help="rehearse incidents: throttle=0.1,http500=0.05,reset=0.05,timeout=0.05,"
        "expired=0.05[,seed=N] (fraction of the read calls: GetRecords, GetShardIterator, "
        "ListShards, DescribeStream, SubscribeToShard)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="shard-console",
        description="The consumer of a Kinesis stream and its operator console, in one process.",
    )
    parser.add_argument("--version", action="version", version=f"shard-console {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = sub.add_parser("run", help="consume a stream")
    run.add_argument(
        "stream",
        metavar="STREAM",
        help="Kinesis stream name or ARN, DynamoDB stream ARN, or (with --source dynamodb) a "
        "table name",
    )
    run.add_argument(
        "--source",
        choices=("kinesis", "dynamodb"),
        help="what STREAM names; default: a DynamoDB stream ARN is read as one, anything "
        "else as a Kinesis stream",
    )
    run.add_argument("--endpoint-url", metavar="URL", help="a local or private endpoint")
    run.add_argument("--region", metavar="R")
    run.add_argument("--profile", metavar="P", help="AWS profile (credentials as boto3 finds them)")
    run.add_argument(
        "--initial-position",
        metavar="POS",
        help="where a stream new to the database starts: trim_horizon (default), latest, "
        "at_timestamp:ISO8601",
    )
    _common(run)
    fleet = run.add_argument_group(
        "fleet mode", "several processes share the stream through a KCL lease table in DynamoDB"
    )
    fleet.add_argument(
        "--lease-table",
        metavar="TABLE",
        help="the lease table (the KCL application name); created if absent",
    )
    fleet.add_argument(
        "--worker-id",
        metavar="ID",
        help="this worker's name in leaseOwner (default: host-pid-random)",
    )
    fleet.add_argument(
        "--failover-time",
        type=_seconds,
        metavar="SECONDS",
        help="a lease not renewed for this long is taken over (default 10, minimum 3)",
    )
    fleet.add_argument(
        "--dynamodb-endpoint-url", metavar="URL", help="DynamoDB endpoint (default: --endpoint-url)"
    )
    fleet.add_argument(
        "--no-create-table",
        action="store_const",
        const=True,
        help="refuse to start when the lease table does not exist",
    )
    fleet.add_argument(
        "--take-over",
        action="store_const",
        const=True,
        help="run even though live workers that are not shard-console's (or a KCL 3.x "
        "application) use the table",
    )
    run.set_defaults(handler=cmd_run)

    demo = sub.add_parser("demo", help="run against an embedded endpoint; no AWS account needed")
    demo.add_argument(
        "--source",
        choices=("kinesis", "dynamodb"),
        default="kinesis",
        help="a Kinesis stream (default), or a DynamoDB table's stream with puts, updates "
        "and deletes",
    )
    demo.add_argument("--shards", type=_whole, default=4, metavar="N", help="default 4")
    demo.add_argument(
        "--rate", type=float, default=100.0, metavar="RECORDS_PER_S", help="default 100"
    )
    demo.add_argument(
        "--rollover",
        type=_seconds,
        default=20.0,
        metavar="SECONDS",
        help="dynamodb: seconds between shard roll-overs (default 20)",
    )
    _common(demo)
    demo.set_defaults(handler=cmd_demo)

    from console.cli import attach as attach_cli
    from console.cli import tail as tail_cli
    from console.cli.control import add_commands

    attach_cli.add_commands(sub, _Parser)
    tail_cli.add_commands(sub, _Parser)
    add_commands(sub, _Parser)
    return parser


_SETTING_FLAGS = (
    "endpoint_url",
    "region",
    "profile",
    "db",
    "processor",
    "initial_position",
    "no_ui",
    "duration",
    "max_records",
    "log_format",
    "discovery_interval",
    "flush_interval",
    "idle_interval",
    "status_interval",
    "processor_timeout",
    "records_per_call",
    "inject_faults",
    "theme",
    "refresh_rate",
    "read_only",
    "lease_table",
    "worker_id",
    "failover_time",
    "dynamodb_endpoint_url",
    "no_create_table",
    "take_over",
    "metrics_port",
    "metrics_host",
    "read_path",
    "fan_out",
    "deregister_on_exit",
)


def _settings(args: argparse.Namespace) -> Settings:
    from console.config import load_settings

    flags = {name: getattr(args, name, None) for name in _SETTING_FLAGS}
    settings, _ = load_settings(flags, config=args.config)
    if isinstance(getattr(args, "fan_out", None), str):
        # A name on the command line is a name, even "no": only the file and the environment
        # say true or false.
        settings = dataclasses.replace(settings, fan_out=args.fan_out)
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    from console.cli.signals import before_the_loop

    with before_the_loop():
        return _cmd_run(args)


def _cmd_run(args: argparse.Namespace) -> int:
    from console.checkpoints.sqlite_file import inspect_database
    from console.config import data_dir, default_db_path
    from console.headless import LinePrinter
    from console.processors import load_processor
    from console.sources.aws import AwsSettings

    settings = _settings(args)
    initial = launch.initial_position(settings)
    launch.check_ui(settings)
    launch.fan_out_name(settings)
    aws = AwsSettings(
        region=settings.region, profile=settings.profile, endpoint_url=settings.endpoint_url
    )
    source = launch.source_for(args.stream, args.source, aws, settings)
    processor = load_processor(settings.processor, source.stream)
    if not settings.lease_table and (settings.db is not None or data_dir().exists()):
        inspect_database(settings.db or default_db_path())
    printer = LinePrinter(settings.log_format)

    async def main(stopper: SignalStop) -> int:
        return await launch.consume(
            source, settings.db, settings, initial, printer, processor, stopper
        )

    return launch.run_main(main, printer)


def cmd_demo(args: argparse.Namespace) -> int:
    from console.cli.signals import before_the_loop

    with before_the_loop():
        return _cmd_demo(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from console.checkpoints.sqlite_file import inspect_database
    from console.demo import Demo, DemoOptions
    from console.demo.state import DemoStateError, load_state
    from console.engine.events import EventLog
    from console.headless import LinePrinter
    from console.model import Position
    from console.processors import load_processor

    settings = _settings(args)
    launch.check_ui(settings)
    if settings.fan_out is not None:
        raise UsageError(
            "the demo's embedded endpoint serves polling only: --fan-out needs a Kinesis endpoint "
            "with enhanced fan-out (AWS, or kinesis-mock)"
        )
    if args.shards < 1 or args.shards > 64:
        raise UsageError(f"--shards must be between 1 and 64, not {args.shards}")
    if not args.rate > 0:
        raise UsageError(f"--rate must be a positive number of records per second, not {args.rate}")
    if not args.rollover > 0:
        raise UsageError(f"--rollover must be a positive number of seconds, not {args.rollover}")
    tmpdir: str | None = None
    stream = "demo-orders" if args.source == "dynamodb" else "demo"
    state: Path | None = None
    if settings.db:
        db = settings.db
        # The endpoint's streams live beside the database, so the next demo with it resumes.
        state = Path(f"{db}.demo.json")
        try:
            load_state(state)
        except DemoStateError as exc:
            raise UsageError(str(exc)) from None
    else:
        tmpdir = tempfile.mkdtemp(prefix="shard-console-demo-")
        db = str(Path(tmpdir) / "checkpoints.db")
    processor = load_processor(settings.processor, stream)
    printer = LinePrinter(settings.log_format)
    try:
        inspect_database(db)

        async def main(stopper: SignalStop) -> int:
            events = EventLog()
            loop = asyncio.get_running_loop()

            def on_demo_event(message: str) -> None:  # called on the endpoint's thread
                loop.call_soon_threadsafe(events.emit, "demo", message)

            demo = Demo(
                DemoOptions(
                    stream=stream,
                    shards=args.shards,
                    rate=args.rate,
                    source=args.source,
                    rollover_every=args.rollover,
                ),
                on_event=on_demo_event,
                state=state,
            )
            demo.start()
            where = (
                f"{db} (deleted at exit; pass --db to keep it)"
                if tmpdir
                else f"{db}, the demo's streams in {state}"
            )
            what = (
                f"table '{stream}' and its stream"
                if args.source == "dynamodb"
                else f"stream '{stream}'"
            )
            intro = (
                f"demo endpoint {demo.endpoint.url}, {what} with {args.shards} shards "
                f"at {args.rate:g} records/s; checkpoints in {where}"
            )
            if settings.no_ui:
                printer.line("info", "demo", intro)
            else:
                events.emit("demo", intro)
            try:
                source = launch.source_for(
                    demo.stream_arn or stream, args.source, demo.aws, settings
                )
                return await launch.consume(
                    source,
                    db,
                    settings,
                    Position.trim_horizon(),
                    printer,
                    processor,
                    stopper,
                    events,
                )
            finally:
                demo.stop()

        return launch.run_main(main, printer)
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)


_RELATIVE_VALUE = ("--to", "--since", "--from")


def _glue_relative_times(argv: Sequence[str]) -> list[str]:
    """``--to -15m`` reads as an option to argparse; glue such values: ``--to=-15m``."""
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in _RELATIVE_VALUE:
            value = next(it, None)
            if value is not None and value.startswith("-") and value[1:2].isdigit():
                out.append(f"{arg}={value}")
                continue
            out.append(arg)
            if value is not None:
                out.append(value)
            continue
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_glue_relative_times(sys.argv[1:] if argv is None else argv))
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args))
    except Error as exc:
        # Ours, on purpose: one line. The CLI's own errors carry their exit code; the
        # library's (a store that cannot be used, a change that cannot apply, a source that
        # cannot be read) are the operator's to fix: 2.
        code = exc.exit_code if isinstance(exc, ConsoleError) else 2
        print(f"shard-console: error: {REDACTOR(str(exc))}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("SHARD_CONSOLE_DEBUG"):
            raise
        print(
            f"shard-console: internal error: {type(exc).__name__}: {REDACTOR(str(exc))} "
            "(a bug: please report it; SHARD_CONSOLE_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
    except BaseException as exc:  # a signal before the consumer's loop: nothing was open
        from console.cli.signals import StartupInterrupted

        if not isinstance(exc, StartupInterrupted):
            raise
        print(
            f"shard-console: {exc} during start-up: stopped before reading anything",
            file=sys.stderr,
        )
        return 0
