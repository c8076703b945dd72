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
from console.processors.base import Processor


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
    0600: records are data, and data may be private."""

    name = "jsonl"

    def __init__(self, path: str, stream: str) -> None:
        self.path = path
        self.stream = stream
        self._fh: IO[str] | None = None

    async def open(self) -> list[str]:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            aside = set_torn_tail_aside(fd, self.path)
        except OSError:
            os.close(fd)
            raise
        self._fh = os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16)
        if aside is None:
            return []
        return [
            f"{self.path} ended in a torn line (a crash mid-write): moved it to {aside}; its "
            "records come again, after the last checkpoint"
        ]

    async def process(self, records: list[Record], ctx: ShardContext) -> None:
        assert self._fh is not None, "open() first"
        dumps = json.dumps
        self._fh.write(
            "".join(dumps(record_as_json(r, ctx), ensure_ascii=False) + "\n" for r in records)
        )

    async def flush(self) -> None:
        fh = self._fh
        if fh is None:
            return
        fh.flush()
        await asyncio.to_thread(os.fsync, fh.fileno())

    async def close(self) -> None:
        if self._fh is not None:
            await self.flush()
            self._fh.close()
            self._fh = None
