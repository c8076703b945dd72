"""DynamoDB tables with streams for ``demo --source dynamodb`` (served by server.py).

Only what the console reads goes over HTTP (DescribeTable, DescribeStream, GetShardIterator,
GetRecords); the demo's writer changes items in-process, as the Kinesis demo's producer does.
The stream behaves as AWS's does in what the console depends on: one shard per partition,
shards that roll over (the open shard closes and a child takes over, so lineage grows as it does
on a real table), DescribeStream paged 100 at a time, at most 1,000 records per read, iterators
that expire after 15 minutes, INSERT/MODIFY/REMOVE records with keys and both images.
Items and images stay in DynamoDB JSON (``{"S": "..."}``), exactly as they go on the wire.

A table holds its last ``keep_records`` changes (AWS holds 24 hours'): the oldest closed shards
leave first, as they do on AWS, and an open shard loses its oldest records if it must. A read
behind what is held fails with TrimmedDataAccessException, as on AWS. Records are held as the
JSON text GetRecords sends, a few hundred bytes each, so a demo can run for days.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from console.demo.wire import ApiError, decode_iterator, encode_iterator

_ITERATOR_TTL = 900.0
_SEQ_BASE = 10**20  # 21 digits: the shortest sequence number DynamoDB Streams accepts
_MAX_READ = 1000
DYNAMODB = "DynamoDB_20120810."
STREAMS = "DynamoDBStreams_20120810."

Item = dict[str, dict[str, Any]]  # attribute name → DynamoDB JSON value
# An API operation: the request body in; the response, or its JSON text when it is made of
# pieces held as JSON already.
Operation = Callable[[dict[str, Any]], dict[str, Any] | str]


def _not_found(message: str) -> ApiError:
    return ApiError("ResourceNotFoundException", message)


def _invalid(message: str) -> ApiError:
    return ApiError("ValidationException", message)


def _trimmed(shard_id: str) -> ApiError:
    return ApiError(
        "TrimmedDataAccessException",
        f"Data in shard {shard_id} beyond the retention period cannot be read",
    )


@dataclass(eq=False)
class TableShard:
    shard_id: str
    starting: int
    parent: str | None = None
    ending: int | None = None
    seqs: list[int] = field(default_factory=list)
    records: list[str] = field(default_factory=list)  # each as GetRecords sends it, JSON
    trimmed: int = 0  # records dropped from the front; iterator indexes stay absolute

    def trim(self, count: int) -> None:
        del self.seqs[:count], self.records[:count]
        self.trimmed += count

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ShardId": self.shard_id,
            "SequenceNumberRange": {"StartingSequenceNumber": str(self.starting)},
        }
        if self.parent:
            out["ParentShardId"] = self.parent
        if self.ending is not None:
            out["SequenceNumberRange"]["EndingSequenceNumber"] = str(self.ending)
        return out


@dataclass(eq=False)
class Table:
    name: str
    keys: tuple[str, ...]  # hash key, then range key if any
    arn: str
    stream_arn: str
    label: str
    created: float
    partitions: int
    items: dict[str, Item] = field(default_factory=dict)
    shards: dict[str, TableShard] = field(default_factory=dict)  # in creation order
    open: list[str] = field(default_factory=list)  # the open shard of each partition
    counter: int = 0
    held: int = 0  # records the stream holds, over all its shards
    enabled: bool = True


class EmbeddedDynamoDB:
    """The model. Every method runs on the endpoint's loop thread."""

    def __init__(self, region: str, account: str, keep_records: int = 100_000) -> None:
        self.region = region
        self.account = account
        self.keep = keep_records
        self.tables: dict[str, Table] = {}

    # -- the writer's side ------------------------------------------------------------------

    def create_table(self, name: str, keys: tuple[str, ...], partitions: int = 4) -> Table:
        if name in self.tables:
            raise ApiError("ResourceInUseException", f"Table already exists: {name}")
        now = time.time()
        label = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}"
        )
        arn = f"arn:aws:dynamodb:{self.region}:{self.account}:table/{name}"
        table = Table(name, keys, arn, f"{arn}/stream/{label}", label, now, partitions)
        for _ in range(partitions):
            table.open.append(self._new_shard(table, None).shard_id)
        self.tables[name] = table
        return table

    def put_item(self, table_name: str, item: Item) -> None:
        table = self.tables[table_name]
        key = self._key(table, item)
        old = table.items.get(self._key_text(key))
        table.items[self._key_text(key)] = item
        self._record(table, "MODIFY" if old is not None else "INSERT", key, item, old)

    def update_item(self, table_name: str, key: Item, changes: Item) -> bool:
        """SET the given attributes; False (and no record) if the item does not exist."""
        table = self.tables[table_name]
        old = table.items.get(self._key_text(key))
        if old is None:
            return False
        new = {**old, **changes}
        table.items[self._key_text(key)] = new
        self._record(table, "MODIFY", key, new, old)
        return True

    def delete_item(self, table_name: str, key: Item) -> bool:
        table = self.tables[table_name]
        old = table.items.pop(self._key_text(key), None)
        if old is None:
            return False
        self._record(table, "REMOVE", key, None, old)
        return True

    def disable_stream(self, table_name: str) -> None:
        """StreamEnabled=false: every shard closes, changes are no longer recorded, and what
        the stream holds stays readable (for 24 h on AWS)."""
        table = self.tables[table_name]
        table.enabled = False
        for sid in table.open:
            shard = table.shards[sid]
            shard.ending = shard.seqs[-1] if shard.seqs else shard.starting

    def roll_over(self, table_name: str) -> list[tuple[str, str]]:
        """Close every open shard and give each a child, as DynamoDB does every few hours.
        Returns (parent, child) pairs."""
        table = self.tables[table_name]
        pairs = []
        for i, sid in enumerate(table.open):
            parent = table.shards[sid]
            parent.ending = parent.seqs[-1] if parent.seqs else parent.starting
            child = self._new_shard(table, sid)
            table.open[i] = child.shard_id
            pairs.append((sid, child.shard_id))
        return pairs

    def _new_shard(self, table: Table, parent: str | None) -> TableShard:
        sid = f"shardId-{int(time.time() * 1000):020d}-{uuid.uuid4().hex[:8]}"
        shard = TableShard(sid, _SEQ_BASE + table.counter + 1, parent)
        table.shards[sid] = shard
        return shard

    @staticmethod
    def _key(table: Table, item: Item) -> Item:
        try:
            return {k: item[k] for k in table.keys}
        except KeyError as exc:
            raise _invalid(f"One of the required keys was not given a value: {exc}") from None

    @staticmethod
    def _key_text(key: Item) -> str:
        return json.dumps(key, sort_keys=True, separators=(",", ":"))

    def _record(
        self, table: Table, event: str, key: Item, new: Item | None, old: Item | None
    ) -> None:
        if not table.enabled:
            return
        text = self._key_text(key)
        digest = hashlib.md5(text.encode(), usedforsecurity=False).digest()
        shard = table.shards[table.open[int.from_bytes(digest[:4], "big") % len(table.open)]]
        table.counter += 1
        seq = _SEQ_BASE + table.counter
        change: dict[str, Any] = {
            "ApproximateCreationDateTime": round(time.time(), 3),
            "Keys": key,
            "SequenceNumber": str(seq),
            "SizeBytes": len(text) + len(json.dumps(new or old or {})),
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
        if new is not None:
            change["NewImage"] = new
        if old is not None:
            change["OldImage"] = old
        shard.seqs.append(seq)
        shard.records.append(
            json.dumps(
                {
                    "eventID": uuid.uuid4().hex,
                    "eventName": event,
                    "eventVersion": "1.1",
                    "eventSource": "aws:dynamodb",
                    "awsRegion": self.region,
                    "dynamodb": change,
                },
                separators=(",", ":"),
            )
        )
        table.held += 1
        if table.held > self.keep:
            self._retire(table, shard)

    def _retire(self, table: Table, written: TableShard) -> None:
        """Back to ``keep`` records: the oldest closed shards leave the stream whole; if none
        is left, the shard just written loses its oldest records."""
        for sid in list(table.shards):
            if table.held <= self.keep:
                return
            shard = table.shards[sid]
            if shard.ending is not None:
                del table.shards[sid]
                table.held -= len(shard.records)
        extra = min(table.held - self.keep, len(written.records))
        if extra > 0:
            written.trim(extra)
            table.held -= extra

    # -- the API ----------------------------------------------------------------------------

    def operation(self, target: str) -> Operation | None:
        """The handler for an ``X-Amz-Target`` header, or None if it is not ours."""
        return self._operations().get(target)

    def _operations(self) -> dict[str, Operation]:
        return {
            DYNAMODB + "DescribeTable": self.op_describe_table,
            STREAMS + "DescribeStream": self.op_describe_stream,
            STREAMS + "GetShardIterator": self.op_get_shard_iterator,
            STREAMS + "GetRecords": self.op_get_records,
        }

    def _table(self, name: str) -> Table:
        table = self.tables.get(name)
        if table is None:
            raise _not_found(f"Requested resource not found: Table: {name} not found")
        return table

    def _stream(self, arn: str) -> Table:
        for table in self.tables.values():
            if table.stream_arn == arn:
                return table
        raise _not_found(f"Requested resource not found: Stream: {arn} not found")

    def op_describe_table(self, body: dict[str, Any]) -> dict[str, Any]:
        table = self._table(str(body.get("TableName", "")))
        return {
            "Table": {
                "TableName": table.name,
                "TableArn": table.arn,
                "TableStatus": "ACTIVE",
                "CreationDateTime": table.created,
                "ItemCount": len(table.items),
                "KeySchema": [
                    {"AttributeName": k, "KeyType": "HASH" if i == 0 else "RANGE"}
                    for i, k in enumerate(table.keys)
                ],
                "StreamSpecification": {
                    "StreamEnabled": table.enabled,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
                "LatestStreamArn": table.stream_arn,
                "LatestStreamLabel": table.label,
            }
        }

    def op_describe_stream(self, body: dict[str, Any]) -> dict[str, Any]:
        table = self._stream(str(body.get("StreamArn", "")))
        limit = int(body.get("Limit", 100))
        if not 1 <= limit <= 100:
            raise _invalid("Limit must be between 1 and 100")
        ids = list(table.shards)
        start = body.get("ExclusiveStartShardId")
        first = ids.index(start) + 1 if start in table.shards else 0
        page = ids[first : first + limit]
        out: dict[str, Any] = {
            "StreamArn": table.stream_arn,
            "StreamLabel": table.label,
            "StreamStatus": "ENABLED" if table.enabled else "DISABLED",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "CreationRequestDateTime": table.created,
            "TableName": table.name,
            "KeySchema": self.op_describe_table({"TableName": table.name})["Table"]["KeySchema"],
            "Shards": [table.shards[sid].describe() for sid in page],
        }
        if first + limit < len(ids):
            out["LastEvaluatedShardId"] = page[-1]
        return {"StreamDescription": out}

    def op_get_shard_iterator(self, body: dict[str, Any]) -> dict[str, Any]:
        table = self._stream(str(body.get("StreamArn", "")))
        sid = str(body.get("ShardId", ""))
        shard = table.shards.get(sid)
        if shard is None:
            raise _not_found(f"Requested resource not found: Shard {sid} not found")
        kind = body.get("ShardIteratorType")
        if kind == "TRIM_HORIZON":
            index = shard.trimmed
        elif kind == "LATEST":
            index = shard.trimmed + len(shard.seqs)
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            text = str(body.get("SequenceNumber", ""))
            if not text.isdigit() or not shard.starting <= int(text) <= (
                shard.ending if shard.ending is not None else _SEQ_BASE * 10
            ):
                raise _invalid(f"Invalid SequenceNumber {text!r} for shard {sid}")
            find = bisect.bisect_left if kind == "AT_SEQUENCE_NUMBER" else bisect.bisect_right
            index = shard.trimmed + find(shard.seqs, int(text))
            if shard.trimmed and (not shard.seqs or int(text) < shard.seqs[0]):
                raise _trimmed(sid)
        else:
            raise _invalid(f"Invalid ShardIteratorType: {kind}")
        return {"ShardIterator": self._iterator(table, shard, index)}

    @staticmethod
    def _iterator(table: Table, shard: TableShard, index: int) -> str:
        return encode_iterator(table.name, shard.shard_id, index)

    def op_get_records(self, body: dict[str, Any]) -> str:
        it = decode_iterator(
            str(body.get("ShardIterator", "")),
            _invalid("Invalid ShardIterator"),
            _ITERATOR_TTL,
            ApiError("ExpiredIteratorException", "Iterator expired"),
        )
        name, sid, index = it.container, it.shard_id, it.index
        limit = int(body.get("Limit", _MAX_READ))
        if not 1 <= limit <= _MAX_READ:
            raise _invalid("Limit must be between 1 and 1000")
        table = self._table(name)
        shard = table.shards.get(sid)
        if shard is None:
            raise _not_found(f"Requested resource not found: Shard {sid} not found")
        if index < shard.trimmed:
            raise _trimmed(sid)
        lo = index - shard.trimmed
        hi = min(lo + limit, len(shard.records))
        # Held as JSON already: the page is joined, not encoded again.
        payload = '{"Records":[' + ",".join(shard.records[lo:hi]) + "]"
        if shard.ending is None or hi < len(shard.records):
            iterator = self._iterator(table, shard, shard.trimmed + hi)
            payload += f',"NextShardIterator":"{iterator}"'
        return payload + "}"
