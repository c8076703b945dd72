"""``shard-console parked list|show|drop|redrive``: the records ``--on-failure park`` set aside.

They are kept beside the checkpoints (the SQLite file, or a fleet's companion table).
``redrive`` delivers each one again, through the consumer running on the stream (a command it
applies between batches) or, with none, to ``--processor SPEC`` in this process, and removes it
once the processor returns; ``drop`` removes it, with the reason in the history. Both ask
first (``--yes`` does not); both are refused with ``--read-only``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from console.cli.control import JSON_HELP, approved
from console.cli.stores import open_store, print_rows, seconds, settings_of, store_flags
from console.engine.changes.database import WAIT
from console.errors import RunError, UsageError
from console.redact import REDACTOR
from console.settings import CHANGE, READ

if TYPE_CHECKING:
    from console.checkpoints.base import ParkedStore
    from console.model import ParkedRecord


def add_commands(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    parked = sub.add_parser("parked", help="records --on-failure park set aside: list, redrive")
    store_flags(parked, READ)
    parked.add_argument("--json", action="store_true", help=JSON_HELP)
    parked.set_defaults(handler=cmd_list, shard=None)
    what = parked.add_subparsers(dest="what", metavar="list|show|drop|redrive",
                                 parser_class=parser_class)  # fmt: skip
    listing = what.add_parser("list", help="one line per parked record, oldest first")
    listing.add_argument("shard", nargs="?", metavar="SHARD", help="only this shard's")
    store_flags(listing, READ, given_only=True)
    listing.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    listing.set_defaults(handler=cmd_list)
    show = what.add_parser("show", help="one parked record: its data and its error")
    show.add_argument("id", type=int, metavar="ID", help="its id, as parked list shows it")
    store_flags(show, READ, given_only=True)
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
    show.set_defaults(handler=cmd_show)
    for name, text in (
        ("drop", "remove parked records, the reason recorded in the history"),
        ("redrive", "deliver parked records again to a processor; removed once it returns"),
    ):
        p = what.add_parser(name, help=text)
        p.add_argument("ids", nargs="*", type=int, metavar="ID", help="ids, as parked list shows")
        p.add_argument("--all", action="store_true", help="every parked record of the stream")
        store_flags(p, CHANGE, given_only=True)
        p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        p.add_argument("--dry-run", action="store_true", help="say what would be done")
        p.add_argument("--json", action="store_true", help=JSON_HELP)
        if name == "drop":
            p.add_argument("--reason", metavar="TEXT", help="why, for the history")
        else:
            p.add_argument(
                "--processor", metavar="SPEC",
                help="with no consumer running on the stream: the processor to deliver them "
                "to (package.module:function); with one, its own processor takes them",
            )  # fmt: skip
            p.add_argument(
                "--wait", type=seconds, default=WAIT, metavar="SECONDS",
                help=f"how long to wait for a running consumer to apply it (default {WAIT:g})",
            )  # fmt: skip
        p.set_defaults(handler=cmd_drop if name == "drop" else cmd_redrive)


def _sqlite(store: Any) -> ParkedStore:
    """The store's parked records: the SQLite file's, or a fleet's companion table's."""
    from console.checkpoints.base import ParkedStore

    if not isinstance(store, ParkedStore):
        raise UsageError("this store keeps no parked records")
    return store


def _line(p: ParkedRecord) -> dict[str, Any]:
    doc = p.to_json()
    return {
        "id": p.id,
        "shard": p.shard_id,
        "sequence": p.sequence_number,
        "key": p.partition_key,
        "error": f"{p.error_type}: {p.error_message}",
        "attempts": p.attempts,
        "parked": doc["parked_at"],
    }


def cmd_list(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with open_store(args) as target:
            parked = await _sqlite(target.store).parked(target.record.stream, args.shard)
        if args.json:
            json.dump([p.to_json() for p in parked], sys.stdout, indent=1)
            sys.stdout.write("\n")
            return 0
        cols = ["id", "shard", "sequence", "key", "attempts", "parked", "error"]
        print_rows([_line(p) for p in parked], cols, False)
        return 0

    return asyncio.run(main())


def cmd_show(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with open_store(args) as target:
            found = await _sqlite(target.store).parked(target.record.stream, ids=[args.id])
        if not found:
            raise UsageError(f"no parked record {args.id} on this stream (parked list shows them)")
        doc = found[0].to_json()
        if args.json:
            json.dump(doc, sys.stdout, indent=1)
            sys.stdout.write("\n")
            return 0
        for key in ("id", "stream", "shard_id", "sequence_number", "sub_sequence_number",
                    "partition_key", "approximate_arrival", "attempts", "first_failure",
                    "last_failure", "worker_id", "parked_at"):  # fmt: skip
            print(f"{key:20} {doc[key] if doc[key] is not None else '-'}")
        print(f"{'error':20} {doc['error']['type']}: {doc['error']['message']}")
        print(f"data ({doc['data_encoding']}):\n{doc['data']}")
        print(f"traceback (last frames):\n{doc['error']['traceback'].rstrip()}")
        return 0

    return asyncio.run(main())


async def _chosen(args: argparse.Namespace, store: ParkedStore, stream: str) -> list[ParkedRecord]:
    if bool(args.ids) == bool(args.all):
        raise UsageError("name the parked records (ID ...) or give --all")
    found = await store.parked(stream, ids=None if args.all else args.ids)
    missing = sorted(set(args.ids) - {p.id for p in found if p.id is not None})
    if missing:
        raise UsageError(f"no parked record {', '.join(map(str, missing))} on this stream")
    return found


async def _running(store: Any, stream: str) -> str | None:
    """The consumer running on the stream that a redrive can go through: the database's lock
    holder. (A fleet's workers apply no queued commands: with a lease table the records are
    redriven in this process, beside the workers, which go on reading.)"""
    owner = getattr(store, "owner", None)
    if owner is not None:
        holder = await owner(stream)
        return f"a consumer runs ({holder.describe()})" if holder and holder.alive() else None
    return None  # a fleet's workers apply no queued commands: redriven here


def _refuse_read_only(args: argparse.Namespace) -> None:
    if settings_of(args).read_only:
        raise UsageError("--read-only: parked records are not changed")


def _entry(p: ParkedRecord, cause: str, note: str) -> Any:
    from console.engine.consume.poison import unparked
    from console.identity import actor_name

    return unparked(p, cause, actor_name(), note)


def cmd_drop(args: argparse.Namespace) -> int:
    _refuse_read_only(args)

    async def main() -> int:
        async with open_store(args, changes=True) as target:
            store, stream = _sqlite(target.store), target.record.stream
            chosen = await _chosen(args, store, stream)
            print(f"drop {len(chosen)} parked record(s) of {stream}")
            if not chosen or not approved(args):
                return 0
            reason = args.reason or "dropped by an operator"
            done = await store.unpark(
                stream, [p.id for p in chosen if p.id is not None],
                [_entry(p, "drop", reason) for p in chosen],
            )  # fmt: skip
        print(f"dropped {done} parked record(s)")
        return 0

    return asyncio.run(main())


def cmd_redrive(args: argparse.Namespace) -> int:
    """With a consumer running on the stream: a ``redrive`` command it applies between
    batches, through its own processor, ahead of the shard's new records (console.engine
    .consume.redrive). With none: delivered here, to ``--processor``."""
    _refuse_read_only(args)

    async def main() -> int:
        from console.processors.loader import load_processor

        async with open_store(args, changes=True) as target:
            store, stream = _sqlite(target.store), target.record.stream
            running = await _running(target.store, stream)
            chosen = await _chosen(args, store, stream)
            to = f"the running consumer ({running})" if running else args.processor
            if not running and not args.processor:
                raise UsageError("no consumer runs on the stream: give --processor SPEC")
            print(f"redrive {len(chosen)} parked record(s) of {stream} through {to}")
            if not chosen or not approved(args):
                return 0
            if running:
                return await _through_consumer(args, target.store, stream, chosen)
            processor = load_processor(args.processor, stream)
            failed = await _redrive(store, stream, target.record.name, chosen, processor)
        print(f"redriven {len(chosen) - len(failed)} parked record(s)")
        if failed:
            raise RunError(
                f"{len(failed)} record(s) failed again and stay parked: " + "; ".join(failed[:3])
            )
        return 0

    return asyncio.run(main())


async def _through_consumer(
    args: argparse.Namespace, store: Any, stream: str, chosen: Sequence[ParkedRecord]
) -> int:
    from console.cli.control import EXIT_QUEUED
    from console.engine.changes.database import wait_for_command
    from console.engine.consume.redrive import ACTION
    from console.identity import actor_name

    ids = [p.id for p in chosen if p.id is not None]
    command_id = await store.add_command(stream, None, ACTION, {"ids": ids}, actor_name())
    command = await wait_for_command(store, command_id, args.wait)
    if command is None:
        print(f"command #{command_id} is queued: the running consumer applies it between batches")
        return EXIT_QUEUED
    if command.state != "applied":
        raise RunError(f"the running consumer: {command.result}")
    print(command.result)
    return 0


async def _redrive(store: ParkedStore, stream: str, name: str, chosen: Sequence[ParkedRecord],
                   processor: Any) -> list[str]:  # fmt: skip
    """Each record delivered alone, in each shard's order; removed once the processor
    returns. What failed again, one line each."""
    from console.model import Record, ShardContext

    failed: list[str] = []
    await processor.open()
    try:
        for p in sorted(chosen, key=lambda p: (p.shard_id, int(p.sequence_number))):
            record = Record(p.sequence_number, p.partition_key, p.data,
                            p.approximate_arrival or 0.0, p.sub_sequence_number)  # fmt: skip
            try:
                await processor.process([record], ShardContext(name, p.shard_id))
                await processor.flush()
            except Exception as exc:
                failed.append(REDACTOR(f"{p.id}: {type(exc).__name__}: {exc}"))
                continue
            assert p.id is not None
            await store.unpark(stream, [p.id], [_entry(p, "redrive", "processed again")])
    finally:
        await processor.close()
    return failed
