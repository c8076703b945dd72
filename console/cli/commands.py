"""The command line. Heavy imports happen inside the commands, so ``--help`` is instant.

Exit codes: 0 ok, 1 the run failed, 2 usage or configuration error (nothing was written).
"""

from __future__ import annotations

import argparse
import asyncio
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
from console.settings import DEMO, RUN, add_flags, flags_given, load_settings

if TYPE_CHECKING:
    from console.cli.signals import SignalStop
    from console.settings import Settings


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None


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
    add_flags(run, RUN)
    run.set_defaults(handler=cmd_run)

    demo = sub.add_parser("demo", help="run against an embedded endpoint; no AWS account needed")
    demo.add_argument(
        "--source",
        choices=("kinesis", "dynamodb"),
        default="kinesis",
        help="a Kinesis stream (default), or a DynamoDB table's stream with puts, updates "
        "and deletes",
    )
    demo.add_argument(
        "--shards", type=_whole, default=4, metavar="N", help="shards of the stream (default 4)"
    )
    demo.add_argument(
        "--rate",
        type=float,
        default=100.0,
        metavar="RECORDS_PER_S",
        help="records the producer writes per second (default 100)",
    )
    demo.add_argument(
        "--rollover",
        type=_seconds,
        default=20.0,
        metavar="SECONDS",
        help="dynamodb: seconds between shard roll-overs (default 20)",
    )
    add_flags(demo, DEMO)
    demo.set_defaults(handler=cmd_demo)

    from console.cli import attach as attach_cli
    from console.cli import parked
    from console.cli import tail as tail_cli
    from console.cli.control import add_commands

    attach_cli.add_commands(sub, _Parser)
    tail_cli.add_commands(sub, _Parser)
    add_commands(sub, _Parser)
    parked.add_commands(sub, _Parser)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(flags_given(args), config=args.config)[0]


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
