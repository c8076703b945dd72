"""The one protocol every source implements, and the error classes the engine acts on.

The engine never sees botocore exceptions: a source turns each failure into one of the classes
below, and the class alone decides what happens (retry with backoff, new iterator, loud jump to
TRIM_HORIZON, or stop the shard).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from console.model import Batch, Position, Shard


class SourceError(Exception):
    """Base of every error a source raises. ``str(err)`` is one line an operator can act on."""


class RetryableError(SourceError):
    """Throttling, 5xx, dropped or timed-out connections: retry with backoff."""

    def __init__(self, reason: str, *, throttled: bool = False) -> None:
        super().__init__(reason)
        self.throttled = throttled


class EndpointUnreachableError(RetryableError):
    """Could not connect at all. Retryable while running; a usage error at start-up."""


class ExpiredIteratorError(SourceError):
    """The iterator is older than the service allows: get a new one after the last record."""


class TrimmedDataError(SourceError):
    """The requested position is older than the stream's retention."""


class FatalSourceError(SourceError):
    """Validation, access denied, missing resources: retrying will not help."""


class StreamNotFoundError(FatalSourceError):
    pass


class ShardNotFoundError(FatalSourceError):
    """The shard is no longer in the stream (it left with retention)."""


class CredentialsError(FatalSourceError):
    pass


@dataclass(frozen=True, slots=True)
class StreamInfo:
    name: str
    arn: str | None
    status: str
    retention_hours: float
    created_at: float | None
    open_shards: int | None


class StreamSource(Protocol):
    """A stream of shards. Implementations: Kinesis and DynamoDB Streams.

    Attributes are constants of the service: the engine paces and sizes its calls with them.
    """

    kind: str  # "kinesis" or "dynamodb"
    stream: str  # display name
    location: str  # endpoint URL or region, for screens and logs
    max_records_per_call: int
    min_call_interval: float  # seconds between GetRecords on one shard

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def describe(self) -> StreamInfo: ...

    async def list_shards(self) -> list[Shard]: ...

    async def get_iterator(self, shard_id: str, position: Position) -> str: ...

    async def get_records(self, iterator: str, limit: int) -> Batch: ...


DESCRIBE_WITHIN = 10.0  # seconds a start-up description is given before the endpoint is blamed
DESCRIBE_TRIES = 3  # a failing (5xx, dropped) description is tried this often at start-up
THROTTLED_FOR = 60.0  # seconds a throttled description is waited out at start-up


async def describe_at_start(
    source: StreamSource,
    *,
    within: float = DESCRIBE_WITHIN,
    tries: int = DESCRIBE_TRIES,
    throttled_for: float = THROTTLED_FOR,
) -> StreamInfo:
    """The stream's description, when nothing has started yet, each try bounded.

    * An endpoint that accepts and never answers, or that keeps failing (``tries`` times: a
      5xx, a dropped connection), is a usage error (exit 2) whose line says where to look: the
      endpoint or its region is the operator's to fix.
    * Throttling is passing, whatever the endpoint (a fleet starting at once shares the
      account's DescribeStreamSummary allowance): tried again with backoff for up to
      ``throttled_for`` seconds; past that it stays a RetryableError, a run error (exit 1)."""
    where = getattr(source, "location", "the endpoint")
    failures = 0
    throttled_since: float | None = None
    delay = 0.2
    while True:
        try:
            async with asyncio.timeout(within):
                return await source.describe()
        except TimeoutError:
            raise EndpointUnreachableError(
                f"{where} accepted the connection but did not answer within {within:g} s: is "
                "it a Kinesis (or DynamoDB Streams) endpoint? check --endpoint-url"
            ) from None
        except EndpointUnreachableError:
            raise
        except RetryableError as exc:
            if exc.throttled:
                now = time.monotonic()
                throttled_since = throttled_since or now
                if now - throttled_since >= throttled_for:
                    raise
                delay = min(delay * 2, 5.0)
            else:
                failures += 1
                if failures >= tries:
                    raise FatalSourceError(
                        f"{exc} ({tries} tries): check --endpoint-url and --region, or the "
                        "service's health, then start again"
                    ) from None
                delay = 0.2 * failures
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
