"""How a worker paces GetRecords: at most five a second per shard (Kinesis's limit), a full
batch fetched again at once (at that pace, never after the idle wait), an idle shard polled
every --idle-interval. Observed at the client boundary: the time of every GetRecords request.

The limits are the feature here, so the test reads the clock; the bounds hold on a loaded
machine (a late call only widens a gap, and the assertions on full batches leave half the
idle interval of slack)."""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

from console.checkpoints.sqlite import SqliteStore
from console.engine.consume.consumer import Consumer
from console.sources.kinesis import KinesisSource
from tests.conftest import FAST, Collect, aws, wait_for

RECORDS = 8
IDLE = 1.0


async def test_get_records_pace(demo_endpoint: Any, db: str) -> None:
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 1)
    for i in range(RECORDS):
        demo_endpoint.call(demo_endpoint.kinesis.put, "s", "k", f"k:{i}".encode())
    sent: list[float] = []

    def observe(request: Any, **_: Any) -> None:
        sent.append(time.monotonic())

    hooks = [("before-send.kinesis.GetRecords", observe)]
    options = dataclasses.replace(FAST, records_per_call=1, idle_interval=IDLE)
    processor = Collect()
    store = await SqliteStore.open(db)
    try:
        async with KinesisSource("s", aws(demo_endpoint.url), hooks) as source:
            async with Consumer(source, store, processor, options):
                # Calls 0..7 each bring one record (a full batch, as the limit is 1); call 8
                # finds the tip; from then on the shard is idle.
                await wait_for(lambda: len(sent) >= RECORDS + 4, timeout=30, what="idle polls")
    finally:
        await store.close()
    assert processor.data() == [f"k:{i}".encode() for i in range(RECORDS)]
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    busy, idle = gaps[:RECORDS], gaps[RECORDS + 1 :]
    # At most 5 a second: any six consecutive calls span a second or more.
    assert all(sent[i + 5] - sent[i] >= 1.0 - 0.01 for i in range(len(sent) - 5)), gaps
    assert min(gaps) >= 0.2 - 0.01, gaps
    # A full batch is fetched again at the pace, not after the idle wait.
    assert max(busy) < IDLE / 2, busy
    # Caught up, the shard is polled once per idle interval, no more often.
    assert idle and min(idle) >= IDLE - 0.01, idle
