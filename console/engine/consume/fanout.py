"""A shard worker's feed through enhanced fan-out: one SubscribeToShard at a time, renewed for as
long as the worker runs.

* Renewal: the service ends each subscription after 5 minutes; the feed subscribes again at
  once, after the last event's ContinuationSequenceNumber, so nothing is read twice or skipped.
  If a subscription outlives ``lifetime`` (the service did not end it) or no event comes for
  ``event_timeout`` (AWS sends one every few seconds, records or not), the feed drops it and
  subscribes again the same way.
* ResourceInUseException (the service still holds the last subscription, for a few seconds
  after a restart): subscribe again within ``in_use_retry`` seconds, quietly, for up to
  ``in_use_patience``; past that, the error goes to the worker, which shows it on the shard
  and retries with its backoff. Nothing falls back to polling.
* Other errors go to the worker as they are (retryable or fatal, sources/base.py).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from console.engine.consume.feeds import Feed
from console.engine.events import EventLog, Level
from console.engine.state import EngineState
from console.model import Batch, Position
from console.sources.base import (
    FatalSourceError,
    RetryableError,
    SourceError,
    StreamInfo,
    StreamSource,
)
from console.sources.fanout import (
    StreamConsumer,
    Subscription,
    SubscriptionInUse,
    check_name,
    deregister,
    register,
)
from console.sources.kinesis import KinesisSource


@dataclass(frozen=True, slots=True)
class FanOutOptions:
    lifetime: float = 310.0  # the service ends a subscription at 300 s; this is the backstop
    event_timeout: float = 30.0
    in_use_retry: float = 1.0  # seconds between subscribe attempts while the shard is in use
    in_use_patience: float = 30.0


class SubscriptionFeed:
    mode = "fan-out"
    idles = False  # the service pushes; an empty event is not a reason to wait

    def __init__(
        self,
        source: KinesisSource,
        consumer: StreamConsumer,
        shard_id: str,
        state: EngineState,
        options: FanOutOptions | None = None,
    ) -> None:
        self.source = source
        self.consumer = consumer
        self.shard_id = shard_id
        self.state = state
        self.options = options or FanOutOptions()
        self.subscriptions = 0  # opened by this feed: the first, then each renewal
        self._subscription: Subscription | None = None
        self._continuation: str | None = None
        self._in_use_since: float | None = None

    async def read(self, at: Position, limit: int) -> Batch:
        while True:
            try:
                batch = await self._next(at)
            except SubscriptionInUse:
                if not await self._in_use():
                    raise
                continue
            if batch is None:  # the service ended the subscription: renew
                continue
            self._in_use_since = None
            return batch

    async def _next(self, at: Position) -> Batch | None:
        subscription = self._subscription
        if subscription is None:
            start = Position.after_sequence(self._continuation) if self._continuation else at
            subscription = await Subscription.open(self.source, self.consumer, self.shard_id, start)
            self._subscription = subscription
            self.subscriptions += 1
        try:
            async with asyncio.timeout(self.options.event_timeout):
                batch = await subscription.next(self.consumer)
        except TimeoutError:
            self._drop()
            raise RetryableError(
                f"no event for {self.options.event_timeout:g} s on the subscription to "
                f"{self.shard_id}; subscribing again"
            ) from None
        except BaseException:
            self._drop()
            raise
        if batch is None:
            self._drop()
            return None
        if batch.next_iterator:
            self._continuation = batch.next_iterator
        if time.monotonic() - subscription.opened_at > self.options.lifetime:
            self._drop()  # renewed by the next read, after this batch's continuation
        return batch

    async def _in_use(self) -> bool:
        """The shard is held by another subscription of this consumer: True after a short wait
        to subscribe again, False once that has lasted past ``in_use_patience``."""
        now = time.monotonic()
        if self._in_use_since is None:
            self._in_use_since = now
        elif now - self._in_use_since > self.options.in_use_patience:
            return False
        await asyncio.sleep(self.options.in_use_retry * (0.5 + random.random() / 2))
        return True

    def _drop(self) -> None:
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            subscription.close()

    def restart(self) -> None:
        self._continuation = None
        self._drop()

    async def aclose(self) -> None:
        self._drop()


class FanOut:
    """The consumer's side of enhanced fan-out: the stream consumer, registered (or found) at
    start; a :class:`SubscriptionFeed` for each worker; deregistered at the end if asked."""

    def __init__(
        self,
        source: StreamSource,
        name: str,
        events: EventLog,
        state: EngineState,
        *,
        deregister_on_exit: bool = False,
        options: FanOutOptions | None = None,
    ) -> None:
        self.source = source
        self.name = name
        self.events = events
        self.state = state
        self.deregister_on_exit = deregister_on_exit
        self.options = options or FanOutOptions()
        self.consumer: StreamConsumer | None = None
        self.stream_arn: str | None = None

    async def register(self, info: StreamInfo) -> None:
        source = self.source
        if not isinstance(source, KinesisSource):
            raise FatalSourceError(
                "--fan-out reads Kinesis Data Streams: DynamoDB Streams has no enhanced fan-out"
            )
        check_name(self.name)
        if not info.arn:
            raise FatalSourceError(
                f"the ARN of stream '{source.stream}' is unknown, and enhanced fan-out needs it: "
                "pass the stream's ARN"
            )

        def waiting(why: str) -> None:
            self.events.emit("fan_out", why)

        self.stream_arn = info.arn  # from here on, --deregister-on-exit has a name to remove
        self.consumer = await register(source, info.arn, self.name, on_wait=waiting)
        self.state.fan_out = self.name
        self.events.emit(
            "fan_out",
            f"reading through enhanced fan-out as stream consumer '{self.name}' "
            f"({self.consumer.arn})",
        )

    def feed(self, shard_id: str) -> Feed:
        assert self.consumer is not None and isinstance(self.source, KinesisSource)
        return SubscriptionFeed(self.source, self.consumer, shard_id, self.state, self.options)

    async def close(self) -> None:
        """Deregister the stream consumer if asked (``--deregister-on-exit``)."""
        stream_arn, self.stream_arn, self.consumer = self.stream_arn, None, None
        if stream_arn is None or not self.deregister_on_exit:
            return
        assert isinstance(self.source, KinesisSource)
        try:
            await deregister(self.source, stream_arn, self.name)
        except SourceError as exc:
            self.events.emit(
                "fan_out",
                f"could not deregister stream consumer '{self.name}': {exc}",
                level=Level.WARNING,
            )
            return
        self.events.emit("fan_out", f"deregistered stream consumer '{self.name}'")
