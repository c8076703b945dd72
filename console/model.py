"""Plain values shared by every layer: shards, records, positions, checkpoints, statuses.

No I/O here. Sequence numbers stay strings (Kinesis gives up to 128 decimal digits); compare them
with :func:`seq_int`, never as strings.
"""

from __future__ import annotations

import base64
import datetime as _dt
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

__all__ = [
    "Batch",
    "ChangeRecord",
    "Checkpoint",
    "CheckpointStatus",
    "HistoryEntry",
    "ParkedRecord",
    "Position",
    "PositionError",
    "PositionKind",
    "Record",
    "Shard",
    "ShardContext",
    "ShardStatus",
    "format_ts",
    "json_safe",
    "parse_ts",
    "seq_int",
]

_SEQ_RE = re.compile(r"^[0-9]{1,128}$")


class PositionError(ValueError):
    """A position, timestamp or sequence number that cannot be understood."""


class TooOld(PositionError):
    """A time before 1970: understood, and no stream holds records that old."""


def seq_int(sequence_number: str) -> int:
    return int(sequence_number)


def is_sequence_number(text: str) -> bool:
    return bool(_SEQ_RE.match(text))


def format_ts(ts: float) -> str:
    """ISO 8601 in UTC with milliseconds, the one way we print instants."""
    dt = _dt.datetime.fromtimestamp(ts, tz=_dt.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def format_duration(seconds: float) -> str:
    """Compact duration: 4s, 12m, 3h, 2d."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def parse_ts(text: str) -> float:
    """Parse ISO 8601; a time without an offset is taken as UTC."""
    raw = text.strip()
    try:
        dt = _dt.datetime.fromisoformat(raw)
    except ValueError:
        raise PositionError(
            f"'{text}' is not an ISO 8601 timestamp (example: 2026-11-23T08:00:00Z)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_dt.UTC)
    return dt.timestamp()


_RELATIVE = re.compile(r"^-\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now: float | None = None) -> float:
    """A time an operator types: ISO 8601 (UTC unless it says otherwise) or relative to now,
    as in -15m, -2h, -90s, -1d."""
    import time

    raw = text.strip()
    match = _RELATIVE.match(raw)
    if match:
        amount, unit = match.groups()
        when = (time.time() if now is None else now) - float(amount) * _UNITS[unit]
    else:
        try:
            when = parse_ts(raw)
        except PositionError:
            raise PositionError(
                f"'{text}' is not a time: use ISO 8601 (2026-11-23T08:00:00Z) or -15m, -2h, -1d"
            ) from None
    if not when >= 0:  # before 1970 (no stream holds a record that old), or not a number
        raise TooOld(f"'{text}' is before 1970: no stream holds records that old")
    return when


class PositionKind(StrEnum):
    TRIM_HORIZON = "TRIM_HORIZON"
    LATEST = "LATEST"
    AT_TIMESTAMP = "AT_TIMESTAMP"
    AT_SEQUENCE_NUMBER = "AT_SEQUENCE_NUMBER"
    AFTER_SEQUENCE_NUMBER = "AFTER_SEQUENCE_NUMBER"


_ENCODED = {
    PositionKind.TRIM_HORIZON: "trim_horizon",
    PositionKind.LATEST: "latest",
    PositionKind.AT_TIMESTAMP: "at_timestamp",
    PositionKind.AT_SEQUENCE_NUMBER: "at_sequence",
    PositionKind.AFTER_SEQUENCE_NUMBER: "after_sequence",
}
_DECODED = {v: k for k, v in _ENCODED.items()}


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading a shard starts. ``sub_sequence_number`` addresses one user record inside a
    KPL-aggregated record; it is None for plain records."""

    kind: PositionKind
    sequence_number: str | None = None
    sub_sequence_number: int | None = None
    timestamp: float | None = None

    @classmethod
    def trim_horizon(cls) -> Position:
        return _TRIM_HORIZON

    @classmethod
    def latest(cls) -> Position:
        return _LATEST

    @classmethod
    def at_timestamp(cls, ts: float) -> Position:
        return cls(PositionKind.AT_TIMESTAMP, timestamp=ts)

    @classmethod
    def at_sequence(cls, seq: str, sub: int | None = None) -> Position:
        return cls(PositionKind.AT_SEQUENCE_NUMBER, seq, sub)

    @classmethod
    def after_sequence(cls, seq: str, sub: int | None = None) -> Position:
        return cls(PositionKind.AFTER_SEQUENCE_NUMBER, seq, sub)

    def encode(self) -> str:
        """One line of text, stable: stored in SQLite and printed to operators."""
        name = _ENCODED[self.kind]
        if self.kind is PositionKind.AT_TIMESTAMP:
            assert self.timestamp is not None
            return f"{name}:{format_ts(self.timestamp)}"
        if self.sequence_number is not None:
            sub = "" if self.sub_sequence_number is None else f"/{self.sub_sequence_number}"
            return f"{name}:{self.sequence_number}{sub}"
        return name

    @classmethod
    def decode(cls, text: str) -> Position:
        name, _, arg = text.partition(":")
        kind = _DECODED.get(name)
        if kind is None:
            raise PositionError(f"unknown position '{text}'")
        if kind in (PositionKind.TRIM_HORIZON, PositionKind.LATEST):
            if arg:
                raise PositionError(f"position '{name}' takes no argument")
            return cls(kind)
        if kind is PositionKind.AT_TIMESTAMP:
            return cls(kind, timestamp=parse_ts(arg))
        seq, _, sub = arg.partition("/")
        if not is_sequence_number(seq):
            raise PositionError(f"'{seq}' is not a sequence number (1 to 128 decimal digits)")
        if sub and not sub.isdigit():
            raise PositionError(f"'{sub}' is not a sub-sequence number")
        return cls(kind, seq, int(sub) if sub else None)

    @classmethod
    def parse_initial(cls, text: str) -> Position:
        """The ``--initial-position`` grammar: trim_horizon | latest | at_timestamp:ISO8601."""
        name, _, arg = text.strip().partition(":")
        lowered = name.lower()
        if lowered == "trim_horizon" and not arg:
            return _TRIM_HORIZON
        if lowered == "latest" and not arg:
            return _LATEST
        if lowered == "at_timestamp" and arg:
            return cls.at_timestamp(parse_ts(arg))
        raise PositionError(
            f"invalid initial position '{text}': use trim_horizon, latest or at_timestamp:ISO8601"
        )

    def target(self) -> str:
        """As the object of a sentence: "rewind X to <target>"."""
        if self.kind is PositionKind.AT_TIMESTAMP:
            assert self.timestamp is not None
            return format_ts(self.timestamp)
        if self.kind is PositionKind.TRIM_HORIZON:
            return "the start (TRIM_HORIZON)"
        if self.kind is PositionKind.LATEST:
            return "the tip (LATEST)"
        return f"sequence {self.describe()}"

    def describe(self) -> str:
        """Short human form for screens and log lines."""
        if self.kind is PositionKind.AT_TIMESTAMP:
            assert self.timestamp is not None
            return f"at {format_ts(self.timestamp)}"
        if self.sequence_number is not None:
            sub = "" if self.sub_sequence_number is None else f"/{self.sub_sequence_number}"
            word = "at" if self.kind is PositionKind.AT_SEQUENCE_NUMBER else "after"
            return f"{word} {self.sequence_number}{sub}"
        return self.kind.value


_TRIM_HORIZON = Position(PositionKind.TRIM_HORIZON)
_LATEST = Position(PositionKind.LATEST)


class ShardStatus(StrEnum):
    """What a shard is doing now. Only DONE, SKIPPED and the paused flag are persisted."""

    WAITING = "waiting"  # parents not done
    READY = "ready"  # may start; a worker is on its way
    ACTIVE = "active"
    PAUSED = "paused"  # by an operator
    FAILING = "failing"  # retrying an error; the reason is shown
    FAILED = "failed"  # a fatal error stopped this shard; resume to try again
    DONE = "done"  # read to its end and checkpointed
    SKIPPED = "skipped"  # an operator marked it done
    LEASED = "leased"  # another worker of the fleet holds its lease


class CheckpointStatus(StrEnum):
    OPEN = "open"
    DONE = "done"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        return self is not CheckpointStatus.OPEN


@dataclass(frozen=True, slots=True)
class Shard:
    shard_id: str
    parent_id: str | None = None
    adjacent_parent_id: str | None = None
    starting_hash_key: str | None = None
    ending_hash_key: str | None = None
    starting_sequence_number: str | None = None
    ending_sequence_number: str | None = None  # set once the shard is closed

    @property
    def parents(self) -> tuple[str, ...]:
        if self.parent_id and self.adjacent_parent_id:
            return (self.parent_id, self.adjacent_parent_id)
        if self.parent_id:
            return (self.parent_id,)
        if self.adjacent_parent_id:
            return (self.adjacent_parent_id,)
        return ()

    @property
    def is_closed(self) -> bool:
        return self.ending_sequence_number is not None


@dataclass(slots=True, eq=False)
class Record:
    """One user record. Not frozen: it is built on the hot path, where frozen dataclasses cost
    an ``object.__setattr__`` per field. Treat it as immutable.

    ``approximate_arrival`` is seconds since the epoch (float), as the wire carries it.
    """

    sequence_number: str
    partition_key: str
    data: bytes
    approximate_arrival: float
    sub_sequence_number: int | None = None
    explicit_hash_key: str | None = None


@dataclass(slots=True, eq=False)
class ChangeRecord(Record):
    """One item-level change from a DynamoDB stream. ``keys`` and the images hold Python values
    as boto3's TypeDeserializer gives them (Decimal, Binary, set); ``data`` carries the same
    change as JSON, so a processor written for Kinesis records still sees it, and
    ``partition_key`` is the item's key as compact JSON, so per-key order reads the same way."""

    event_name: str = ""  # INSERT, MODIFY or REMOVE
    keys: dict[str, Any] = field(default_factory=dict)
    new_image: dict[str, Any] | None = None
    old_image: dict[str, Any] | None = None


def json_safe(value: Any) -> Any:
    """DynamoDB values as JSON can carry them: Decimal → int or float, binary → base64 text,
    sets → sorted lists."""
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, Set):
        return sorted((json_safe(v) for v in value), key=lambda v: (str(type(v)), v))
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    raw = getattr(value, "value", value)  # boto3's Binary wraps bytes
    if isinstance(raw, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(raw)).decode("ascii")
    return str(value)


