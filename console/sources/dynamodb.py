"""DynamoDB Streams through aioboto3.

The same engine as Kinesis reads it; what differs is kept here:

* A stream is named by its ARN (``arn:aws:dynamodb:REGION:ACCOUNT:table/T/stream/LABEL``), or
  found from a table: its latest stream, which must be enabled.
* Shards are listed with DescribeStream, 100 a page (ExclusiveStartShardId /
  LastEvaluatedShardId). A table's shards roll over every few hours, so a day holds thousands
  of closed shards: the listing is paged defensively and parsed without per-shard waste.
* Records are item changes. Keys and images are decoded with boto3's TypeDeserializer into
  :class:`ChangeRecord`. There is no MillisBehindLatest: the lag is the age of the newest record
  read, and 0 once a read comes back empty at the tip.
* There is no AT_TIMESTAMP iterator: a rewind to an instant reads from TRIM_HORIZON and drops
  the records created before it, here, before the engine sees them. AWS rounds creation times
  down to the second, so the records of the instant's own second are kept: read again rather
  than lost.
"""

from __future__ import annotations

import json
import math
import re
import time
from binascii import a2b_base64
from collections.abc import Callable, Sequence
from typing import Any

from console.model import (
    Batch,
    ChangeRecord,
    Position,
    PositionKind,
    Record,
    Shard,
    json_safe,
)
from console.sources.aws import AwsSettings, ClientSource, Hook, classify, expect, open_client
from console.sources.base import (
    FatalSourceError,
    StreamInfo,
    StreamNotFoundError,
)

_PAGE = 100  # DescribeStream's maximum
RETENTION_HOURS = 24.0
_STREAM_ARN = re.compile(
    r"^arn:aws[a-z-]*:dynamodb:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"table/(?P<table>[A-Za-z0-9_.-]{3,255})/stream/(?P<label>[^/\s]+)$"
)
_ENABLE = (
    "aws dynamodb update-table --table-name {table} "
    "--stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES"
)


def is_stream_arn(text: str) -> bool:
    return _STREAM_ARN.match(text) is not None


def display_name(arn: str) -> str:
    """``TABLE/stream/LABEL``: short, and still tells two streams of one table apart."""
    match = _STREAM_ARN.match(arn)
    return f"{match['table']}/stream/{match['label']}" if match else arn


def shard_from_api(item: dict[str, Any]) -> Shard:
    seqs = item.get("SequenceNumberRange") or {}
    return Shard(
        shard_id=item["ShardId"],
        parent_id=item.get("ParentShardId") or None,
        starting_sequence_number=seqs.get("StartingSequenceNumber"),
        ending_sequence_number=seqs.get("EndingSequenceNumber"),
    )


def _deserializer() -> Any:
    from boto3.dynamodb.types import TypeDeserializer

    return TypeDeserializer()


def json_value(value: dict[str, Any]) -> Any:
    """An attribute value as the JSON wire carries it (binary in base64) to the Python value
    boto3's TypeDeserializer makes of botocore's parse: Decimal, Binary, set, dict, list."""
    from boto3.dynamodb.types import DYNAMODB_CONTEXT, Binary

    ((kind, raw),) = value.items()
    if kind in ("S", "BOOL"):
        return raw
    if kind == "N":
        return DYNAMODB_CONTEXT.create_decimal(raw)
    if kind == "M":
        return {k: json_value(v) for k, v in raw.items()}
    if kind == "L":
        return [json_value(v) for v in raw]
    if kind == "NULL":
        return None
    if kind == "B":
        return Binary(a2b_base64(raw))
    if kind == "SS":
        return set(raw)
    if kind == "NS":
        return {DYNAMODB_CONTEXT.create_decimal(v) for v in raw}
    if kind == "BS":
        return {Binary(a2b_base64(v)) for v in raw}
    raise TypeError(f"unknown DynamoDB attribute type {kind}")


