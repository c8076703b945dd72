"""The demo: the embedded endpoint, a stream on it, a producer, and a resharding script.

``shard-console demo`` consumes this stream through the same aioboto3 path as ``run``; only the
endpoint is ours. The producer writes JSON orders keyed by customer, each carrying its number
for that customer, so per-key order can be checked by eye (and by the tests). Within the first
minute the stream splits one shard and then merges two, so the console shows real lineage.

With ``--source dynamodb`` the same orders live in a table (key: customer, order) whose stream
the console reads: orders are placed (INSERT), shipped (MODIFY) and cancelled (REMOVE), and the
stream's shards roll over every 20 seconds, as a real table's do every few hours.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from console.demo.server import EmbeddedEndpoint
from console.demo.state import (
    STATE_VERSION,
    dynamodb_snapshot,
    kinesis_snapshot,
    load_state,
    restore_dynamodb,
    restore_kinesis,
    save_state,
)
from console.model import format_ts
from console.sources.aws import AwsSettings


@dataclass(frozen=True, slots=True)
class DemoOptions:
    stream: str = "demo"
    shards: int = 4
    rate: float = 50.0  # records per second
    split_at: float | None = 20.0  # seconds after start
    merge_at: float | None = 40.0
    customers: int = 24
    seed: int | None = None
    source: str = "kinesis"  # or "dynamodb": a table and its stream
    rollover_every: float | None = 20.0  # dynamodb: seconds between shard roll-overs


class Demo:
    """The producer and the endpoint. With ``state`` (a file beside the demo's database), the
    endpoint's streams and tables are saved there when the demo stops and restored when it
    starts, so a demo run with a database resumes its stream where it left off."""

    def __init__(
        self,
        options: DemoOptions,
        on_event: Callable[[str], None] | None = None,
        state: Path | None = None,
    ) -> None:
        self.options = options
        self.state = state
        self.endpoint = EmbeddedEndpoint()
        self.on_event = on_event
        self.produced = 0
        self.per_key: Counter[str] = Counter()
        self._rng = random.Random(options.seed)
        self._task: asyncio.Task[None] | None = None
        self.changes: Counter[str] = Counter()  # dynamodb: INSERT, MODIFY, REMOVE written
        self._orders: dict[str, list[int]] = {}  # dynamodb: live orders per customer
        self.stream_arn: str | None = None  # dynamodb: what the console reads

    @property
    def table(self) -> str:
        return self.options.stream

    @property
    def aws(self) -> AwsSettings:
        # Dummy keys: the loopback endpoint does not check signatures, and the demo must never
        # pick up a user's real credentials.
        return AwsSettings(
            region=self.endpoint.region,
            endpoint_url=self.endpoint.url,
            access_key_id="demo",
            secret_access_key="demo",
        )

    def start(self) -> None:
        saved = load_state(self.state) if self.state is not None else None
        self.endpoint.start()
        if saved is not None:
            self.endpoint.call(self._restore, saved)
        self.endpoint.call(self._begin)

    def stop(self) -> None:
        if self._task is not None:
            self.endpoint.loop.call_soon_threadsafe(self._task.cancel)
        if self.state is not None:
            save_state(self.state, self.endpoint.call(self._snapshot))
        self.endpoint.stop()

    def _snapshot(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "produced": self.produced,
            "per_key": dict(self.per_key),
            "changes": dict(self.changes),
            "orders": self._orders,
            "kinesis": kinesis_snapshot(self.endpoint.kinesis),
            "dynamodb": dynamodb_snapshot(self.endpoint.dynamodb),
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        self.produced = int(saved["produced"])
        self.per_key = Counter(saved["per_key"])
        self.changes = Counter(saved["changes"])
        self._orders = {k: list(v) for k, v in saved["orders"].items()}
        restore_kinesis(self.endpoint.kinesis, saved["kinesis"])
        restore_dynamodb(self.endpoint.dynamodb, saved["dynamodb"])

    def _begin(self) -> None:
        held = 0
        if self.options.source == "dynamodb":
            existing = self.endpoint.dynamodb.tables.get(self.table)
            table = existing or self.endpoint.dynamodb.create_table(
                self.table, ("customer", "order"), self.options.shards
            )
            self.stream_arn = table.stream_arn
            held = table.held if existing else 0
        elif self.options.stream in self.endpoint.kinesis.streams:
            stream = self.endpoint.kinesis.streams[self.options.stream]
            held = sum(len(s.seqs) for s in stream.shards.values())
        else:
            self.endpoint.kinesis.create_stream(self.options.stream, self.options.shards)
        if held:
            self._emit(
                f"demo: resumed from {self.state}: {held:,} records held, {self.produced:,} written"
            )
        self._write(max(1, int(self.options.rate)))  # a first second of data, before any read
        self._task = self.endpoint.loop.create_task(self._produce())

    def _write(self, count: int) -> None:
        if self.options.source == "dynamodb":
            self._change(count)
        else:
            self._put(count)

    def _emit(self, message: str) -> None:
        if self.on_event is not None:
            self.on_event(message)

    def _put(self, count: int) -> None:
        for _ in range(count):
            customer = f"customer-{self._rng.randrange(self.options.customers):02d}"
            self.per_key[customer] += 1
            self.produced += 1
            order: dict[str, Any] = {
                "order": self.produced,
                "customer": customer,
                "n": self.per_key[customer],
                "amount": round(self._rng.uniform(5, 500), 2),
                "at": format_ts(time.time()),
            }
            self.endpoint.kinesis.put(self.options.stream, customer, json.dumps(order).encode())

    def _change(self, count: int) -> None:
        """Orders placed, shipped and cancelled: INSERT, MODIFY and REMOVE on the stream."""
        db = self.endpoint.dynamodb
        for _ in range(count):
            customer = f"customer-{self._rng.randrange(self.options.customers):02d}"
            live = self._orders.setdefault(customer, [])
            self.per_key[customer] += 1
            self.produced += 1
            n = self.per_key[customer]
            roll = self._rng.random()
            if live and roll < 0.25:
                order = self._rng.choice(live)
                key = {"customer": {"S": customer}, "order": {"N": str(order)}}
                db.update_item(self.table, key, {"status": {"S": "shipped"}, "n": {"N": str(n)}})
                self.changes["MODIFY"] += 1
            elif live and (roll < 0.35 or len(live) >= 8):  # a table that stays small
                order = live.pop(self._rng.randrange(len(live)))
                db.delete_item(
                    self.table, {"customer": {"S": customer}, "order": {"N": str(order)}}
                )
                self.changes["REMOVE"] += 1
            else:
                live.append(self.produced)
                db.put_item(
                    self.table,
                    {
                        "customer": {"S": customer},
                        "order": {"N": str(self.produced)},
                        "n": {"N": str(n)},
                        "amount": {"N": f"{self._rng.uniform(5, 500):.2f}"},
                        "status": {"S": "placed"},
                        "tags": {"SS": sorted(self._rng.sample(["gift", "express", "bulk"], 2))},
                        "at": {"S": format_ts(time.time())},
                    },
                )
                self.changes["INSERT"] += 1

    async def _produce(self) -> None:
        opts = self.options
        t0 = time.monotonic()
        written = 0
        split_done = opts.split_at is None
        merge_done = opts.merge_at is None
        rolled = 0
        while True:
            await asyncio.sleep(0.1)
            elapsed = time.monotonic() - t0
            due = int(elapsed * opts.rate) - written
            if due > 0:
                self._write(due)
                written += due
            if opts.source == "dynamodb":
                every = opts.rollover_every
                if every and elapsed >= (rolled + 1) * every:
                    rolled += 1
                    pairs = self.endpoint.dynamodb.roll_over(self.table)
                    self._emit(f"demo: {len(pairs)} shards rolled over to new children")
                continue
            if not split_done and opts.split_at is not None and elapsed >= opts.split_at:
                split_done = True
                self._split()
            if not merge_done and opts.merge_at is not None and elapsed >= opts.merge_at:
                merge_done = True
                self._merge()

    def _split(self) -> None:
        stream = self.endpoint.kinesis.streams[self.options.stream]
        widest = max(stream.open_shards(), key=lambda s: s.end_hash - s.start_hash)
        middle = (widest.start_hash + widest.end_hash + 1) // 2
        a, b = self.endpoint.kinesis.split(self.options.stream, widest.shard_id, middle)
        self._emit(f"demo: split {widest.shard_id} into {a} and {b}")

    def _merge(self) -> None:
        stream = self.endpoint.kinesis.streams[self.options.stream]
        shards = stream.open_shards()
        if len(shards) < 2:
            return
        low, high = shards[-2], shards[-1]
        child = self.endpoint.kinesis.merge(self.options.stream, low.shard_id, high.shard_id)
        self._emit(f"demo: merged {low.shard_id} and {high.shard_id} into {child}")
