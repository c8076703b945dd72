"""Operator changes, planned without I/O: rewind, skip, pause, resume, undo.

:func:`plan_change` turns a request and the current checkpoints into the exact rows to write
(checkpoints and their history) in one transaction. The running consumer applies a plan between
batches; a change made with no consumer running applies the same plan to the store. Either way
the same validation runs and the same history is written, so the TUI, the CLI and headless runs
cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from console.checkpoints.base import CheckpointChange, Command
from console.engine.lineage import Lineage
from console.errors import Error
from console.model import (
    Checkpoint,
    CheckpointStatus,
    HistoryEntry,
    Position,
    PositionError,
    PositionKind,
    Record,
    TooOld,
    format_ts,
    is_sequence_number,
    parse_when,
    seq_int,
)


class ControlError(Error):
    """A request that cannot be applied; nothing was changed."""


class TargetTooOld(ControlError):
    """A target time before 1970: said as it is, whatever the command's list of targets."""


class Action(StrEnum):
    REWIND = "rewind"
    SKIP = "skip"
    PAUSE = "pause"
    RESUME = "resume"
    UNDO = "undo"
    REPLAY = "replay"  # every shard of the stream from a time


class SkipTo(StrEnum):
    LATEST = "latest"  # the tip: only records arriving from now on
    NEXT_RECORD = "next-record"  # past the record the processor fails on
    DONE = "done"  # mark the shard finished; its children start


@dataclass(frozen=True, slots=True)
class ControlRequest:
    action: Action
    shard_id: str | None = None
    position: Position | None = None  # rewind target
    skip_to: SkipTo | None = None
    change_id: int | None = None  # undo target; None: the last change
    actor: str = "engine"
    note: str | None = None
    # A lease table: written even while a KCL 3.x handoff is under way (its checkpointOwner
    # cleared): for a handoff stuck past its timeout.
    force: bool = False

    def to_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.position is not None:
            args["position"] = self.position.encode()
        if self.skip_to is not None:
            args["skip_to"] = self.skip_to.value
        if self.change_id is not None:
            args["change_id"] = self.change_id
        if self.note:
            args["note"] = self.note
        if self.force:
            args["force"] = True
        return args

    @classmethod
    def from_command(cls, command: Command) -> ControlRequest:
        args = command.args
        try:
            return cls(
                action=Action(command.action),
                shard_id=command.shard_id,
                position=Position.decode(args["position"]) if "position" in args else None,
                skip_to=SkipTo(args["skip_to"]) if "skip_to" in args else None,
                change_id=args.get("change_id"),
                actor=command.actor,
                note=args.get("note"),
                force=bool(args.get("force", False)),
            )
        except (ValueError, KeyError) as exc:
            raise ControlError(f"command #{command.id} is malformed: {exc}") from None


@dataclass(frozen=True, slots=True)
class Target:
    """A rewind target as an operator types it. ``checkpoint_id`` names a history row whose
    position the caller looks up."""

    position: Position | None = None
    checkpoint_id: int | None = None


def parse_target(text: str, now: float | None = None) -> Target:
    """trim_horizon | latest | timestamp:ISO | ISO | -15m | sequence:N | checkpoint:ENTRY"""
    raw = text.strip()
    lowered = raw.lower()
    if lowered in ("trim_horizon", "start"):
        return Target(Position.trim_horizon())
    if lowered in ("latest", "tip"):
        return Target(Position.at_timestamp(time.time() if now is None else now))
    name, sep, arg = raw.partition(":")
    if sep and name.lower() == "sequence":
        seq, _, sub = arg.strip().partition("/")
        if not is_sequence_number(seq) or (sub and not sub.isdigit()):
            raise ControlError(f"'{arg}' is not a sequence number (1 to 128 decimal digits)")
        return Target(Position.at_sequence(seq, int(sub) if sub else None))
    if sep and name.lower() == "checkpoint":
        if not arg.strip().isdigit():
            raise ControlError(f"'{arg}' is not a history entry number")
        return Target(checkpoint_id=int(arg))
    if sep and name.lower() in ("timestamp", "at_timestamp"):
        raw = arg
    try:
        return Target(Position.at_timestamp(parse_when(raw, now)))
    except TooOld as exc:
        raise TargetTooOld(str(exc)) from None
    except PositionError:
        raise ControlError(
            f"'{text}' is not a target: use trim_horizon, latest, timestamp:ISO, -15m, "
            "sequence:N or checkpoint:ENTRY"
        ) from None


@dataclass(frozen=True, slots=True)
class ControlResult:
    command_id: int
    ok: bool
    message: str
    # Handed to a consumer in another process that had not applied it yet: it stays queued
    # and is applied between its batches.
    queued: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    changes: tuple[CheckpointChange, ...]
    summary: str


