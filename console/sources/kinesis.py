"""Kinesis Data Streams through aioboto3."""

from __future__ import annotations

import asyncio
import time
from binascii import a2b_base64
from collections.abc import Callable, Sequence
from typing import Any

from console.model import Batch, Position, PositionKind, Record, Shard
from console.sources.aggregation import MAGIC, deaggregate
from console.sources.aws import AwsSettings, ClientSource, Hook, classify, expect
from console.sources.base import (
    FatalSourceError,
    StreamInfo,
    StreamNotFoundError,
)
from console.sources.seek import NOT_ASKED_FOR, resume_after, seek_time

_PAGE = 1000


def stream_name(stream: str) -> str:
    """The name part of a stream name or ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)."""
    return stream.rsplit("/", 1)[-1] if stream.startswith("arn:") else stream


def shard_from_api(item: dict[str, Any]) -> Shard:
    hashes = item.get("HashKeyRange") or {}
    seqs = item.get("SequenceNumberRange") or {}
    return Shard(
        shard_id=item["ShardId"],
        parent_id=item.get("ParentShardId") or None,
        adjacent_parent_id=item.get("AdjacentParentShardId") or None,
        starting_hash_key=hashes.get("StartingHashKey"),
        ending_hash_key=hashes.get("EndingHashKey"),
        starting_sequence_number=seqs.get("StartingSequenceNumber"),
        ending_sequence_number=seqs.get("EndingSequenceNumber"),
    )


def child_from_api(item: dict[str, Any]) -> Shard:
    parents = list(item.get("ParentShards") or ())
    hashes = item.get("HashKeyRange") or {}
    return Shard(
        shard_id=item["ShardId"],
        parent_id=parents[0] if parents else None,
        adjacent_parent_id=parents[1] if len(parents) > 1 else None,
        starting_hash_key=hashes.get("StartingHashKey"),
        ending_hash_key=hashes.get("EndingHashKey"),
    )


def _as_parsed(data: bytes) -> bytes:
    return data


def records_from_api(
    raw: Sequence[dict[str, Any]], blob: Callable[[Any], bytes] = _as_parsed
) -> list[Record]:
    """The per-record path: one slotted object per record, deaggregation only when the magic
    bytes say so. ``blob`` makes bytes of ``Data``: base64 decoding on the fast read path,
    nothing after botocore's parser."""
    out: list[Record] = []
    append = out.append
    for item in raw:
        data = blob(item["Data"])
        if data.startswith(MAGIC):
            out.extend(
                deaggregate(
                    item["SequenceNumber"],
                    item["PartitionKey"],
                    data,
                    float(item["ApproximateArrivalTimestamp"]),
                )
            )
        else:
            append(
                Record(
                    item["SequenceNumber"],
                    item["PartitionKey"],
                    data,
                    float(item["ApproximateArrivalTimestamp"]),
                )
            )
    return out


