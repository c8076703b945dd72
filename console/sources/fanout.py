"""Kinesis enhanced fan-out: the stream consumer, and SubscribeToShard subscriptions.

A registered stream consumer gets its own 2 MB/s per shard, and the service pushes records to it
over one long response per shard (an AWS event stream, read through aiobotocore), about 70 ms
after they are written. A subscription lasts at most 5 minutes; the next one starts after the
last event's ContinuationSequenceNumber. At a closed shard's end the last event has no
continuation and names the children.

Errors keep their classes (sources/base.py). One more: :class:`SubscriptionInUse`, when the
service still holds a subscription of this consumer on the shard (a restart within seconds of
the last one, or another application using the same consumer name).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from console.model import Batch, Position, PositionKind
from console.sources.aws import classify
from console.sources.base import FatalSourceError, RetryableError, SourceError
from console.sources.kinesis import KinesisSource, child_from_api, records_from_api

DEFAULT_NAME = "shard-console"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class SubscriptionInUse(RetryableError):
    """ResourceInUseException: the service holds another subscription of this consumer on the
    shard. Retried within seconds; it passes once the old one is let go."""


@dataclass(frozen=True, slots=True)
class StreamConsumer:
    name: str
    arn: str
    stream_arn: str


def check_name(name: str) -> str:
    """A consumer name as Kinesis allows it: 1-128 of letters, digits, ``_.-``."""
    if not 1 <= len(name) <= 128 or not set(name) <= _NAME_CHARS:
        raise FatalSourceError(
            f"'{name}' is not a stream consumer name: use 1 to 128 letters, digits, _ . or -"
        )
    return name


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


async def register(
    source: KinesisSource,
    stream_arn: str,
    name: str,
    *,
    patience: float = 180.0,
    on_wait: Callable[[str], None] | None = None,
) -> StreamConsumer:
    """The stream's consumer ``name``, registered if absent, once ACTIVE. Waits out CREATING
    (AWS takes some seconds), a consumer still DELETING under that name, and the account's
    limit of 5 consumers CREATING at once; ``on_wait`` hears why it waits, once per reason."""
    client = source.client
    deadline = time.monotonic() + patience
    told: set[str] = set()
    delay = 0.2

    def waiting(why: str) -> None:
        if on_wait is not None and why not in told:
            told.add(why)
            on_wait(why)

    while True:
        try:
            resp = await client.describe_stream_consumer(StreamARN=stream_arn, ConsumerName=name)
            described = resp["ConsumerDescription"]
            status = str(described.get("ConsumerStatus", "ACTIVE"))
            if status == "ACTIVE":
                return StreamConsumer(name, str(described["ConsumerARN"]), stream_arn)
            waiting(f"stream consumer '{name}' is {status}; waiting for it")
        except Exception as exc:
            if _code(exc) != "ResourceNotFoundException":
                err = classify(exc, f"describing stream consumer '{name}'")
                if not isinstance(err, RetryableError):
                    raise err from exc
                waiting(f"{err}; retrying")
            else:
                await _register(client, stream_arn, name, waiting)
        if time.monotonic() + delay > deadline:
            raise FatalSourceError(
                f"stream consumer '{name}' was not ACTIVE within {patience:g} s: check it with "
                f"aws kinesis describe-stream-consumer --stream-arn {stream_arn} "
                f"--consumer-name {name}"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def _register(
    client: Any, stream_arn: str, name: str, waiting: Callable[[str], None]
) -> None:
    try:
        await client.register_stream_consumer(StreamARN=stream_arn, ConsumerName=name)
        waiting(f"registered stream consumer '{name}'; waiting for it to be ACTIVE")
    except Exception as exc:
        code = _code(exc)
        if code == "LimitExceededException":
            waiting(
                f"cannot register stream consumer '{name}' yet ({exc}); retrying "
                "(AWS allows 5 consumers CREATING at once, 20 per stream)"
            )
        elif code != "ResourceInUseException":  # registered meanwhile: describe it next
            err = classify(exc, f"registering stream consumer '{name}'")
            if not isinstance(err, RetryableError):
                raise err from exc
            waiting(f"{err}; retrying")


async def deregister(source: KinesisSource, stream_arn: str, name: str) -> None:
    """Remove the stream's consumer ``name`` (by name: a registration cut short by a stop is
    removed too); one that is not there is no error."""
    try:
        await source.client.deregister_stream_consumer(StreamARN=stream_arn, ConsumerName=name)
    except Exception as exc:
        if _code(exc) != "ResourceNotFoundException":
            raise classify(exc, f"deregistering stream consumer '{name}'") from exc


def starting_position(position: Position) -> dict[str, Any]:
    start: dict[str, Any] = {"Type": position.kind.value}
    if position.kind is PositionKind.AT_TIMESTAMP:
        start["Timestamp"] = position.timestamp
    elif position.sequence_number is not None:
        start["SequenceNumber"] = position.sequence_number
    return start


class Subscription:
    """One SubscribeToShard: its events, each as a Batch whose ``next_iterator`` is the
    ContinuationSequenceNumber (None at the shard's end)."""

    def __init__(self, stream: Any, shard_id: str) -> None:
        self._stream = stream
        self._events = stream.__aiter__()
        self.shard_id = shard_id
        self.opened_at = time.monotonic()

    @classmethod
    async def open(
        cls, source: KinesisSource, consumer: StreamConsumer, shard_id: str, position: Position
    ) -> Subscription:
        try:
            resp = await source.client.subscribe_to_shard(
                ConsumerARN=consumer.arn,
                ShardId=shard_id,
                StartingPosition=starting_position(position),
            )
        except Exception as exc:
            raise _subscription_error(exc, consumer, shard_id, "subscribing to") from exc
        return cls(resp["EventStream"], shard_id)

    async def next(self, consumer: StreamConsumer) -> Batch | None:
        """The next event as a Batch; None when the service ended the subscription."""
        try:
            event = await self._events.__anext__()
        except StopAsyncIteration:
            return None
        except Exception as exc:
            raise _subscription_error(exc, consumer, self.shard_id, "reading") from exc
        body = event.get("SubscribeToShardEvent")
        if body is None:  # an event type this version does not know: nothing to deliver
            return Batch(records=[], next_iterator="", millis_behind_latest=None)
        children = body.get("ChildShards")
        return Batch(
            records=records_from_api(body.get("Records") or ()),
            next_iterator=body.get("ContinuationSequenceNumber"),
            millis_behind_latest=body.get("MillisBehindLatest"),
            child_shards=tuple(child_from_api(c) for c in children) if children else (),
        )

    def close(self) -> None:
        self._stream.close()


def _subscription_error(
    exc: BaseException, consumer: StreamConsumer, shard_id: str, action: str
) -> SourceError:
    code = _code(exc)
    where = f"{action} {shard_id} through stream consumer '{consumer.name}'"
    if code == "ResourceInUseException":
        return SubscriptionInUse(
            f"ResourceInUseException while {where}: the service holds another subscription of "
            "this consumer on the shard (if it lasts, another application uses the same "
            "consumer name: give each its own --fan-out NAME)"
        )
    missing = FatalSourceError(
        f"stream consumer '{consumer.name}' or shard {shard_id} not found while {where}: "
        "was the consumer deregistered? restart to register it again"
    )
    return classify(exc, where, missing)