def explain(
    plan: Plan,
    holders: Mapping[str, str] | None = None,
    counts: Mapping[str, str] | None = None,
    no_holder: str = "",
) -> str:
    """The plan in an operator's words: per shard, from and to; with a lease table, who holds
    the lease now (``holders``, else ``no_holder``); how many records are read again where that
    was counted (``counts``)."""
    lines = [plan.summary]
    for change in plan.changes:
        h = change.history
        if h is None:
            continue
        old = h.old_position.encode() if h.old_position else "-"
        new = h.new_position.encode() if h.new_position else "-"
        text = f"  {h.shard_id}: " + (f"{old} -> {new}" if old != new else f"stays {old}")
        if h.old_status != h.new_status:
            text += f"; {h.old_status} -> {h.new_status}"
        if counts and h.shard_id in counts:
            text += f"; {counts[h.shard_id]} read again"
        if holders is not None:
            text += f"; {holders.get(h.shard_id, no_holder)}"
        lines.append(text)
    return "\n".join(lines)


def status_word(cp: Checkpoint | None) -> str | None:
    """The status history records: a checkpoint status, or "paused" for a paused open one."""
    if cp is None:
        return None
    if cp.paused and cp.status is CheckpointStatus.OPEN:
        return "paused"
    return cp.status.value


def _from_word(word: str | None) -> tuple[CheckpointStatus, bool]:
    if word == "paused":
        return CheckpointStatus.OPEN, True
    if word is None:
        return CheckpointStatus.OPEN, False
    return CheckpointStatus(word), False


def check_sequence(lineage: Lineage, shard_id: str, position: Position) -> None:
    """A sequence number must lie inside the shard's range when the range is known."""
    seq = position.sequence_number
    shard = lineage.shards.get(shard_id)
    if seq is None or shard is None:
        return
    first = shard.starting_sequence_number
    last = shard.ending_sequence_number
    if first is not None and seq_int(seq) < seq_int(first):
        raise ControlError(f"sequence number {seq} is before the first of {shard_id} ({first})")
    if last is not None and seq_int(seq) > seq_int(last):
        raise ControlError(f"sequence number {seq} is after the last of {shard_id} ({last})")


def check_time(position: Position, now: float, retention_hours: float | None) -> None:
    """A time target must be in the past, and inside the stream's retention when known."""
    ts = position.timestamp
    if position.kind is not PositionKind.AT_TIMESTAMP or ts is None:
        return
    if ts > now + 1:
        raise ControlError(f"{format_ts(ts)} is in the future")
    if retention_hours is not None and ts < now - retention_hours * 3600:
        raise ControlError(
            f"{format_ts(ts)} is older than the stream's retention ({retention_hours:g} h): "
            "those records are gone; choose a later time"
        )


def plan_change(
    request: ControlRequest,
    *,
    checkpoints: Mapping[str, Checkpoint],
    lineage: Lineage,
    default_position: Callable[[str], Position],
    now: float,
    command_id: int | None = None,
    failing_record: Record | None = None,
    undo_entries: Sequence[HistoryEntry] = (),
    retention_hours: float | None = None,
) -> Plan:
    """The rows one operator request writes. Raises ControlError when it cannot apply."""
    action = request.action
    if action is Action.UNDO:
        return _plan_undo(request, checkpoints, default_position, now, command_id, undo_entries)
    if request.position is not None:
        check_time(request.position, now, retention_hours)
    if action is Action.REPLAY:
        return _plan_replay(request, checkpoints, lineage, default_position, now, command_id)
    sid = request.shard_id
    if not sid:
        raise ControlError(f"{action.value} needs a shard id")
    if sid not in lineage and sid not in checkpoints:
        raise ControlError(f"unknown shard '{sid}': it is not in this stream")
    current = checkpoints.get(sid) or Checkpoint(sid, default_position(sid))

    def entry(
        old: Checkpoint, new: Checkpoint, cause: str, note: str | None = None
    ) -> HistoryEntry:
        return _entry(request, old, new, cause, now, command_id, note)

    if action is Action.REWIND:
        target = request.position
        if target is None:
            raise ControlError("rewind needs a target position")
        check_sequence(lineage, sid, target)
        new = replace(current, position=target, status=CheckpointStatus.OPEN)
        changes = [CheckpointChange(new, entry(current, new, "rewind"))]
        reset: list[str] = []
        # Lineage: a rewound parent is read again before its children, so every descendant
        # goes back to the start and waits for it. Per-key order is replayed as it was.
        for child in lineage.descendants(sid):
            old = checkpoints.get(child)
            if old is None:
                continue
            fresh = replace(old, position=Position.trim_horizon(), status=CheckpointStatus.OPEN)
            changes.append(
                CheckpointChange(fresh, entry(old, fresh, "reset", f"ancestor {sid} rewound"))
            )
            reset.append(child)
        summary = f"rewind {sid} to {target.target()}"
        if reset:
            summary += f"; reset {len(reset)} descendant(s) to wait for it: {', '.join(reset)}"
        return Plan(tuple(changes), summary)

    if action is Action.SKIP:
        to = request.skip_to
        if current.status.finished:
            raise ControlError(f"shard {sid} is already {current.status.value}: nothing to skip")
        if to is SkipTo.DONE:
            new = replace(current, status=CheckpointStatus.SKIPPED)
            summary = f"skip {sid}: marked done; its children may start"
        elif to is SkipTo.LATEST:
            new = replace(current, position=Position.at_timestamp(now))
            summary = f"skip {sid} to the tip (records from now on)"
        elif to is SkipTo.NEXT_RECORD:
            if failing_record is None:
                raise ControlError(
                    f"shard {sid} has no failing record to skip past (the processor is not "
                    "failing on it)"
                )
            new = replace(
                current,
                position=Position.after_sequence(
                    failing_record.sequence_number, failing_record.sub_sequence_number
                ),
                arrival=failing_record.approximate_arrival,
            )
            summary = f"skip {sid} past record {failing_record.sequence_number}"
        else:
            raise ControlError("skip needs --to latest, next-record or done")
        return Plan((CheckpointChange(new, entry(current, new, "skip")),), summary)

    if action is Action.PAUSE:
        if current.status.finished:
            raise ControlError(f"shard {sid} is {current.status.value}: nothing to pause")
        if current.paused:
            raise ControlError(f"shard {sid} is already paused")
        new = replace(current, paused=True)
        return Plan((CheckpointChange(new, entry(current, new, "pause")),), f"pause {sid}")

    if action is Action.RESUME:
        new = replace(current, paused=False)
        return Plan((CheckpointChange(new, entry(current, new, "resume")),), f"resume {sid}")
    raise ControlError(f"unknown action {action}")  # pragma: no cover - enum is exhaustive


