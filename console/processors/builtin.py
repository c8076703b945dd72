"""The processors that come with shard-console: null, print and jsonl."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from typing import IO, Any

from console.decode import printable
from console.model import ChangeRecord, Record, ShardContext, format_ts, json_safe
from console.processors.base import Processor, ProcessorError


def data_as_json(data: bytes) -> str | dict[str, str]:
    """UTF-8 text when it is text, else ``{"base64": ...}``."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def record_as_json(record: Record, ctx: ShardContext, arrival: str | None = None) -> dict[str, Any]:
    """One output row. A DynamoDB change carries its decoded fields instead of ``data`` (which
    holds the same change as JSON text): event_name, keys, new_image, old_image. ``arrival``:
    the arrival time already formatted (a page's records share theirs)."""
    when = arrival if arrival is not None else format_ts(record.approximate_arrival)
    if isinstance(record, ChangeRecord):
        return {
            "stream": ctx.stream,
            "shard_id": ctx.shard_id,
            "sequence_number": record.sequence_number,
            "approximate_arrival": when,
            "event_name": record.event_name,
            "keys": json_safe(record.keys),
            "new_image": json_safe(record.new_image),
            "old_image": json_safe(record.old_image),
        }
    return {
        "stream": ctx.stream,
        "shard_id": ctx.shard_id,
        "sequence_number": record.sequence_number,
        "sub_sequence_number": record.sub_sequence_number,
        "partition_key": record.partition_key,
        "approximate_arrival": when,
        "data": data_as_json(record.data),
    }


class NullProcessor(Processor):
    """Drops records: for benchmarks and for watching a stream without acting on it."""

    name = "null"

    async def process(self, records: list[Record], ctx: ShardContext) -> None:
        return None


class PrintProcessor(Processor):
    """One line per record on stdout: shard, sequence number, partition key, data. Control
    characters are escaped, so a record cannot break the line or drive the terminal."""

    name = "print"

    def __init__(self, out: IO[str] | None = None) -> None:
        self._out = out

    async def process(self, records: list[Record], ctx: ShardContext) -> None:
        out = self._out or sys.stdout
        lines = []
        for r in records:
            data = data_as_json(r.data)
            text = data if isinstance(data, str) else f"base64:{data['base64']}"
            sub = "" if r.sub_sequence_number is None else f"/{r.sub_sequence_number}"
            key = printable(r.partition_key)
            lines.append(f"{ctx.shard_id} {r.sequence_number}{sub} {key} {printable(text)}\n")
        out.write("".join(lines))
        out.flush()


def set_torn_tail_aside(fd: int, path: str) -> str | None:
    """A crash can cut the file's last line short. Its records came after the last checkpoint
    (the file is fsynced before every checkpoint write), so they will be delivered again; the
    torn piece must not stay, or the next line would be glued to it. It is moved, not dropped:
    written to a sibling file (returned), then cut from this one. Nothing of the user's is
    destroyed."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return None
    start = max(0, size - (1 << 20))
    while True:
        chunk = os.pread(fd, size - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0 or start == 0:
            keep = start + cut + 1  # 0 when the file holds no whole line at all
            break
        start = max(0, start - (1 << 20))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        aside = f"{path}.torn-{stamp}" + (f".{n}" if n else "")
        try:
            out = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - a thousand torn files in one second
        raise OSError(f"cannot find a free name beside {path} for its torn last line")
    try:
        offset = keep
        while offset < size:
            piece = os.pread(fd, min(1 << 20, size - offset), offset)
            os.write(out, piece)
            offset += len(piece)
        os.fsync(out)
    finally:
        os.close(out)
    os.ftruncate(fd, keep)
    return aside


class JsonlProcessor(Processor):
    """Appends one JSON object per record. ``flush`` fsyncs, and the engine flushes before
    every checkpoint write, so the file is never behind its checkpoint. The file is created
    0600: records are data, and data may be private.

    A batch is written whole or not at all: it goes to the file in one append, and a write that
    fails part-way (a full disk) is cut back to where the batch began before the error is
    raised, so no torn line is ever left in the middle of the file (the batch is retried, and
    written whole once there is room)."""

    name = "jsonl"

    def __init__(self, path: str, stream: str) -> None:
        self.path = path
        self.stream = stream
        self._fd: int | None = None

    async def open(self) -> list[str]:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ProcessorError(f"processor jsonl:{self.path}: {exc.strerror}") from None
        try:
            aside = set_torn_tail_aside(fd, self.path)
        except OSError as exc:
            os.close(fd)
            raise ProcessorError(
                f"processor jsonl:{self.path}: its torn last line could not be moved aside: "
                f"{exc.strerror or exc}"
            ) from None
        self._fd = fd
        if aside is None:
            return []
        return [
            f"{self.path} ended in a torn line (a crash mid-write): moved it to {aside}; its "
            "records come again, after the last checkpoint"
        ]

    async def process(self, records: list[Record], ctx: ShardContext) -> None:
        fd = self._fd
        assert fd is not None, "open() first"
        dumps = json.dumps
        data = "".join(
            dumps(record_as_json(r, ctx), ensure_ascii=False) + "\n" for r in records
        ).encode("utf-8")
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            os.ftruncate(fd, start)  # nothing of this batch stays: it comes again, whole
            raise

    async def flush(self) -> None:
        if self._fd is not None:
            await asyncio.to_thread(os.fsync, self._fd)

    async def close(self) -> None:
        if self._fd is not None:
            await self.flush()
            os.close(self._fd)
            self._fd = None
