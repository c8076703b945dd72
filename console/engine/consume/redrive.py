"""``parked redrive`` through a running consumer: the command line queues a ``redrive``
command (its ``ids``); the consumer applies it between batches (console.engine.changes.running
.RunningTransport.apply_pending). Each parked record goes to the consumer's own processor,
alone and in its shard's order, **ahead of that shard's new records**: a shard this consumer
reads is held and its worker stopped after its batch in hand, the records delivered, and the
shard read on from where it was. A record the processor returns for is removed from the parked
list, with a history entry; one it fails on again stays parked.
"""

from __future__ import annotations

import asyncio
from typing import Any

from console.checkpoints.base import Command, ParkedStore
from console.engine.consume.poison import unparked
from console.engine.events import EventLog, Level
from console.model import ParkedRecord, Record, ShardContext
from console.processors.base import Processor
from console.redact import REDACTOR

ACTION = "redrive"


class Redriver:
    def __init__(
        self,
        runner: Any,  # console.engine.consume.runner.ShardRunner: hold, stop_shard, release
        store: Any,
        processor: Processor,
        events: EventLog,
        stream: str,
        timeout: float | None,
    ) -> None:
        self.runner = runner
        self.store = store
        self.processor = processor
        self.events = events
        self.stream = stream  # the stream's name, for the processor's ShardContext
        self.timeout = timeout

    async def __call__(self, command: Command) -> tuple[bool, str]:
        store = self.store
        if not isinstance(store, ParkedStore):
            return False, "this store keeps no parked records"
        ids = [int(i) for i in command.args.get("ids", ())]
        chosen = await store.parked(command.stream, ids=ids or None)
        by_shard: dict[str, list[ParkedRecord]] = {}
        for p in sorted(chosen, key=lambda p: (p.shard_id, int(p.sequence_number))):
            by_shard.setdefault(p.shard_id, []).append(p)
        done: list[ParkedRecord] = []
        failed: list[str] = []
        for sid, records in by_shard.items():
            self.runner.hold({sid})
            try:
                await self.runner.stop_shard(sid)  # its batch in hand finished first
                for p in records:
                    error = await self._deliver(p)
                    if error is None:
                        done.append(p)
                    else:
                        failed.append(f"{p.id}: {error}")
            finally:
                self.runner.release({sid}, changed=False)  # read on from where it was
        entries = [unparked(p, "redrive", command.actor, "processed again", command.id)
                   for p in done]  # fmt: skip
        await store.unpark(command.stream, [p.id for p in done if p.id is not None], entries)
        message = f"redriven {len(done)} parked record(s) through the running consumer"
        if failed:
            message += f"; {len(failed)} failed again and stay parked: {'; '.join(failed[:3])}"
        self.events.emit("redrive", f"{command.actor}: {message}",
                         level=Level.WARNING if failed else Level.INFO)  # fmt: skip
        return not failed, message

    async def _deliver(self, p: ParkedRecord) -> str | None:
        record = Record(p.sequence_number, p.partition_key, p.data,
                        p.approximate_arrival or 0.0, p.sub_sequence_number)  # fmt: skip
        try:
            async with asyncio.timeout(self.timeout):
                await self.processor.process([record], ShardContext(self.stream, p.shard_id))
                await self.processor.flush()
        except TimeoutError:
            return f"the processor did not return within {self.timeout:g} s"
        except Exception as exc:
            return REDACTOR(f"{type(exc).__name__}: {exc}")
        return None
