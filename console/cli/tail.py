"""``shard-console tail STREAM``: read a stream's records without consuming it (no database,
no checkpoint), decoded (console.decode), filtered, one JSON object per record or ``--pretty``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from typing import Any

from console.decode import C1_AS_JSON
from console.errors import RunError, UsageError
from console.redact import REDACTOR
from console.settings import TAIL, add_flags, flags_given, load_settings


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    tail = sub.add_parser(
        "tail",
        help="print a stream's records, decoded, without consuming it (nothing is written)",
    )
    tail.add_argument("stream", metavar="STREAM", help="as for run: a name or an ARN")
    tail.add_argument(
        "--from",
        dest="start",
        default="latest",
        metavar="WHERE",
        help="trim_horizon | latest (default) | -15m | ISO time | sequence:N",
    )
    tail.add_argument("--shard", metavar="ID", help="only this shard")
    follow = tail.add_mutually_exclusive_group()
    follow.add_argument(
        "--follow",
        action="store_true",
        default=None,
        help="keep reading new records (the default from latest)",
    )
    follow.add_argument("--no-follow", dest="follow", action="store_false", help="stop at the tip")
    tail.add_argument("--limit", type=int, metavar="N", help="stop after N records")
    tail.add_argument("--grep", metavar="REGEX", help="only records whose decoded text matches")
    tail.add_argument("--key", metavar="PARTITION_KEY", help="only records with this key")
    tail.add_argument("--pretty", action="store_true", help="for people: indented, one per block")
    tail.add_argument(
        "--source",
        choices=("kinesis", "dynamodb"),
        help="what STREAM names (default: a DynamoDB stream ARN is read as one)",
    )
    # Following: seconds between two listings of the stream's shards (tests shorten it).
    tail.add_argument("--relist", type=float, default=10.0, help=argparse.SUPPRESS)
    add_flags(tail, TAIL)
    tail.set_defaults(handler=cmd_tail)


FROM = "trim_horizon, latest, -15m, an ISO time or sequence:N"


def start_position(text: str) -> Any:
    from console.engine.changes.plan import ControlError, TargetTooOld, parse_target
    from console.model import Position

    if text.strip().lower() in ("latest", "tip"):
        return Position.latest()
    if text.strip().lower().startswith("checkpoint:"):
        raise UsageError(f"tail --from takes no checkpoint: tail reads no database; use {FROM}")
    try:
        target = parse_target(text)
    except TargetTooOld as exc:
        raise UsageError(f"--from {exc}") from None
    except ControlError:
        raise UsageError(f"--from {text!r} is not a position: use {FROM}") from None
    assert target.position is not None
    return target.position


def cmd_tail(args: argparse.Namespace) -> int:
    from console.cli.wiring import make_source
    from console.engine.read.tail import Tail, TailFailed, TailOptions
    from console.sources.aws import AwsSettings
    from console.sources.base import SourceError, describe_at_start

    start = start_position(args.start)
    if start.sequence_number is not None and args.shard is None:
        raise UsageError(
            "tail --from sequence:N needs --shard: a sequence number belongs to one shard"
        )
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be 1 or more, not {args.limit}")
    try:
        pattern = re.compile(args.grep) if args.grep is not None else None
    except re.error as exc:
        raise UsageError(f"--grep '{args.grep}' is not a regular expression: {exc}") from None
    follow = args.follow if args.follow is not None else start.kind.value == "LATEST"
    settings = load_settings(flags_given(args), config=args.config)[0]
    aws = AwsSettings(
        region=settings.region, profile=settings.profile, endpoint_url=settings.endpoint_url
    )
    try:
        source = make_source(args.stream, aws, kind=args.source)
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    printer = RecordPrinter(pattern, args.key, args.pretty)
    options = TailOptions(
        start=start, shard=args.shard, follow=follow, limit=args.limit, relist=args.relist
    )

    async def main() -> int:
        me = asyncio.current_task()
        assert me is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, me.cancel)
        try:
            async with source:
                await describe_at_start(source)
                if args.shard is not None:
                    ids = {s.shard_id for s in await source.list_shards()}
                    if args.shard not in ids:
                        raise UsageError(
                            f"stream '{source.stream}' has no shard {args.shard}: "
                            f"it has {', '.join(sorted(ids)) or 'none'}"
                        )
                tail = Tail(source, options, printer.record, printer.flush, printer.warn)
                await tail.run()
        except SourceError as exc:
            raise UsageError(str(exc)) from None
        except TailFailed as exc:
            raise RunError(str(exc)) from None
        except asyncio.CancelledError:
            pass  # Ctrl-C: what was printed stays printed; exit 0
        finally:
            printer.flush()
        return 0

    try:
        return asyncio.run(main())
    except BrokenPipeError:  # | head: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


class RecordPrinter:
    """Filters, decodes and writes records; written out once per page read."""

    def __init__(self, pattern: re.Pattern[str] | None, key: str | None, pretty: bool) -> None:
        from console.decode import decode
        from console.model import ChangeRecord, format_ts
        from console.processors.builtin import record_as_json

        self.pattern = pattern
        self.key = key
        self.pretty = pretty
        self._lines: list[str] = []
        self._decode = decode
        self._change = ChangeRecord
        self._as_json = record_as_json
        self._format_ts = format_ts
        self._last_ts: tuple[float, str] = (-1.0, "")  # a page's records share their instants

    def record(self, record: Any, ctx: Any) -> bool:
        if self.key is not None and record.partition_key != self.key:
            return False
        if isinstance(record, self._change):
            row = self._as_json(record, ctx)
            text = record.data.decode("utf-8", "replace")
        else:
            decoded = self._decode(record.data)
            text = decoded.searchable if self.pattern is not None else ""
            arrival = record.approximate_arrival
            if arrival != self._last_ts[0]:
                self._last_ts = (arrival, self._format_ts(arrival))
            row = self._as_json(record, ctx, self._last_ts[1])
            row["decoded"] = decoded.as_json()
        if self.pattern is not None and self.pattern.search(text) is None:
            return False
        indent = 2 if self.pretty else None
        line = json.dumps(row, indent=indent, ensure_ascii=False, default=str)
        self._lines.append(line.translate(C1_AS_JSON) + ("\n" if self.pretty else ""))
        return True

    def warn(self, message: str) -> None:
        self.flush()
        sys.stderr.write(f"shard-console: {REDACTOR(message)}\n")
        sys.stderr.flush()

    def flush(self) -> None:
        if self._lines:
            sys.stdout.write("\n".join(self._lines) + "\n")
            sys.stdout.flush()
            self._lines.clear()
