"""Parked records in shard-console's companion table, for a fleet (``--on-failure park`` with
``--lease-table``): every worker's, so they survive a lease's move to another worker.

One item each: pk ``parked|KEY``, sk ``SHARD|SEQUENCE|SUB``, its document the record's JSON
form (ParkedRecord.to_json's fields, the data base64) with its ``id`` from the table's
counter. Parked again (a worker died before its checkpoint moved past it), it keeps its item,
its id, when and by whom it was first parked (as the SQLite file's row does); its last failure
is brought up to date.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from console.checkpoints.leases.companion import Companion
from console.model import HistoryEntry, ParkedRecord

FIELDS = (
    "stream", "shard_id", "sequence_number", "sub_sequence_number", "partition_key",
    "approximate_arrival", "error_type", "error_message", "traceback", "attempts",
    "first_failure", "last_failure", "worker_id", "parked_at",
)  # fmt: skip


def _sk(p: ParkedRecord) -> str:
    sub = -1 if p.sub_sequence_number is None else p.sub_sequence_number
    return f"{p.shard_id}|{p.sequence_number}|{sub}"


def _doc(p: ParkedRecord, record_id: int) -> dict[str, Any]:
    doc = {name: getattr(p, name) for name in FIELDS}
    doc.update(id=record_id, data=base64.b64encode(p.data).decode("ascii"))
    return doc


def _record(doc: dict[str, Any]) -> ParkedRecord:
    values = {name: doc.get(name) for name in FIELDS}
    return ParkedRecord(**values, data=base64.b64decode(doc["data"]), id=doc["id"])  # type: ignore[arg-type]


async def park(companion: Companion, stream: str, records: Sequence[ParkedRecord]) -> None:
    pk = f"parked|{stream}"
    for p in records:
        sk = _sk(p)
        old = await companion._get(pk, sk)
        if old is not None:  # parked again: one item, as first parked, its last failure new
            doc = _doc(p, int(old["id"]))
            doc.update(first_failure=old["first_failure"], parked_at=old["parked_at"],
                       worker_id=old.get("worker_id"),
                       attempts=max(int(old["attempts"]), p.attempts))  # fmt: skip
        else:
            doc = _doc(p, await companion.next_ids(pk))
        await companion._put(pk, sk, doc)


async def parked(
    companion: Companion, stream: str, shard_id: str | None, ids: Sequence[int] | None
) -> list[ParkedRecord]:
    items = await companion._query(f"parked|{stream}", f"{shard_id}|" if shard_id else None)
    found = [_record(doc) for _, doc in items if ids is None or doc["id"] in ids]
    return sorted(found, key=lambda p: p.id or 0)


async def unpark(
    companion: Companion, stream: str, ids: Sequence[int], entries: Sequence[HistoryEntry]
) -> int:
    """Removed (redriven or dropped), their history written: how many were there."""
    pk, done = f"parked|{stream}", 0
    for sk, doc in await companion._query(pk):
        if doc["id"] in ids:
            await companion._call("delete_item", f"removing parked record {doc['id']}",
                                  Key={"pk": {"S": pk}, "sk": {"S": sk}})  # fmt: skip
            done += 1
    await companion.add_history(stream, entries)
    return done
