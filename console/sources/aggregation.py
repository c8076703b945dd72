"""KPL aggregation: one Kinesis record carrying many user records.

Format: 4 magic bytes, a protobuf ``AggregatedRecord``, then the MD5 of the protobuf. Every user
record inside shares the Kinesis sequence number and gets its index as sub-sequence number.
A record that has the magic bytes but a wrong digest or unparsable body is delivered as it is,
as the KCL does. The protobuf module loads on the first aggregated record only.
"""

from __future__ import annotations

import hashlib
from typing import Any

from console.model import Record

MAGIC = b"\xf3\x89\x9a\xc2"
_DIGEST = 16
_message_class: Any = None


def _aggregated_record_class() -> Any:
    global _message_class  # noqa: PLW0603 - lazy, process-wide, immutable once set
    if _message_class is None:
        # The deaggregator import puts the package's folder on sys.path, which its generated
        # messages_pb2 needs to find config_pb2.
        import aws_kinesis_agg.deaggregator  # noqa: F401
        from aws_kinesis_agg import messages_pb2

        _message_class = messages_pb2.AggregatedRecord
    return _message_class


def deaggregate(
    sequence_number: str, partition_key: str, data: bytes, arrival: float
) -> list[Record]:
    body = data[len(MAGIC) : -_DIGEST]
    if hashlib.md5(body, usedforsecurity=False).digest() != data[-_DIGEST:]:
        return [Record(sequence_number, partition_key, data, arrival)]
    message = _aggregated_record_class()()
    try:
        message.ParseFromString(body)
    except Exception:
        return [Record(sequence_number, partition_key, data, arrival)]
    keys = message.partition_key_table
    hash_keys = message.explicit_hash_key_table
    out: list[Record] = []
    for index, inner in enumerate(message.records):
        ehk = (
            hash_keys[inner.explicit_hash_key_index]
            if inner.HasField("explicit_hash_key_index")
            else None
        )
        out.append(
            Record(
                sequence_number,
                keys[inner.partition_key_index],
                inner.data,
                arrival,
                sub_sequence_number=index,
                explicit_hash_key=ehk,
            )
        )
    return out
