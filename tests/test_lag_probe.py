"""The lag probe's budget: each shard read once per interval, the shards spread evenly over it.

An attached console must not eat the consumer's read allowance (5 reads a second per shard):
these run the probe's loop on a made-up clock, so an hour of rounds takes milliseconds, and
count the reads a fake source is asked for."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from console.engine.observe.lag_probe import LagProbe
from console.model import Batch, Position
from console.settings import default


class Finished(Exception):
    """The made-up clock reached the end of the run."""


class Clock:
    def __init__(self, end: float) -> None:
        self.now = 0.0
        self.end = end

    def mono(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)  # the probes started before this wait run, at the time they were
        self.now += seconds
        if self.now >= self.end:
            raise Finished


class Behind:
    """A source whose every shard has records after the checkpoint: nothing is kept."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.reads: list[tuple[str, float]] = []

    async def get_iterator(self, shard_id: str, position: Position) -> str:
        return shard_id

    async def get_records(self, iterator: str, limit: int) -> Batch:
        assert limit == 1
        self.reads.append((iterator, self.clock.now))
        return Batch([], "next", millis_behind_latest=5000)


def run(shards: int, end: float, **interval: float) -> list[tuple[str, float]]:
    clock = Clock(end)
    source = Behind(clock)
    source_any: Any = source
    probe = LagProbe(source_any, mono=clock.mono, sleep=clock.sleep, **interval)
    probe.set_targets({f"s{i}": Position.trim_horizon() for i in range(shards)})
    with pytest.raises(Finished):
        asyncio.run(probe.run())
    return source.reads


def test_each_shard_is_read_once_per_interval_the_shards_spread_over_it() -> None:
    reads = run(shards=4, end=3600.0, interval=10.0)
    per_shard = Counter(sid for sid, _ in reads)
    assert per_shard == {f"s{i}": 360 for i in range(4)}  # an hour of 10 s rounds
    # Within a round, one shard every interval / shards seconds, in order.
    first_round = reads[:4]
    assert first_round == [("s0", 0.0), ("s1", 2.5), ("s2", 5.0), ("s3", 7.5)]
    assert reads[4] == ("s0", 10.0)


def test_the_default_interval_is_the_documented_one() -> None:
    # The module's promise (one read per shard per 10 s, 2% of a shard's read allowance) and
    # the settings table agree; an attached console reads at that rate unless told otherwise.
    assert default("lag_interval") == 10.0
    reads = run(shards=2, end=600.0)  # no interval given: the default
    assert len(reads) == 2 * 60
