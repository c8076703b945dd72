"""A CheckpointStore in memory, for unit tests of the engine's pure-ish parts (the checkpointer).

It implements the whole protocol the way the SQLite store behaves (one transaction per save,
history ids, commands), without a file, so those tests run in milliseconds. Through-the-wire
tests use the real SQLite store.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from console.checkpoints.base import (
    CheckpointChange,
    Command,
    Owner,
    StoreLockedError,
    StreamRecord,
)
from console.model import Checkpoint, HistoryEntry, Shard


class MemoryStore:
    path = ":memory:"

    def __init__(self) -> None:
        self.checkpoints: dict[str, dict[str, Checkpoint]] = {}
        self.history_rows: dict[str, list[HistoryEntry]] = {}
        self.commands: dict[int, Command] = {}
        self.records: dict[str, StreamRecord] = {}
        self.shard_map: dict[str, dict[str, Shard]] = {}
        self.held: set[str] = set()
        self.saves: list[list[CheckpointChange]] = []  # every save, as one transaction
        self.fail_next_save: BaseException | None = None
        self.published: dict[str, tuple[float, dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._command_ids = itertools.count(1)

    # -- ownership --------------------------------------------------------------------------

    async def acquire(self, stream: str) -> None:
        if stream in self.held:
            raise StoreLockedError(f"stream '{stream}' is held")
        self.held.add(stream)

    async def release(self, stream: str) -> None:
        self.held.discard(stream)

    def holds(self, stream: str) -> bool:
        return stream in self.held

    async def owner(self, stream: str) -> Owner | None:
        if stream not in self.held:
            return None
        return Owner(os.getpid(), socket.gethostname(), "tests", 0.0)

    async def publish(self, stream: str, doc: Mapping[str, Any]) -> None:
        self.published[stream] = (time.time(), dict(doc))

    async def snapshot(self, stream: str) -> tuple[float, dict[str, Any]] | None:
        return self.published.get(stream)

    # -- checkpoints and history ------------------------------------------------------------

    async def load(self, stream: str) -> dict[str, Checkpoint]:
        return dict(self.checkpoints.get(stream, {}))

    async def stream_record(self, stream: str) -> StreamRecord | None:
        return self.records.get(stream)

    async def register_stream(self, record: StreamRecord) -> None:
        self.records[record.stream] = record

    async def streams(self) -> list[StreamRecord]:
        return list(self.records.values())

    async def save(
        self,
        stream: str,
        changes: Sequence[CheckpointChange],
        finish: tuple[int, str] | None = None,
    ) -> None:
        if self.fail_next_save is not None:
            exc, self.fail_next_save = self.fail_next_save, None
            raise exc
        self.saves.append(list(changes))
        saved = self.checkpoints.setdefault(stream, {})
        for change in changes:
            saved[change.checkpoint.shard_id] = change.checkpoint
        await self.add_history(stream, [c.history for c in changes if c.history is not None])
        if finish is not None:
            await self.finish_command(finish[0], True, finish[1])

    async def add_history(self, stream: str, entries: Sequence[HistoryEntry]) -> None:
        rows = self.history_rows.setdefault(stream, [])
        for h in entries:
            rows.append(dataclasses.replace(h, id=next(self._ids), at=h.at or time.time()))

    async def history(
        self, stream: str, shard_id: str | None = None, limit: int = 100
    ) -> list[HistoryEntry]:
        rows = [h for h in self.history_rows.get(stream, []) if shard_id in (None, h.shard_id)]
        return rows[::-1][:limit]

    async def history_entry(self, stream: str, entry_id: int) -> HistoryEntry | None:
        return next((h for h in self.history_rows.get(stream, []) if h.id == entry_id), None)

    async def history_for_command(self, stream: str, command_id: int) -> list[HistoryEntry]:
        return [h for h in self.history_rows.get(stream, []) if h.command_id == command_id]

    async def last_change_id(self, stream: str, before: int | None = None) -> int | None:
        ids = [
            c.id
            for c in self.commands.values()
            if c.stream == stream
            and c.state == "applied"
            and (before is None or c.id < before)
            and await self.history_for_command(stream, c.id)
        ]
        return max(ids) if ids else None

    async def save_shards(self, stream: str, shards: Sequence[Shard]) -> None:
        self.shard_map.setdefault(stream, {}).update({s.shard_id: s for s in shards})

    async def shards(self, stream: str) -> list[Shard]:
        return sorted(self.shard_map.get(stream, {}).values(), key=lambda s: s.shard_id)

    # -- commands ---------------------------------------------------------------------------

    async def add_command(
        self, stream: str, shard_id: str | None, action: str, args: dict[str, Any], actor: str
    ) -> int:
        cid = next(self._command_ids)
        self.commands[cid] = Command(cid, stream, shard_id, action, args, actor, time.time())
        return cid

    async def command(self, command_id: int) -> Command | None:
        return self.commands.get(command_id)

    async def pending_commands(self, stream: str) -> list[Command]:
        return [c for c in self.commands.values() if c.stream == stream and c.state == "pending"]

    async def finish_command(self, command_id: int, ok: bool, result: str) -> None:
        command = self.commands[command_id]
        state = "applied" if ok else "failed"
        self.commands[command_id] = dataclasses.replace(command, state=state, result=result)

    async def close(self) -> None:
        self.held.clear()
