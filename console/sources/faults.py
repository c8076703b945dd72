"""Faults injected at the client boundary: botocore's ``before-send`` event.

The engine's retry paths are exercised by the real client receiving a real (if synthetic)
throttling response, 5xx, dropped connection, read timeout or expired iterator, exactly as it
would from AWS. Nothing of ours is mocked. Used by the tests and by ``--inject-faults`` for
rehearsing an incident on a test stream.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from console.errors import UsageError
from console.sources.aws import Hook

KINDS = ("throttle", "http500", "reset", "timeout", "expired")
# The kinds that make sense per operation; an iterator can only expire on GetRecords.
_OPERATIONS = {
    "GetRecords": KINDS,
    "GetShardIterator": ("throttle", "http500", "reset", "timeout"),
    "ListShards": ("throttle", "http500", "reset", "timeout"),
    "DescribeStream": ("throttle", "http500", "reset", "timeout"),
    # Enhanced fan-out: the calls that open subscriptions (not the events inside them).
    "SubscribeToShard": ("throttle", "http500", "reset", "timeout"),
}


class _Body:
    def __init__(self, payload: bytes) -> None:
        self._payload = payload

    async def read(self) -> bytes:
        return self._payload


def _response(url: str, status: int, code: str, message: str) -> Any:
    from aiobotocore.awsrequest import AioAWSResponse

    body = json.dumps({"__type": code, "message": message}).encode()
    headers = {
        "content-type": "application/x-amz-json-1.1",
        "content-length": str(len(body)),
        "x-amzn-requestid": "injected-fault",
    }
    return AioAWSResponse(url, status, headers, _Body(body))


class FaultInjector:
    """Each call to a listed operation fails with probability ``rates[kind]`` (kinds are drawn
    independently, in the order of KINDS). ``counts`` tells what was injected."""

    def __init__(
        self,
        rates: Mapping[str, float],
        *,
        seed: int | None = None,
        operations: Iterable[str] = _OPERATIONS,
        enabled: bool = True,
    ) -> None:
        unknown = set(rates) - set(KINDS)
        if unknown:
            raise UsageError(
                f"unknown fault kind(s) {', '.join(sorted(unknown))}: use {', '.join(KINDS)}"
            )
        self.rates = dict(rates)
        self.operations = set(operations)
        self.enabled = enabled
        self.counts: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._rng = random.Random(seed)

    @classmethod
    def parse(cls, spec: str) -> FaultInjector:
        """``throttle=0.1,expired=0.05,seed=7``, or ``all=0.2`` for every kind at 0.2 in all."""
        rates: dict[str, float] = {}
        seed: int | None = None
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, sep, value = part.partition("=")
            try:
                if not sep:
                    raise ValueError
                if name == "seed":
                    seed = int(value)
                    continue
                rate = float(value)
            except ValueError:
                raise UsageError(
                    f"invalid fault spec '{part}': use kind=rate, as in throttle=0.2"
                ) from None
            if not 0 <= rate <= 1:
                raise UsageError(f"fault rate {rate} for {name} is not between 0 and 1")
            if name == "all":
                rates.update({k: rate / len(KINDS) for k in KINDS})
            else:
                rates[name] = rate
        return cls(rates, seed=seed)

    def hooks(self, service: str = "kinesis") -> list[Hook]:
        return [(f"before-send.{service}", self._before_send)]

    def _before_send(self, request: Any, event_name: str = "", **_: Any) -> Any:
        operation = event_name.rsplit(".", 1)[-1]
        if not self.enabled or operation not in self.operations:
            return None
        self.calls[operation] += 1
        allowed = _OPERATIONS.get(operation, KINDS)
        for kind in KINDS:
            rate = self.rates.get(kind, 0.0)
            if kind in allowed and rate and self._rng.random() < rate:
                self.counts[kind] += 1
                return self._fault(kind, request.url)
        return None

    def _fault(self, kind: str, url: str) -> Any:
        from botocore.exceptions import ConnectionClosedError, ReadTimeoutError

        if kind == "throttle":
            return _response(
                url, 400, "ProvisionedThroughputExceededException", "Rate exceeded (injected)"
            )
        if kind == "http500":
            return _response(url, 500, "InternalFailure", "internal failure (injected)")
        if kind == "expired":
            return _response(url, 400, "ExpiredIteratorException", "Iterator expired (injected)")
        if kind == "reset":
            raise ConnectionClosedError(endpoint_url=url)
        raise ReadTimeoutError(endpoint_url=url)
