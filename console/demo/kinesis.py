"""Kinesis Data Streams for the demo: real JSON protocol, true lineage (served by server.py).

Why not moto's server: in moto 5.2 a split re-routes the parent's records and keeps writing to the
closed parent, a merge copies parents' records into the child, a closed shard never ends its
iterator, and every put and read walks the whole shard. The demo exists to show resharding, so it
needs an endpoint that gets it right. This one implements the operations the demo and the console
use (CreateStream, DescribeStream, DescribeStreamSummary, ListStreams, ListShards,
GetShardIterator, GetRecords, PutRecord, PutRecords, SplitShard, MergeShards) with AWS's
semantics: writes go to open shards only, a closed shard's iterator ends with ChildShards,
iterators expire after five minutes, reads are O(log n + batch).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from console.demo.wire import ApiError, decode_iterator, encode_iterator

_MAX_HASH = 2**128 - 1
_ITERATOR_TTL = 300.0
TARGET = "Kinesis_20131202."


def _invalid(message: str) -> ApiError:
    return ApiError("InvalidArgumentException", message)


@dataclass(eq=False)
class KinesisShard:
    index: int
    start_hash: int
    end_hash: int
    parent: str | None = None
    adjacent: str | None = None
    closed: bool = False
    seqs: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)
    trimmed: int = 0  # records dropped from the front (retention); indexes stay absolute
    counter: int = 0

    @property
    def shard_id(self) -> str:
        return f"shardId-{self.index:012d}"

    @property
    def first_seq(self) -> int:
        return int(f"49{self.index:06d}{0:048d}")

    @property
    def last_possible_seq(self) -> int:
        return int(f"49{self.index:06d}{'9' * 48}")

    @property
    def end(self) -> int:
        """Absolute index one past the newest record."""
        return self.trimmed + len(self.seqs)

    def append(self, key: str, data: bytes, now: float) -> int:
        self.counter += 1
        seq = self.first_seq + self.counter
        arrival = max(now, self.arrivals[-1]) if self.arrivals else now
        self.seqs.append(seq)
        self.arrivals.append(arrival)
        self.keys.append(key)
        self.data.append(data)
        return seq

    def trim(self, keep: int) -> None:
        extra = len(self.seqs) - keep
        if extra > 0:
            del self.seqs[:extra], self.arrivals[:extra], self.keys[:extra], self.data[:extra]
            self.trimmed += extra

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ShardId": self.shard_id,
            "HashKeyRange": {
                "StartingHashKey": str(self.start_hash),
                "EndingHashKey": str(self.end_hash),
            },
            "SequenceNumberRange": {"StartingSequenceNumber": str(self.first_seq)},
        }
        if self.parent:
            out["ParentShardId"] = self.parent
        if self.adjacent:
            out["AdjacentParentShardId"] = self.adjacent
        if self.closed:
            out["SequenceNumberRange"]["EndingSequenceNumber"] = str(self.last_possible_seq)
        return out


@dataclass(eq=False)
class KinesisStream:
    name: str
    arn: str
    created: float
    shards: dict[str, KinesisShard] = field(default_factory=dict)
    retention_hours: int = 24

    def next_index(self) -> int:
        return len(self.shards)

    def open_shards(self) -> list[KinesisShard]:
        return sorted((s for s in self.shards.values() if not s.closed), key=lambda s: s.start_hash)


class EmbeddedKinesis:
    """The model and its operations. Every method runs on the endpoint's loop thread."""

    def __init__(self, region: str, account: str, keep_records_per_shard: int = 200_000) -> None:
        self.region = region
        self.account = account
        self.keep = keep_records_per_shard
        self.streams: dict[str, KinesisStream] = {}

    def operation(self, target: str) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        """The handler for an ``X-Amz-Target`` header, or None if it is not ours."""
        if not target.startswith(TARGET):
            return None
        method = _OPERATIONS.get(target[len(TARGET) :])
        return None if method is None else getattr(self, method)

    # -- model ------------------------------------------------------------------------------

    def create_stream(self, name: str, shard_count: int) -> KinesisStream:
        if name in self.streams:
            raise ApiError("ResourceInUseException", f"Stream {name} already exists")
        if not 1 <= shard_count <= 1000:
            raise _invalid("ShardCount must be between 1 and 1000")
        stream = KinesisStream(
            name, f"arn:aws:kinesis:{self.region}:{self.account}:stream/{name}", time.time()
        )
        step = (_MAX_HASH + 1) // shard_count
        for i in range(shard_count):
            end = _MAX_HASH if i == shard_count - 1 else (i + 1) * step - 1
            shard = KinesisShard(i, i * step, end)
            stream.shards[shard.shard_id] = shard
        self.streams[name] = stream
        return stream

    def stream(self, body: dict[str, Any]) -> KinesisStream:
        name = body.get("StreamName")
        arn = body.get("StreamARN")
        if arn and not name:
            name = str(arn).rsplit("/", 1)[-1]
        stream = self.streams.get(str(name))
        if stream is None or (arn and stream.arn != arn):
            raise ApiError(
                "ResourceNotFoundException",
                f"Stream {name} under account {self.account} not found.",
            )
        return stream

    def _shard(self, stream: KinesisStream, shard_id: str) -> KinesisShard:
        shard = stream.shards.get(shard_id)
        if shard is None:
            raise ApiError(
                "ResourceNotFoundException",
                f"Shard {shard_id} in stream {stream.name} under account {self.account} "
                "does not exist",
            )
        return shard

    def put(
        self, name: str, key: str, data: bytes, explicit_hash_key: str | None = None
    ) -> tuple[str, int]:
        stream = self.streams[name]
        h = int(explicit_hash_key) if explicit_hash_key else hash_key(key)
        for shard in stream.open_shards():
            if shard.start_hash <= h <= shard.end_hash:
                seq = shard.append(key, data, time.time())
                if len(shard.seqs) > self.keep:
                    shard.trim(self.keep)
                return shard.shard_id, seq
        raise ApiError("InternalFailure", "no open shard covers the hash key", 500)

    def split(self, name: str, shard_id: str, new_start: int) -> tuple[str, str]:
        stream = self.streams[name]
        parent = self._shard(stream, shard_id)
        if parent.closed:
            raise ApiError(
                "ResourceInUseException", f"Shard {shard_id} has already been split or merged"
            )
        if not parent.start_hash < new_start <= parent.end_hash:
            raise _invalid(f"NewStartingHashKey {new_start} is outside shard {shard_id}")
        first = KinesisShard(stream.next_index(), parent.start_hash, new_start - 1, parent=shard_id)
        stream.shards[first.shard_id] = first
        second = KinesisShard(stream.next_index(), new_start, parent.end_hash, parent=shard_id)
        stream.shards[second.shard_id] = second
        parent.closed = True
        return first.shard_id, second.shard_id

    def merge(self, name: str, shard_id: str, adjacent_id: str) -> str:
        stream = self.streams[name]
        a = self._shard(stream, shard_id)
        b = self._shard(stream, adjacent_id)
        if a.closed or b.closed:
            raise ApiError("ResourceInUseException", "a shard to merge is already closed")
        if b.start_hash == a.end_hash + 1:
            low, high = a, b
        elif a.start_hash == b.end_hash + 1:
            low, high = b, a
        else:
            raise _invalid(f"shards {shard_id} and {adjacent_id} are not adjacent")
        child = KinesisShard(
            stream.next_index(),
            low.start_hash,
            high.end_hash,
            parent=shard_id,
            adjacent=adjacent_id,
        )
        stream.shards[child.shard_id] = child
        a.closed = b.closed = True
        return child.shard_id

    # -- operations -------------------------------------------------------------------------

    def op_create_stream(self, body: dict[str, Any]) -> dict[str, Any]:
        self.create_stream(str(body.get("StreamName", "")), int(body.get("ShardCount", 1)))
        return {}

    def op_list_streams(self, body: dict[str, Any]) -> dict[str, Any]:
        names = sorted(self.streams)
        return {
            "StreamNames": names,
            "HasMoreStreams": False,
            "StreamSummaries": [
                {
                    "StreamName": n,
                    "StreamARN": self.streams[n].arn,
                    "StreamStatus": "ACTIVE",
                    "StreamCreationTimestamp": self.streams[n].created,
                }
                for n in names
            ],
        }

    def op_describe_stream_summary(self, body: dict[str, Any]) -> dict[str, Any]:
        stream = self.stream(body)
        return {
            "StreamDescriptionSummary": {
                "StreamName": stream.name,
                "StreamARN": stream.arn,
                "StreamStatus": "ACTIVE",
                "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                "RetentionPeriodHours": stream.retention_hours,
                "StreamCreationTimestamp": stream.created,
                "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
                "EncryptionType": "NONE",
                "OpenShardCount": len(stream.open_shards()),
                "ConsumerCount": 0,
            }
        }

    def op_describe_stream(self, body: dict[str, Any]) -> dict[str, Any]:
        stream = self.stream(body)
        shards = list(stream.shards.values())
        start = body.get("ExclusiveStartShardId")
        if start:
            shards = [s for s in shards if s.shard_id > start]
        limit = int(body.get("Limit", 100))
        page = shards[:limit]
        return {
            "StreamDescription": {
                "StreamName": stream.name,
                "StreamARN": stream.arn,
                "StreamStatus": "ACTIVE",
                "Shards": [s.describe() for s in page],
                "HasMoreShards": len(shards) > limit,
                "RetentionPeriodHours": stream.retention_hours,
                "StreamCreationTimestamp": stream.created,
                "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
                "EncryptionType": "NONE",
            }
        }

    def op_list_shards(self, body: dict[str, Any]) -> dict[str, Any]:
        token = body.get("NextToken")
        limit = int(body.get("MaxResults", 1000))
        if not 1 <= limit <= 10000:
            raise _invalid("MaxResults must be between 1 and 10000")
        if token:
            if body.get("StreamName") or body.get("StreamARN"):
                raise _invalid("NextToken and StreamName cannot be provided together.")
            try:
                name, offset_text = base64.b64decode(token).decode().rsplit("|", 1)
                offset = int(offset_text)
            except (ValueError, binascii.Error):
                raise _invalid("Invalid NextToken.") from None
            stream = self.stream({"StreamName": name})
        else:
            stream = self.stream(body)
            offset = 0
        shards = list(stream.shards.values())
        start = body.get("ExclusiveStartShardId")
        if start and not token:
            shards = [s for s in shards if s.shard_id > start]
        page = shards[offset : offset + limit]
        out: dict[str, Any] = {"Shards": [s.describe() for s in page]}
        if offset + limit < len(shards):
            out["NextToken"] = base64.b64encode(f"{stream.name}|{offset + limit}".encode()).decode()
        return out

    def op_get_shard_iterator(self, body: dict[str, Any]) -> dict[str, Any]:
        stream = self.stream(body)
        shard = self._shard(stream, str(body.get("ShardId")))
        kind = body.get("ShardIteratorType")
        if kind == "TRIM_HORIZON":
            index = shard.trimmed
        elif kind == "LATEST":
            index = shard.end
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            text = str(body.get("StartingSequenceNumber", ""))
            if not text.isdigit():
                raise _invalid(f"StartingSequenceNumber {text!r} is not a sequence number")
            seq = int(text)
            if not shard.first_seq <= seq <= shard.last_possible_seq:
                raise _invalid(
                    f"StartingSequenceNumber {text} used in GetShardIterator on shard "
                    f"{shard.shard_id} in stream {stream.name} is invalid"
                )
            find = bisect.bisect_left if kind == "AT_SEQUENCE_NUMBER" else bisect.bisect_right
            index = shard.trimmed + find(shard.seqs, seq)
        elif kind == "AT_TIMESTAMP":
            try:
                ts = float(body["Timestamp"])
            except (KeyError, TypeError, ValueError):
                raise _invalid("AT_TIMESTAMP needs a Timestamp") from None
            index = shard.trimmed + bisect.bisect_left(shard.arrivals, ts)
        else:
            raise _invalid(f"Invalid ShardIteratorType: {kind}")
        return {"ShardIterator": self._iterator(stream, shard, index)}

    @staticmethod
    def _iterator(stream: KinesisStream, shard: KinesisShard, index: int) -> str:
        return encode_iterator(stream.name, shard.shard_id, index)

    def op_get_records(self, body: dict[str, Any]) -> dict[str, Any]:
        it = decode_iterator(
            str(body.get("ShardIterator", "")),
            _invalid("Invalid ShardIterator."),
            _ITERATOR_TTL,
            ApiError("ExpiredIteratorException", "Iterator expired."),
        )
        limit = int(body.get("Limit", 10000))
        if not 1 <= limit <= 10000:
            raise _invalid("Limit must be between 1 and 10000")
        stream = self.stream({"StreamName": it.container})
        shard = self._shard(stream, it.shard_id)
        index = max(it.index, shard.trimmed)
        lo = index - shard.trimmed
        hi = min(lo + limit, len(shard.seqs))
        records = [
            {
                "SequenceNumber": str(shard.seqs[i]),
                "ApproximateArrivalTimestamp": shard.arrivals[i],
                "Data": base64.b64encode(shard.data[i]).decode(),
                "PartitionKey": shard.keys[i],
            }
            for i in range(lo, hi)
        ]
        at_end = hi >= len(shard.seqs)
        out: dict[str, Any] = {
            "Records": records,
            "MillisBehindLatest": 0
            if at_end
            else max(0, int((time.time() - shard.arrivals[hi]) * 1000)),
        }
        if shard.closed and at_end:
            out["NextShardIterator"] = None
            out["ChildShards"] = [
                {
                    "ShardId": child.shard_id,
                    "ParentShards": [p for p in (child.parent, child.adjacent) if p],
                    "HashKeyRange": child.describe()["HashKeyRange"],
                }
                for child in stream.shards.values()
                if shard.shard_id in (child.parent, child.adjacent)
            ]
        else:
            out["NextShardIterator"] = self._iterator(stream, shard, shard.trimmed + hi)
        return out

    def op_put_record(self, body: dict[str, Any]) -> dict[str, Any]:
        stream = self.stream(body)
        shard_id, seq = self.put(
            stream.name,
            str(body.get("PartitionKey", "")),
            _b64(body.get("Data")),
            body.get("ExplicitHashKey"),
        )
        return {"ShardId": shard_id, "SequenceNumber": str(seq)}

    def op_put_records(self, body: dict[str, Any]) -> dict[str, Any]:
        stream = self.stream(body)
        results = []
        for item in body.get("Records") or ():
            shard_id, seq = self.put(
                stream.name,
                str(item.get("PartitionKey", "")),
                _b64(item.get("Data")),
                item.get("ExplicitHashKey"),
            )
            results.append({"ShardId": shard_id, "SequenceNumber": str(seq)})
        return {"FailedRecordCount": 0, "Records": results}

    def op_split_shard(self, body: dict[str, Any]) -> dict[str, Any]:
        stream = self.stream(body)
        try:
            new_start = int(str(body.get("NewStartingHashKey")))
        except ValueError:
            raise _invalid("NewStartingHashKey is not a number") from None
        self.split(stream.name, str(body.get("ShardToSplit")), new_start)
        return {}

    def op_merge_shards(self, body: dict[str, Any]) -> dict[str, Any]:
        stream = self.stream(body)
        self.merge(
            stream.name, str(body.get("ShardToMerge")), str(body.get("AdjacentShardToMerge"))
        )
        return {}


def hash_key(partition_key: str) -> int:
    """Where Kinesis puts a partition key: the MD5 of its UTF-8 bytes, as a 128-bit integer."""
    return int(hashlib.md5(partition_key.encode(), usedforsecurity=False).hexdigest(), 16)


def _b64(value: Any) -> bytes:
    try:
        return base64.b64decode(str(value or ""), validate=True)
    except (ValueError, binascii.Error):
        raise ApiError("SerializationException", "Data is not base64") from None


_OPERATIONS = {
    "CreateStream": "op_create_stream",
    "ListStreams": "op_list_streams",
    "DescribeStream": "op_describe_stream",
    "DescribeStreamSummary": "op_describe_stream_summary",
    "ListShards": "op_list_shards",
    "GetShardIterator": "op_get_shard_iterator",
    "GetRecords": "op_get_records",
    "PutRecord": "op_put_record",
    "PutRecords": "op_put_records",
    "SplitShard": "op_split_shard",
    "MergeShards": "op_merge_shards",
}
