"""Which shard reads now: the scheduling decision, pure. No I/O, no clock but the one given.

For each shard the runner (console.engine.consume.runner) gathers the facts (its checkpoint,
whether its parents are finished, what the ownership strategy allows, whether a worker reads it,
whether an operator change holds it, whether it failed) and :func:`decide` says what follows:
start a worker, stop one at once, or only show a status. :func:`start_position` says where a
worker starts, and whether the checkpoint fell out of the stream's retention on the way.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from console.engine.ownership.base import Allowance
from console.model import Checkpoint, CheckpointStatus, Position, ShardStatus, format_ts


class Act(StrEnum):
    START = "start"  # a worker reads it, from start_position
    ABANDON = "abandon"  # its worker stops at once, without a checkpoint: no longer ours
    HAND_OFF = "hand off"  # its worker finishes the batch in hand, checkpoints, lets it go
    SHOW = "show"  # no worker; the row shows ``status``
    KEEP = "keep"  # as it is (a worker reads it, or an operator change holds it)


@dataclass(frozen=True, slots=True)
class ShardFacts:
    checkpoint: Checkpoint | None
    ready: bool  # every parent is finished, or left the stream
    allowance: Allowance
    reading: bool = False  # a worker reads it now
    changing: bool = False  # an operator change is rewriting it
    failed: bool = False  # an error stopped it; a change or a new lease clears that
    problem: str | None = None  # what keeps anyone from reading it (a malformed lease)


@dataclass(frozen=True, slots=True)
class Decision:
    act: Act
    status: ShardStatus | None = None  # what the row shows (SHOW, and after ABANDON)
    error: str | None = None  # and why, when something is wrong


KEEP = Decision(Act.KEEP)
START = Decision(Act.START)
_AWAY = {Allowance.ELSEWHERE: ShardStatus.LEASED, Allowance.NOBODY: ShardStatus.READY}
HAND_OFF = Decision(Act.HAND_OFF)


def decide(facts: ShardFacts) -> Decision:
    """What follows for one shard."""
    if facts.allowance is Allowance.HAND_OFF:
        return HAND_OFF  # whether a worker reads it or not: its progress goes with it
    if facts.reading:
        if facts.allowance is not Allowance.READ:
            # The lease went to another worker (or an operator's change took it): the batch in
            # hand is the next holder's to read.
            return Decision(Act.ABANDON, _AWAY[facts.allowance])
        return KEEP
    if facts.changing:
        return KEEP
    cp = facts.checkpoint
    if cp is not None and cp.status.finished:
        done = cp.status is CheckpointStatus.DONE
        return Decision(Act.SHOW, ShardStatus.DONE if done else ShardStatus.SKIPPED)
    if facts.failed:
        return KEEP  # shows why it stopped until a change, or a lease taken anew, clears it
    if cp is not None and cp.paused:
        return Decision(Act.SHOW, ShardStatus.PAUSED)
    if not facts.ready:
        return Decision(Act.SHOW, ShardStatus.WAITING)
    if facts.problem is not None:
        return Decision(Act.SHOW, ShardStatus.READY, facts.problem)
    if facts.allowance is Allowance.READ:
        return START
    return Decision(Act.SHOW, _AWAY[facts.allowance])


def start_position(
    shard_id: str, checkpoint: Checkpoint | None, retention_hours: float | None, now: float
) -> tuple[Position, str | None]:
    """Where a worker starts: the checkpoint, else the shard's start. A checkpoint of a record
    older than the stream keeps is read on from TRIM_HORIZON, and the loss said (the message)."""
    if checkpoint is None:
        return Position.trim_horizon(), None
    position = checkpoint.position
    if (
        checkpoint.arrival is not None
        and retention_hours is not None
        and position.sequence_number is not None
        and checkpoint.arrival < now - retention_hours * 3600
    ):
        return Position.trim_horizon(), (
            f"{shard_id}: checkpoint from {format_ts(checkpoint.arrival)} is older than the "
            f"stream's retention ({retention_hours:g} h); continuing at TRIM_HORIZON: records "
            "after it may have been lost"
        )
    return position, None
