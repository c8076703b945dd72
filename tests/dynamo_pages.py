"""A DynamoDB stream of thousands of shards, as DescribeStream pages answered at the client
boundary (botocore's before-send event): the tests page through it, the P4 benchmark times it.
No emulator has multi-shard DynamoDB lineage; AWS's shape is reproduced here instead."""

from __future__ import annotations

import json
from typing import Any

ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-25T00:00:00.000"


class GeneratedStream:
    """Answers DescribeStream as AWS would for a stream of ``count`` shards, each rolled over
    from the one before in its partition, the first of each partition's parent long gone."""

    def __init__(self, arn: str, count: int, partitions: int = 4) -> None:
        self.arn = arn
        self.pages: list[str | None] = []
        self.shards: list[dict[str, Any]] = []
        for i in range(count):
            part, step = i % partitions, i // partitions
            item: dict[str, Any] = {
                "ShardId": f"shardId-{step:020d}-{part:08x}",
                "SequenceNumberRange": {"StartingSequenceNumber": str(10**20 + i * 1000)},
                # Step 0's parents left with the 24 h retention: listed as parents, not as shards.
                "ParentShardId": f"shardId-{'9' * 20}-{part:08x}"
                if step == 0
                else f"shardId-{step - 1:020d}-{part:08x}",
            }
            if i < count - partitions:
                item["SequenceNumberRange"]["EndingSequenceNumber"] = str(10**20 + i * 1000 + 999)
            self.shards.append(item)
        self._index = {s["ShardId"]: i for i, s in enumerate(self.shards)}
        self._bodies: dict[tuple[str | None, int], bytes] = {}

    def hook(self, request: Any, event_name: str = "", **_: Any) -> Any:
        if not event_name.endswith(".DescribeStream"):
            return None
        body = json.loads(request.body)
        start = body.get("ExclusiveStartShardId")
        limit = int(body.get("Limit", 100))
        self.pages.append(start)
        payload = self._bodies.get((start, limit))
        if payload is None:  # encoded once: a benchmark times the client, not this
            payload = self._bodies[(start, limit)] = self._page(start, limit)
        return _ok(request.url, payload)

    def _page(self, start: str | None, limit: int) -> bytes:
        first = self._index[start] + 1 if start else 0
        page = self.shards[first : first + limit]
        desc: dict[str, Any] = {
            "StreamArn": self.arn,
            "StreamStatus": "ENABLED",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "TableName": "orders",
            "Shards": page,
        }
        if first + len(page) < len(self.shards):
            desc["LastEvaluatedShardId"] = page[-1]["ShardId"]
        return json.dumps({"StreamDescription": desc}).encode()


def _ok(url: str, body: bytes) -> Any:
    from aiobotocore.awsrequest import AioAWSResponse

    from console.sources.faults import _Body

    headers = {"content-type": "application/x-amz-json-1.0", "content-length": str(len(body))}
    return AioAWSResponse(url, 200, headers, _Body(body))