class KinesisSource(ClientSource):
    """One stream, one client. Use as ``async with KinesisSource(...) as source``."""

    kind = "kinesis"
    service = "kinesis"
    max_records_per_call = 10_000
    min_call_interval = 0.2  # at most 5 GetRecords per second per shard

    def __init__(
        self,
        stream: str,
        settings: AwsSettings,
        hooks: Sequence[Hook] = (),
        *,
        page_size: int = _PAGE,
    ) -> None:
        self._ident: dict[str, str] = (
            {"StreamARN": stream} if stream.startswith("arn:") else {"StreamName": stream}
        )
        super().__init__(settings, hooks)
        self.stream = stream_name(stream)
        # Real AWS pages ListShards with NextToken alone; moto wants the stream name repeated.
        self._token_alone = True
        self._page = page_size
        # When GetShardIterator AT_TIMESTAMP is asked again, after it did not answer (stock
        # kinesalite does not when no record is that new).
        self._ask_at_timestamp_from = 0.0

    def _not_found(self) -> StreamNotFoundError:
        return StreamNotFoundError(
            f"stream '{self.stream}' not found at {self._where()}: check the name, --region and "
            "--endpoint-url"
        )

    async def describe(self) -> StreamInfo:
        try:
            resp = await self._client.describe_stream_summary(**self._ident)
        except Exception as exc:
            raise classify(exc, f"describing stream '{self.stream}'", self._not_found()) from exc
        summary = resp["StreamDescriptionSummary"]
        created = summary.get("StreamCreationTimestamp")
        return StreamInfo(
            name=summary.get("StreamName", self.stream),
            arn=summary.get("StreamARN"),
            status=summary.get("StreamStatus", "ACTIVE"),
            retention_hours=float(summary.get("RetentionPeriodHours", 24)),
            created_at=float(created) if isinstance(created, int | float) else None,
            open_shards=summary.get("OpenShardCount"),
        )

    async def list_shards(self) -> list[Shard]:
        """Every shard, open and closed, in the order the service lists them.

        Pages defensively: a repeated token ends the listing, and shards are de-duplicated, so
        an emulator that ignores paging parameters cannot loop us forever."""
        shards: dict[str, Shard] = {}
        kwargs: dict[str, Any] = {**self._ident, "MaxResults": self._page}
        seen_tokens: set[str] = set()
        while True:
            try:
                resp = await self._call("ListShards", kwargs)
            except Exception as exc:
                err = classify(exc, f"listing shards of '{self.stream}'", self._not_found())
                # A page after the first that carries the token alone, as AWS wants it, and is
                # refused: moto wants the stream named again (5.1 says the request is invalid,
                # 5.2.6 says the stream is not found, though the first page found it). Asked
                # again with the stream named; a stream really gone fails that way too.
                if (
                    "NextToken" in kwargs
                    and self._token_alone
                    and isinstance(err, FatalSourceError)
                ):
                    self._token_alone = False
                    kwargs = {
                        **self._ident,
                        "NextToken": kwargs["NextToken"],
                        "MaxResults": self._page,
                    }
                    continue
                raise err from exc
            for item in expect(resp, "Shards", f"listing shards of '{self.stream}'") or ():
                shard = shard_from_api(item)
                shards[shard.shard_id] = shard
            token = resp.get("NextToken")
            if not token or token in seen_tokens:
                break
            seen_tokens.add(token)
            if self._token_alone:
                kwargs = {"NextToken": token, "MaxResults": self._page}
            else:
                kwargs = {**self._ident, "NextToken": token, "MaxResults": self._page}
        return list(shards.values())

    async def get_iterator(self, shard_id: str, position: Position) -> str:
        """An iterator at ``position``. AT_TIMESTAMP is given ANSWER_WITHIN seconds (Kinesis
        answers at once); an endpoint that does not answer it (stock kinesalite, when no record
        is that new) has the time found by reading the shard instead (console.sources.seek),
        and is not asked again for the next NOT_ASKED_FOR seconds."""
        if position.kind is PositionKind.AT_TIMESTAMP and position.timestamp is not None:
            if time.monotonic() >= self._ask_at_timestamp_from:
                try:
                    async with asyncio.timeout(self.settings.at_timestamp_within):
                        return await self.raw_iterator(shard_id, position)
                except TimeoutError:
                    self._ask_at_timestamp_from = time.monotonic() + NOT_ASKED_FOR
            found = await seek_time(self, shard_id, position.timestamp)
            return await self.raw_iterator(shard_id, resume_after(found))
        return await self.raw_iterator(shard_id, position)

    async def raw_iterator(self, shard_id: str, position: Position) -> str:
        """GetShardIterator at ``position``, as the service answers it."""
        kwargs: dict[str, Any] = {
            **self._ident,
            "ShardId": shard_id,
            "ShardIteratorType": position.kind.value,
        }
        if position.kind is PositionKind.AT_TIMESTAMP:
            kwargs["Timestamp"] = position.timestamp
        elif position.kind in (
            PositionKind.AT_SEQUENCE_NUMBER,
            PositionKind.AFTER_SEQUENCE_NUMBER,
        ):
            kwargs["StartingSequenceNumber"] = position.sequence_number
        return await self._shard_iterator(shard_id, kwargs)

    async def get_records(self, iterator: str, limit: int) -> Batch:
        try:
            resp = await self._call("GetRecords", {"ShardIterator": iterator, "Limit": limit})
        except Exception as exc:
            raise classify(exc, "reading records") from exc
        raw = expect(resp, "Records", "reading records") or ()
        children = resp.get("ChildShards")
        return Batch(
            records=records_from_api(raw, a2b_base64 if self._wire else _as_parsed),
            next_iterator=resp.get("NextShardIterator"),
            millis_behind_latest=resp.get("MillisBehindLatest"),
            child_shards=tuple(child_from_api(c) for c in children) if children else (),
        )
