"""Dead-letter destinations: where parked records also go (``--dead-letter SPEC``), beside the
checkpoint database that keeps them for the console and ``parked redrive``.

- ``jsonl:PATH``: one JSON object a line (ParkedRecord.to_json), appended and fsynced; the
  file is created 0600;
- ``sqs:QUEUE_URL``: one message a record, its body that same JSON (SendMessageBatch);
- ``kinesis:STREAM``: one record a parked record, with the parked record's partition key and,
  as data, that same JSON (PutRecords): the original data is its ``data`` field;
- ``s3://bucket/prefix``: one object a record, ``prefix/<shard>/<sequence>-<sub>.json``.

Each is opened, and reached, before the first read (a queue, stream or bucket that cannot be
written is an error at start, one line, not at the first poison record). A write that fails
later raises: the shard then blocks and retries the park (console.engine.consume.worker), so
nothing is dropped. Endpoints: ``AWS_ENDPOINT_URL_SQS`` (``_S3``, ``_KINESIS``) or
``AWS_ENDPOINT_URL`` when set, as the SDKs read them; else the run's ``--endpoint-url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import IO, Any, Protocol

from console.errors import UsageError
from console.model import ParkedRecord
from console.sources.aws import AwsSettings, open_client


class DeadLetter(Protocol):
    async def park(self, records: Sequence[ParkedRecord]) -> None: ...


def _document(record: ParkedRecord) -> str:
    return json.dumps(record.to_json(), sort_keys=True)


class JsonlDeadLetter:
    def __init__(self, path: str) -> None:
        self.path = os.path.expanduser(path)
        self._file: IO[str] | None = None

    def open(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UsageError(
                f"--dead-letter: cannot open {self.path} for appending: {exc.strerror}"
            ) from None
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def _write(self, lines: str) -> None:
        assert self._file is not None
        self._file.write(lines)
        self._file.flush()
        os.fsync(self._file.fileno())

    async def park(self, records: Sequence[ParkedRecord]) -> None:
        await asyncio.to_thread(self._write, "".join(_document(r) + "\n" for r in records))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SqsDeadLetter:
    def __init__(self, client: Any, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url

    async def check(self) -> None:
        await self.client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])

    async def park(self, records: Sequence[ParkedRecord]) -> None:
        for i in range(0, len(records), 10):  # SendMessageBatch takes ten
            chunk = records[i : i + 10]
            entries = [{"Id": str(n), "MessageBody": _document(r)} for n, r in enumerate(chunk)]
            answer = await self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
            failed = answer.get("Failed") or []
            if failed:
                raise RuntimeError(f"SQS refused {len(failed)} message(s): {failed[0]}")


class KinesisDeadLetter:
    def __init__(self, client: Any, stream: str) -> None:
        self.client = client
        self.stream = stream

    async def check(self) -> None:
        await self.client.describe_stream_summary(StreamName=self.stream)

    async def park(self, records: Sequence[ParkedRecord]) -> None:
        for i in range(0, len(records), 500):  # PutRecords takes 500
            chunk = records[i : i + 500]
            entries = [{"PartitionKey": r.partition_key or "parked",
                        "Data": _document(r).encode()} for r in chunk]  # fmt: skip
            answer = await self.client.put_records(StreamName=self.stream, Records=entries)
            if answer.get("FailedRecordCount"):
                raise RuntimeError(
                    f"Kinesis refused {answer['FailedRecordCount']} record(s) of {self.stream}"
                )


class S3DeadLetter:
    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    async def check(self) -> None:
        await self.client.head_bucket(Bucket=self.bucket)

    def key(self, r: ParkedRecord) -> str:
        sub = 0 if r.sub_sequence_number is None else r.sub_sequence_number
        name = f"{r.shard_id}/{r.sequence_number}-{sub}.json"
        return f"{self.prefix}/{name}" if self.prefix else name

    async def park(self, records: Sequence[ParkedRecord]) -> None:
        for r in records:
            await self.client.put_object(
                Bucket=self.bucket, Key=self.key(r), Body=_document(r).encode(),
                ContentType="application/json",
            )  # fmt: skip


def _endpoint(service: str, aws: AwsSettings) -> AwsSettings:
    """The SDKs' endpoint variables first (one emulator per service, or a VPC endpoint), then
    the run's --endpoint-url."""
    url = os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}") or os.environ.get(
        "AWS_ENDPOINT_URL"
    )
    return replace(aws, endpoint_url=url or aws.endpoint_url)


@contextlib.asynccontextmanager
async def open_dead_letter(spec: str, aws: AwsSettings) -> Any:
    """The destination ``spec`` names (checked by console.setting_values.dead_letter), open
    and reached, for the run's length."""
    if spec.startswith("jsonl:"):
        jsonl = JsonlDeadLetter(spec.removeprefix("jsonl:"))
        jsonl.open()
        try:
            yield jsonl
        finally:
            jsonl.close()
        return
    destination: SqsDeadLetter | KinesisDeadLetter | S3DeadLetter
    if spec.startswith("sqs:"):
        service, target = "sqs", spec.removeprefix("sqs:")
    elif spec.startswith("kinesis:"):
        service, target = "kinesis", spec.removeprefix("kinesis:")
    else:
        service, target = "s3", spec.removeprefix("s3://")
    async with open_client(service, _endpoint(service, aws)) as client:
        if service == "sqs":
            destination = SqsDeadLetter(client, target)
        elif service == "kinesis":
            destination = KinesisDeadLetter(client, target)
        else:
            bucket, _, prefix = target.partition("/")
            destination = S3DeadLetter(client, bucket, prefix)
        try:
            await destination.check()
        except Exception as exc:
            raise UsageError(
                f"--dead-letter {spec}: cannot be reached ({type(exc).__name__}: "
                f"{str(exc)[:200]}); nothing was read"
            ) from None
        yield destination