@dataclass(slots=True, eq=False)
class Batch:
    records: list[Record]
    next_iterator: str | None
    millis_behind_latest: int | None = None
    child_shards: tuple[Shard, ...] = ()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What the store holds for one shard of one stream.

    ``arrival`` is the approximate arrival time of the checkpointed record: it tells whether the
    checkpoint has fallen behind the stream's retention."""

    shard_id: str
    position: Position
    status: CheckpointStatus = CheckpointStatus.OPEN
    paused: bool = False
    arrival: float | None = None
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One change of one shard's checkpoint or status, with its cause.

    ``cause`` is a short word (start, progress, done, rewind, skip, pause, resume, undo,
    retention, reset); ``actor`` is who did it: the engine, ``user@host``, or ``tui``."""

    shard_id: str
    cause: str
    actor: str
    new_position: Position | None
    new_status: str | None
    old_position: Position | None = None
    old_status: str | None = None
    note: str | None = None
    at: float = 0.0
    id: int | None = None
    command_id: int | None = None


@dataclass(frozen=True, slots=True)
class ShardContext:
    """Handed to the processor with every batch."""

    stream: str
    shard_id: str
    parent_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ParkedRecord:
    """A record the processor failed on, set aside so its shard reads on (``--on-failure
    park``): what it was, where it was, and how it failed. ``id`` is the store's."""

    stream: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int | None
    partition_key: str
    approximate_arrival: float | None
    data: bytes
    error_type: str
    error_message: str
    traceback: str
    attempts: int
    first_failure: float
    last_failure: float
    worker_id: str | None = None
    parked_at: float = 0.0
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The documented JSON form (README, "Poison records"): ``data`` as UTF-8 text where
        it is, else base64, as ``data_encoding`` says."""
        try:
            data, encoding = self.data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            data, encoding = base64.b64encode(self.data).decode("ascii"), "base64"
        return {
            "id": self.id,
            "stream": self.stream,
            "shard_id": self.shard_id,
            "sequence_number": self.sequence_number,
            "sub_sequence_number": self.sub_sequence_number,
            "partition_key": self.partition_key,
            "approximate_arrival": format_ts(self.approximate_arrival)
            if self.approximate_arrival is not None
            else None,
            "data": data,
            "data_encoding": encoding,
            "error": {
                "type": self.error_type,
                "message": self.error_message,
                "traceback": self.traceback,
            },
            "attempts": self.attempts,
            "first_failure": format_ts(self.first_failure),
            "last_failure": format_ts(self.last_failure),
            "worker_id": self.worker_id,
            "parked_at": format_ts(self.parked_at) if self.parked_at else None,
        }
