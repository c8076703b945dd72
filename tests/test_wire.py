"""The fast read path (sources/wire.py): the request botocore would send, signed by botocore's
signer, and the values botocore's parser would have given, built from the JSON directly."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from console.model import Position
from console.sources.aws import classify
from console.sources.base import (
    ExpiredIteratorError,
    FatalSourceError,
    RetryableError,
    SourceError,
)
from console.sources.dynamodb import json_value
from console.sources.kinesis import KinesisSource
from console.sources.wire import client_error
from tests.conftest import Kinesis, aws, numbered, unique
from tests.proxy import proxy

# One attribute of every DynamoDB type, nested, as the JSON wire carries it (binary in base64).
RAW = {
    "M": {
        "s": {"S": "text"},
        "n": {"N": "12.50"},
        "big": {"N": "123456789012345678901234567890"},
        "b": {"B": base64.b64encode(b"\x00\xff").decode()},
        "t": {"BOOL": True},
        "z": {"NULL": True},
        "l": {"L": [{"S": "a"}, {"N": "1"}, {"M": {"deep": {"BS": ["AQ==", "Ag=="]}}}]},
        "ss": {"SS": ["x", "y"]},
        "ns": {"NS": ["1", "2.5"]},
        "bs": {"BS": [base64.b64encode(b"\x01").decode()]},
    }
}


def test_json_values_equal_what_boto3_makes_of_botocores_parse() -> None:
    from boto3.dynamodb.types import Binary, TypeDeserializer

    def as_parsed(value: Any) -> Any:  # what botocore's parser hands boto3: blobs as bytes
        ((kind, raw),) = value.items()
        if kind == "B":
            return {"B": base64.b64decode(raw)}
        if kind == "BS":
            return {"BS": [base64.b64decode(v) for v in raw]}
        if kind == "M":
            return {"M": {k: as_parsed(v) for k, v in raw.items()}}
        if kind == "L":
            return {"L": [as_parsed(v) for v in raw]}
        return value

    expected = TypeDeserializer().deserialize(as_parsed(RAW))
    got = json_value(RAW)
    assert got == expected
    assert got["n"] == Decimal("12.50") and got["b"] == Binary(b"\x00\xff")
    assert got["l"][2]["deep"] == {Binary(b"\x01"), Binary(b"\x02")}
    with pytest.raises(TypeError, match="unknown DynamoDB attribute type X"):
        json_value({"X": "?"})


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "text"),
    [
        (
            400,
            {},
            b'{"__type":"com.amazonaws.kinesis.v20131202#ExpiredIteratorException",'
            b'"message":"Iterator expired"}',
            ExpiredIteratorError,
            "ExpiredIteratorException while reading records: Iterator expired",
        ),
        (
            400,
            {"x-amzn-errortype": "ProvisionedThroughputExceededException:http://internal"},
            b"",
            RetryableError,
            "ProvisionedThroughputExceededException",
        ),
        (502, {}, b"<html>Bad Gateway</html>", RetryableError, "502 while reading records: Bad"),
        (
            400,
            {},
            b'{"__type":"InvalidArgumentException","Message":"bad"}',
            FatalSourceError,
            "bad",
        ),
    ],
)
def test_error_answers_become_the_classes_botocore_answers_do(
    status: int, headers: dict[str, str], body: bytes, kind: type, text: str
) -> None:
    err = classify(client_error("GetRecords", status, headers, body), "reading records")
    assert type(err) is kind and text in str(err)
    assert isinstance(err, RetryableError) == (status == 502 or "Throughput" in text)
    if "Throughput" in text:
        assert isinstance(err, RetryableError) and err.throttled


@pytest.mark.parametrize(
    ("status", "headers", "body", "code", "message"),
    [
        (400, {}, b'{"__type":"a.b#c#Throttled:x:y","message":"m"}', "Throttled", "m"),
        (400, {"x-amzn-errortype": "Denied:http://x:y"}, b"{}", "Denied", "Bad Request"),
        (503, {}, b"[1]", "503", "Service Unavailable"),  # JSON, not an object
        (502, {}, b"<html>", "502", "Bad Gateway"),
        (599, {}, b"", "599", ""),  # no reason phrase known
    ],
)
def test_an_error_answer_read_as_botocore_reads_it(
    status: int, headers: dict[str, str], body: bytes, code: str, message: str
) -> None:
    from botocore.exceptions import ClientError

    err = client_error("GetRecords", status, headers, body)
    assert isinstance(err, ClientError) and err.operation_name == "GetRecords"
    assert err.response == {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }


def _authorization(headers: dict[str, str]) -> dict[str, str]:
    scheme, _, rest = headers["Authorization"].partition(" ")
    assert scheme == "AWS4-HMAC-SHA256"
    return dict(part.strip().split("=", 1) for part in rest.split(","))


def _expected_signature(url: str, body: bytes, headers: dict[str, str]) -> str:
    """SigV4 computed afresh (botocore.auth, the test's credentials) over what arrived."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = _authorization(headers)
    signed = auth["SignedHeaders"].split(";")
    lower = {k.lower(): v for k, v in headers.items()}
    request = AWSRequest("POST", url + "/", data=body, headers={h: lower[h] for h in signed})
    request.context["timestamp"] = lower["x-amz-date"]
    signer = SigV4Auth(Credentials("testing", "testing"), "kinesis", "us-east-1")
    canonical = signer.canonical_request(request)
    return str(signer.signature(signer.string_to_sign(request, canonical), request))


async def test_the_fast_path_sends_what_botocore_sends_signed_alike(kinesalite: str) -> None:
    await sends_what_botocore_sends(kinesalite)


async def test_the_same_to_the_embedded_endpoint(demo_endpoint: Any) -> None:
    await sends_what_botocore_sends(demo_endpoint.url)


async def sends_what_botocore_sends(url: str) -> None:
    name = unique()
    k = Kinesis(url)
    await k.create(name, 1)
    sent = numbered(5)
    await k.put(name, sent)
    got: dict[str, list[bytes]] = {}
    with proxy(url, lambda *_: None) as p:
        for path in ("botocore", "fast"):
            async with KinesisSource(name, aws(p.url, path)) as source:
                [shard] = await source.list_shards()
                it = await source.get_iterator(shard.shard_id, Position.trim_horizon())
                batch = await source.get_records(it, 100)
                got[path] = [r.data for r in batch.records]
                assert [type(r.approximate_arrival) for r in batch.records] == [float] * 5
    assert got["fast"] == got["botocore"] == [d for _, d in sent]
    requests = {
        (path, op): (body, headers)
        for path, (op, body, headers) in zip(
            ["botocore"] * 3 + ["fast"] * 3, p.requests, strict=True
        )
    }
    for op in ("ListShards", "GetRecords"):
        body, headers = requests[("fast", op)]
        _, theirs = requests[("botocore", op)]
        auth = _authorization(headers)
        assert auth["SignedHeaders"] == _authorization(theirs)["SignedHeaders"]
        assert auth["Credential"].startswith("testing/") and auth["Credential"].endswith(
            "/us-east-1/kinesis/aws4_request"
        )
        assert auth["Signature"] == _expected_signature(p.url, body, headers)
        for header in ("X-Amz-Target", "Content-Type", "User-Agent"):
            assert headers[header] == theirs[header], header
        date = dt.datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
        assert abs(dt.datetime.utcnow() - date) < dt.timedelta(minutes=5)


class _Body:
    def __init__(self, payload: bytes) -> None:
        self._payload = payload

    async def read(self) -> bytes:
        return self._payload


def answering(status: int, body: bytes, content_type: str = "application/x-amz-json-1.1") -> Any:
    """A before-send hook that answers every GetRecords and ListShards with these bytes."""
    from aiobotocore.awsrequest import AioAWSResponse

    def hook(request: Any, event_name: str = "", **_: Any) -> Any:
        if event_name.rsplit(".", 1)[-1] not in ("GetRecords", "ListShards"):
            return None
        headers = {"content-type": content_type, "content-length": str(len(body))}
        return AioAWSResponse(request.url, status, headers, _Body(body))

    return hook


async def failure(read_path: str, status: int, body: bytes, call: str) -> BaseException:
    settings = aws("http://127.0.0.1:9", read_path)  # never reached: the hook answers
    async with KinesisSource(
        "s", settings, [("before-send.kinesis", answering(status, body))]
    ) as s:
        with pytest.raises(SourceError) as caught:
            await (s.get_records("it", 10) if call == "GetRecords" else s.list_shards())
    return caught.value


ANSWERS = [
    (400, b'{"__type":"ExpiredIteratorException","message":"Iterator expired"}'),
    (400, b'{"__type":"a.b#ProvisionedThroughputExceededException","message":"Rate exceeded"}'),
    (400, b'{"__type":"ResourceNotFoundException","message":"Stream s not found"}'),
    (400, b'{"__type":"AccessDeniedException","Message":"not allowed"}'),
    (403, b'{"__type":"UnrecognizedClientException","message":"bad token"}'),
    (500, b'{"__type":"InternalFailure"}'),
    (503, b"<html>Service Unavailable</html>"),
]


@pytest.mark.parametrize("call", ["GetRecords", "ListShards"])
@pytest.mark.parametrize(("status", "body"), ANSWERS)
async def test_each_error_answer_raises_the_same_on_both_paths(
    status: int, body: bytes, call: str
) -> None:
    fast = await failure("fast", status, body, call)
    slow = await failure("botocore", status, body, call)
    assert (type(fast), str(fast)) == (type(slow), str(slow))
    assert getattr(fast, "throttled", None) == getattr(slow, "throttled", None)


@pytest.mark.parametrize("body", [b"", b"not json", b"{}", b"null", b"[]", b'{"Records": '])
@pytest.mark.parametrize("call", ["GetRecords", "ListShards"])
async def test_a_malformed_answer_is_retried_never_taken_for_the_end(
    body: bytes, call: str, read_path: str
) -> None:
    """A 200 that is no answer (a proxy's page, a cut body, an empty object) must not end a
    shard (no NextShardIterator) or empty a listing: retried, on both paths."""
    err = await failure(read_path, 200, body, call)
    assert isinstance(err, RetryableError), err
    if read_path == "fast" and body != b"{}":  # not an object: the gateway error it stands for
        assert "502" in str(err) and "Bad Gateway" in str(err), err
    elif body == b"{}":
        assert "malformed answer" in str(err) and "it has no" in str(err), err
