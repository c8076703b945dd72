"""Backoff with full jitter: sleep a uniform random time in [0, min(cap, base * 2**attempt)].

Full jitter spreads retries of many shards hitting the same throttle, instead of having them
retry in lock-step (see the AWS Architecture Blog, "Exponential Backoff And Jitter")."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    def __init__(
        self,
        base: float = 0.2,
        cap: float = 10.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2.0 ** min(self.attempt, 32)))
        self.attempt += 1
        return self._rng() * ceiling

    def reset(self) -> None:
        self.attempt = 0
