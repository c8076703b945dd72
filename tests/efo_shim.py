"""A loopback proxy in front of kinesis-mock that makes its SubscribeToShard look like AWS's.
Tests only; nothing of it is in the product.

kinesis-mock 0.6.2 (npm kinesis-local) serves enhanced fan-out with three gaps, measured (see
../shared/EMULATORS.md):

* its event stream lacks the ``initial-response`` event AWS sends first, which botocore
  requires: the shim writes one before the upstream's bytes;
* a subscription to a closed shard never ends: after the last record it sends empty events
  with a continuation, where AWS sends one event with ChildShards and no continuation. The shim
  looks up the shard's children (ListShards upstream) when an empty event comes and, if the shard
  has any, sends that last event instead and ends the stream;
* a subscription lasts 5 minutes, fixed: ``lifetime`` ends each one sooner, at an event
  boundary, as the service does at 5 minutes, so renewals can be tested in seconds.

``refuse`` answers the next N SubscribeToShard calls with a ResourceInUseException (HTTP 400),
as AWS does while it still holds a consumer's last subscription on the shard. ``stall`` makes the
next N subscriptions send the initial response and then nothing, as a connection that died
silently does; ``fail`` makes the next N send an InternalFailureException event and end.

Everything else is forwarded as it is. It runs on its own thread and loop (like tests/proxy.py),
so subprocesses can use it too.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import zlib
from typing import Any

from aiohttp import web

from tests.servers import LoopbackServer

SUBSCRIBE = "Kinesis_20131202.SubscribeToShard"
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length, CRC), headers (all
    strings, type 7), payload, CRC of everything before."""
    encoded = b"".join(
        struct.pack(">B", len(k)) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def unframe(message: bytes) -> tuple[dict[str, str], bytes]:
    total, length = struct.unpack(">II", message[:8])
    raw, headers, i = message[12 : 12 + length], {}, 0
    while i < len(raw):
        name = raw[i + 1 : i + 1 + raw[i]].decode()
        i += 1 + raw[i]
        assert raw[i] == 7, "kinesis-mock sends string headers only"
        size = struct.unpack(">H", raw[i + 1 : i + 3])[0]
        headers[name] = raw[i + 3 : i + 3 + size].decode()
        i += 3 + size
    return headers, message[12 + length : total - 4]


def event(payload: dict[str, Any], kind: str = "SubscribeToShardEvent") -> bytes:
    return frame(
        {":message-type": "event", ":event-type": kind, ":content-type": "application/json"},
        json.dumps(payload).encode(),
    )


INITIAL_RESPONSE = event({}, "initial-response")
# An exception event inside the stream, as AWS sends one when it fails mid-subscription.
FAILURE = frame(
    {
        ":message-type": "exception",
        ":exception-type": "InternalFailureException",
        ":content-type": "application/json",
    },
    b'{"message": "internal failure (sent by the shim)"}',
)


class EfoShim(LoopbackServer):
    thread_name = "efo-shim"

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.lifetime: float | None = None  # end each subscription after this long
        self.refuse = 0  # answer this many SubscribeToShard calls with ResourceInUseException
        self.stall = 0  # this many subscriptions send nothing after the initial response
        self.refused: list[float] = []  # when each was refused (monotonic)
        self.subscribed: list[tuple[float, str, dict[str, Any]]] = []  # when, shard, start
        self.ended: list[str] = []  # shards whose end was told (ChildShards sent)
        self.sent_at: dict[str, float] = {}  # sequence number: when its event was passed on
        self.events_sent = 0  # SubscribeToShard events passed on, all subscriptions together
        self.continuations: dict[str, list[str]] = {}  # shard: continuations passed on, in order
        # At each subscribe after the first on its shard: the last continuation passed on.
        self.renewed_after: list[str | None] = []
        self.fail = 0  # this many subscriptions send an InternalFailureException event first

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        if request.headers.get("X-Amz-Target") == SUBSCRIBE:
            asked = json.loads(body)
            if self.refuse > 0:
                self.refuse -= 1
                self.refused.append(time.monotonic())
                return web.json_response(
                    {
                        "__type": "ResourceInUseException",
                        "message": "Another active subscription exists (refused by the shim)",
                    },
                    status=400,
                    content_type="application/x-amz-json-1.1",
                )
            if any(shard == asked["ShardId"] for _, shard, _ in self.subscribed):
                passed = self.continuations.get(asked["ShardId"])
                self.renewed_after.append(passed[-1] if passed else None)
            self.subscribed.append((time.monotonic(), asked["ShardId"], asked["StartingPosition"]))
            if self.stall > 0:
                self.stall -= 1
                return await self._silence(request)
            return await self._subscription(request, headers, body, asked)
        async with self._client.post(self.upstream, data=body, headers=headers) as upstream:
            payload = await upstream.read()
            return web.Response(
                status=upstream.status,
                body=payload,
                headers={"Content-Type": upstream.headers.get("Content-Type", "")},
            )

    async def _subscription(
        self, request: web.Request, headers: dict[str, str], body: bytes, asked: dict[str, Any]
    ) -> web.StreamResponse:
        shard_id = asked["ShardId"]
        stream_arn = asked["ConsumerARN"].split("/consumer/")[0]
        deadline = None if self.lifetime is None else time.monotonic() + self.lifetime
        async with self._client.post(self.upstream, data=body, headers=headers) as upstream:
            if upstream.status != 200:
                return web.Response(
                    status=upstream.status,
                    body=await upstream.read(),
                    headers={"Content-Type": upstream.headers.get("Content-Type", "")},
                )
            response = web.StreamResponse(
                status=200, headers={"Content-Type": "application/vnd.amazon.eventstream"}
            )
            await response.prepare(request)
            await response.write(INITIAL_RESPONSE)
            if self.fail > 0:
                self.fail -= 1
                await response.write(FAILURE)
                await response.write_eof()
                return response
            buffer = b""
            try:
                async for chunk in upstream.content.iter_any():
                    buffer += chunk
                    while len(buffer) >= 12 and len(buffer) >= struct.unpack(">I", buffer[:4])[0]:
                        total = struct.unpack(">I", buffer[:4])[0]
                        message, buffer = buffer[:total], buffer[total:]
                        last = await self._last_event(message, stream_arn, shard_id)
                        if last is not None:
                            self.ended.append(shard_id)  # before: the reader may hang up at once
                            await response.write(last)
                            await response.write_eof()
                            return response
                        await response.write(message)
                        self._note_sent(message, shard_id)
                        if deadline is not None and time.monotonic() > deadline:
                            await response.write_eof()
                            return response
                await response.write_eof()
            except (ConnectionError, asyncio.CancelledError):
                pass  # the client went away; leaving the block closes the upstream
        return response

    def _note_sent(self, message: bytes, shard_id: str) -> None:
        headers, payload = unframe(message)
        if headers.get(":event-type") == "SubscribeToShardEvent":
            now = time.time()
            data = json.loads(payload)
            for record in data.get("Records") or ():
                self.sent_at[record["SequenceNumber"]] = now
            self.events_sent += 1
            if data.get("ContinuationSequenceNumber"):
                self.continuations.setdefault(shard_id, []).append(
                    data["ContinuationSequenceNumber"]
                )

    async def _silence(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/vnd.amazon.eventstream"}
        )
        await response.prepare(request)
        await response.write(INITIAL_RESPONSE)
        while request.transport is not None and not request.transport.is_closing():
            await asyncio.sleep(0.05)
        return response

    async def _last_event(self, message: bytes, stream_arn: str, shard_id: str) -> bytes | None:
        """AWS's last event of a closed shard, in place of an empty one, if the shard has
        children."""
        headers, payload = unframe(message)
        if headers.get(":event-type") != "SubscribeToShardEvent":
            return None
        data = json.loads(payload)
        if data.get("Records"):
            return None
        children = await self._children(stream_arn, shard_id)
        if not children:
            return None
        return event(
            {
                "Records": [],
                "ContinuationSequenceNumber": None,
                "MillisBehindLatest": 0,
                "ChildShards": children,
            }
        )

    async def _children(self, stream_arn: str, shard_id: str) -> list[dict[str, Any]]:
        headers = {
            "X-Amz-Target": "Kinesis_20131202.ListShards",
            "Content-Type": "application/x-amz-json-1.1",
            # kinesis-mock wants these; it does not check the signature.
            "Authorization": "AWS4-HMAC-SHA256 Credential=shim/20260101/us-east-1/kinesis/"
            "aws4_request, SignedHeaders=host;x-amz-date, Signature=0",
            "X-Amz-Date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        }
        async with self._client.post(
            self.upstream, data=json.dumps({"StreamARN": stream_arn}), headers=headers
        ) as resp:
            answer = await resp.json(content_type=None)
            assert resp.status == 200, answer  # the shim must not hide a closed shard
            shards = answer.get("Shards") or []
        return [
            {
                "ShardId": s["ShardId"],
                "ParentShards": [
                    p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p
                ],
                "HashKeyRange": s["HashKeyRange"],
            }
            for s in shards
            if shard_id in (s.get("ParentShardId"), s.get("AdjacentParentShardId"))
        ]
