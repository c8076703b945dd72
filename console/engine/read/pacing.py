"""A shard's GetRecords budget: one call per ``interval`` (Kinesis allows 5 a second), shared by
whoever reads the shard in this process (its worker, the records browser)."""

from __future__ import annotations

import time


class Pacer:
    """One shard's GetRecords calls, one per ``interval``, whoever makes them."""

    __slots__ = ("interval", "next_at")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = 0.0

    def reserve(self) -> float:
        """Take the next turn: the seconds to wait before the call."""
        now = time.monotonic()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        return at - now


class Pacers(dict[str, Pacer]):
    def __init__(self, interval: float) -> None:
        super().__init__()
        self.interval = interval

    def __missing__(self, shard_id: str) -> Pacer:
        pacer = self[shard_id] = Pacer(self.interval)
        return pacer