def records_from_api(raw: Sequence[dict[str, Any]], load: Callable[[Any], Any]) -> list[Record]:
    """One ChangeRecord per stream record. Keys and images become Python values through
    ``load`` (:func:`json_value` on the fast read path, boto3's TypeDeserializer after botocore's
    parser); ``data`` is the change as compact JSON and ``partition_key`` the keys as compact
    JSON."""
    dumps = json.dumps
    out: list[Record] = []
    for item in raw:
        change = item.get("dynamodb") or {}
        keys = {k: load(v) for k, v in (change.get("Keys") or {}).items()}
        new = change.get("NewImage")
        old = change.get("OldImage")
        new_image = {k: load(v) for k, v in new.items()} if new is not None else None
        old_image = {k: load(v) for k, v in old.items()} if old is not None else None
        event = str(item.get("eventName", ""))
        safe_keys = json_safe(keys)
        data = dumps(
            {
                "event_name": event,
                "keys": safe_keys,
                "new_image": json_safe(new_image),
                "old_image": json_safe(old_image),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
        out.append(
            ChangeRecord(
                change["SequenceNumber"],
                dumps(safe_keys, separators=(",", ":"), sort_keys=True, ensure_ascii=False),
                data,
                float(change.get("ApproximateCreationDateTime") or 0.0),
                event_name=event,
                keys=keys,
                new_image=new_image,
                old_image=old_image,
            )
        )
    return out


def created_since(records: list[Record], since: float) -> list[Record]:
    """The records an AT_TIMESTAMP read of ``since`` returns. A record created at or after it
    carries a creation time rounded down to the second, so the comparison is with the start of
    that second."""
    floor = math.floor(since)
    return [r for r in records if r.approximate_arrival >= floor]


class DynamoDBSource(ClientSource):
    """One DynamoDB stream, one client. ``table=True`` takes ``stream`` as a table name and
    resolves its latest stream in :meth:`describe`."""

    kind = "dynamodb"
    service = "dynamodbstreams"
    max_records_per_call = 1_000
    min_call_interval = 0.25  # AWS advises about four reads per second per shard
    retention_text = "the 24 h retention"

    def __init__(
        self,
        stream: str,
        settings: AwsSettings,
        hooks: Sequence[Hook] = (),
        *,
        table: bool = False,
        page_size: int = _PAGE,
    ) -> None:
        if not table and not is_stream_arn(stream):
            raise FatalSourceError(
                f"'{stream}' is not a DynamoDB stream ARN "
                "(arn:aws:dynamodb:REGION:ACCOUNT:table/TABLE/stream/LABEL): "
                "pass the ARN, or --source dynamodb TABLE"
            )
        match = _STREAM_ARN.match(stream)
        self.arn: str | None = None if table else stream
        self.table = match["table"] if match else stream
        self.stream = display_name(stream) if self.arn else stream
        super().__init__(settings, hooks)
        self._page = page_size
        self._deserializer = _deserializer()
        # AT_TIMESTAMP, emulated: iterator → the instant its records must not be older than.
        self._since: dict[str, float] = {}

    async def _resolve(self) -> str:
        """The table's latest stream ARN; a table without an enabled stream is a usage error
        that names the fix."""
        if self.arn is not None:
            return self.arn
        async with open_client("dynamodb", self.settings, self._hooks) as client:
            try:
                table = (await client.describe_table(TableName=self.table))["Table"]
            except Exception as exc:
                missing = StreamNotFoundError(
                    f"table '{self.table}' not found at {self._where()}: check the name, "
                    "--region and --endpoint-url"
                )
                raise classify(exc, f"describing table '{self.table}'", missing) from exc
        arn = table.get("LatestStreamArn")
        spec = table.get("StreamSpecification") or {}
        fix = _ENABLE.format(table=self.table)
        if not arn:
            raise FatalSourceError(f"table '{self.table}' has no stream: enable one with: {fix}")
        if not spec.get("StreamEnabled"):
            raise FatalSourceError(
                f"the stream of table '{self.table}' is disabled: enable it with: {fix} "
                "(or pass the old stream's ARN to read what it still holds)"
            )
        self.arn = str(arn)
        self.stream = display_name(self.arn)
        return self.arn

    async def _describe_page(self, start: str | None, limit: int) -> dict[str, Any]:
        arn = await self._resolve()
        kwargs: dict[str, Any] = {"StreamArn": arn, "Limit": limit}
        if start is not None:
            kwargs["ExclusiveStartShardId"] = start
        try:
            resp = await self._call("DescribeStream", kwargs)
        except Exception as exc:
            missing = StreamNotFoundError(
                f"stream '{arn}' not found at {self._where()}: check the ARN, --region and "
                "--endpoint-url (a table's current stream: --source dynamodb TABLE)"
            )
            raise classify(exc, f"describing stream '{self.stream}'", missing) from exc
        return dict(expect(resp, "StreamDescription", f"describing stream '{self.stream}'"))

    async def describe(self) -> StreamInfo:
        desc = await self._describe_page(None, 1)
        status = str(desc.get("StreamStatus", "ENABLED"))
        created = desc.get("CreationRequestDateTime")
        return StreamInfo(
            name=self.stream,
            arn=self.arn,
            status=status,
            retention_hours=RETENTION_HOURS,
            created_at=float(created) if isinstance(created, int | float) else None,
            open_shards=None,
        )

    async def list_shards(self) -> list[Shard]:
        """Every shard the stream still holds, page after page. A repeated or missing
        LastEvaluatedShardId ends the listing, so no emulator can loop us."""
        shards: dict[str, Shard] = {}
        start: str | None = None
        while True:
            desc = await self._describe_page(start, self._page)
            for item in desc.get("Shards") or ():
                shards[item["ShardId"]] = shard_from_api(item)
            last = desc.get("LastEvaluatedShardId")
            if not last or last == start:
                break
            start = str(last)
        return list(shards.values())

    async def get_iterator(self, shard_id: str, position: Position) -> str:
        arn = await self._resolve()
        since: float | None = None
        kind = position.kind
        if kind is PositionKind.AT_TIMESTAMP:
            since, kind = position.timestamp, PositionKind.TRIM_HORIZON
        kwargs: dict[str, Any] = {
            "StreamArn": arn,
            "ShardId": shard_id,
            "ShardIteratorType": kind.value,
        }
        if kind in (PositionKind.AT_SEQUENCE_NUMBER, PositionKind.AFTER_SEQUENCE_NUMBER):
            kwargs["SequenceNumber"] = position.sequence_number
        iterator = await self._shard_iterator(shard_id, kwargs)
        if since is not None:
            if len(self._since) > 10_000:  # iterators abandoned mid-skip; never grow unbounded
                self._since.clear()
            self._since[iterator] = since
        return iterator

    async def get_records(self, iterator: str, limit: int) -> Batch:
        try:
            resp = await self._call(
                "GetRecords",
                {"ShardIterator": iterator, "Limit": min(limit, self.max_records_per_call)},
            )
        except Exception as exc:
            raise classify(exc, "reading records") from exc
        load = json_value if self._wire else self._deserializer.deserialize
        records = records_from_api(expect(resp, "Records", "reading records") or (), load)
        following = resp.get("NextShardIterator")
        # The lag of the page as read: a page emptied by a rewind's filter is not the tip, and
        # the worker must read on at once rather than idle.
        lag = int(max(0.0, time.time() - records[-1].approximate_arrival) * 1000) if records else 0
        since = self._since.pop(iterator, None)
        if since is not None:
            kept = created_since(records, since)
            if not kept and following:
                self._since[following] = since  # still before the instant: keep dropping
                if records:
                    lag = max(lag, 1)  # behind, however fresh: there is more to read
            records = kept
        return Batch(
            records=records,
            next_iterator=following,
            millis_behind_latest=lag,
        )
