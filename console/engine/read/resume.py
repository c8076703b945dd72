"""Where to point a shard iterator to resume a position, and what to drop of the first batch:
the worker, the records browser and tail resume alike. Pure."""

from __future__ import annotations

from console.model import Position, PositionKind, Record


def fetch_plan(position: Position) -> tuple[Position, tuple[str, int] | None]:
    """Where to point the iterator, and which sub-records to drop, to resume ``position``.

    A checkpoint inside a KPL-aggregated record (after seq/sub) re-reads that record and drops
    its user records up to ``sub``, as the KCL does."""
    if (
        position.kind is PositionKind.AFTER_SEQUENCE_NUMBER
        and position.sub_sequence_number is not None
    ):
        assert position.sequence_number is not None
        return (
            Position.at_sequence(position.sequence_number),
            (position.sequence_number, position.sub_sequence_number),
        )
    return position, None


def drop_through(records: list[Record], seq: str, sub: int) -> list[Record]:
    i = 0
    for record in records:
        if record.sequence_number != seq or (record.sub_sequence_number or 0) > sub:
            break
        i += 1
    return records[i:] if i else records