def _entry(
    request: ControlRequest,
    old: Checkpoint,
    new: Checkpoint,
    cause: str,
    now: float,
    command_id: int | None,
    note: str | None = None,
) -> HistoryEntry:
    """The history row of one shard's change: who, when, why, from and to."""
    return HistoryEntry(
        shard_id=new.shard_id,
        cause=cause,
        actor=request.actor,
        old_position=old.position,
        new_position=new.position,
        old_status=status_word(old),
        new_status=status_word(new),
        note=note if note is not None else request.note,
        at=now,
        command_id=command_id,
    )


def _plan_replay(
    request: ControlRequest,
    checkpoints: Mapping[str, Checkpoint],
    lineage: Lineage,
    default_position: Callable[[str], Position],
    now: float,
    command_id: int | None,
) -> Plan:
    """Every shard of the stream reads again from a time.

    Setting every shard to AT_TIMESTAMP(T) is exact: a shard closed before T yields nothing and
    ends at once, a shard created after T yields all it has, and lineage still makes each child
    wait for its parents, so per-key order is replayed as it was first delivered."""
    target = request.position
    if target is None or target.kind is not PositionKind.AT_TIMESTAMP:
        raise ControlError("replay needs a time to start from")
    if not lineage.shards:
        raise ControlError("the stream has no shards to replay")
    changes = []
    for sid in sorted(lineage.shards):
        current = checkpoints.get(sid) or Checkpoint(sid, default_position(sid))
        new = replace(current, position=target, status=CheckpointStatus.OPEN)
        changes.append(
            CheckpointChange(new, _entry(request, current, new, "replay", now, command_id))
        )
    return Plan(tuple(changes), f"replay {len(changes)} shard(s) from {target.target()}")


def _plan_undo(
    request: ControlRequest,
    checkpoints: Mapping[str, Checkpoint],
    default_position: Callable[[str], Position],
    now: float,
    command_id: int | None,
    entries: Sequence[HistoryEntry],
) -> Plan:
    if not entries:
        which = f"change #{request.change_id}" if request.change_id else "change"
        raise ControlError(f"there is no {which} to undo")
    changes: list[CheckpointChange] = []
    target = entries[0].command_id
    for h in entries:
        current = checkpoints.get(h.shard_id) or Checkpoint(
            h.shard_id, default_position(h.shard_id)
        )
        status, paused = _from_word(h.old_status)
        restored = replace(
            current,
            position=h.old_position or default_position(h.shard_id),
            status=status,
            paused=paused,
        )
        note = f"undo of change #{target}"
        changes.append(
            CheckpointChange(
                restored, _entry(request, current, restored, "undo", now, command_id, note)
            )
        )
    shards = ", ".join(sorted({h.shard_id for h in entries}))
    return Plan(tuple(changes), f"undo change #{target} ({shards})")
