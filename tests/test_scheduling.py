"""The scheduling decision (console.engine.consume.scheduling): which shard reads now, pure.
Table-driven; runs in milliseconds."""

from __future__ import annotations

import pytest

from console.engine.consume.scheduling import Act, Decision, ShardFacts, decide, start_position
from console.engine.ownership.base import Allowance
from console.model import Checkpoint, CheckpointStatus, Position, ShardStatus

READ, ELSEWHERE, NOBODY = Allowance.READ, Allowance.ELSEWHERE, Allowance.NOBODY
OPEN = Checkpoint("s", Position.after_sequence("7"))
PAUSED = Checkpoint("s", Position.after_sequence("7"), paused=True)
DONE = Checkpoint("s", Position.after_sequence("9"), CheckpointStatus.DONE)
SKIPPED = Checkpoint("s", Position.after_sequence("9"), CheckpointStatus.SKIPPED)
DONE_PAUSED = Checkpoint("s", Position.latest(), CheckpointStatus.DONE, paused=True)


def show(status: ShardStatus) -> Decision:
    return Decision(Act.SHOW, status)


CASES = [
    # (what the runner knows, what follows, why)
    (ShardFacts(OPEN, True, READ), Decision(Act.START), "ours, ready, open: read it"),
    (ShardFacts(None, True, READ), Decision(Act.START), "no checkpoint yet: read from the start"),
    (ShardFacts(OPEN, False, READ), show(ShardStatus.WAITING), "a parent is still being read"),
    (ShardFacts(OPEN, True, ELSEWHERE), show(ShardStatus.LEASED), "another worker holds it"),
    (ShardFacts(OPEN, True, NOBODY), show(ShardStatus.READY), "nobody holds it yet"),
    (ShardFacts(DONE, True, READ), show(ShardStatus.DONE), "read to its end"),
    (ShardFacts(SKIPPED, True, READ), show(ShardStatus.SKIPPED), "an operator marked it done"),
    (ShardFacts(DONE_PAUSED, True, READ), show(ShardStatus.DONE), "finished wins over paused"),
    (ShardFacts(DONE, False, ELSEWHERE), show(ShardStatus.DONE), "finished wins over waiting"),
    (ShardFacts(PAUSED, True, READ), show(ShardStatus.PAUSED), "an operator paused it"),
    (ShardFacts(PAUSED, False, READ), show(ShardStatus.PAUSED), "paused wins over waiting"),
    (ShardFacts(OPEN, True, READ, failed=True), Decision(Act.KEEP), "it shows why it failed"),
    (ShardFacts(DONE, True, READ, failed=True), show(ShardStatus.DONE), "finished wins"),
    (ShardFacts(OPEN, True, READ, reading=True), Decision(Act.KEEP), "its worker reads on"),
    (ShardFacts(DONE, True, READ, reading=True), Decision(Act.KEEP), "its worker ends it"),
    (
        ShardFacts(OPEN, True, ELSEWHERE, reading=True),
        Decision(Act.ABANDON, ShardStatus.LEASED),
        "the lease went to another worker: stop at once",
    ),
    (
        ShardFacts(OPEN, True, NOBODY, reading=True),
        Decision(Act.ABANDON, ShardStatus.READY),
        "an operator's change took the lease: stop at once",
    ),
    (
        ShardFacts(OPEN, True, NOBODY, reading=True, changing=True),
        Decision(Act.ABANDON, ShardStatus.READY),
        "lost while a change holds it: stopped all the same",
    ),
    (ShardFacts(OPEN, True, READ, changing=True), Decision(Act.KEEP), "a change rewrites it"),
    (
        ShardFacts(OPEN, True, Allowance.HAND_OFF, reading=True),
        Decision(Act.HAND_OFF),
        "a KCL 3.x leader moves it: finish the batch in hand, checkpoint, let go",
    ),
    (
        ShardFacts(PAUSED, False, Allowance.HAND_OFF),
        Decision(Act.HAND_OFF),
        "moved while not read (paused, waiting): let go at once, its checkpoint as it is",
    ),
    (
        ShardFacts(OPEN, True, READ, problem="leaseCounter 'x' is not a number"),
        Decision(Act.SHOW, ShardStatus.READY, "leaseCounter 'x' is not a number"),
        "its lease is malformed: nobody may read it, and the row says why",
    ),
    (
        ShardFacts(PAUSED, True, READ, problem="malformed"),
        show(ShardStatus.PAUSED),
        "paused wins over a malformed lease",
    ),
    (ShardFacts(DONE, True, READ, changing=True), Decision(Act.KEEP), "a change rewrites it"),
]


@pytest.mark.parametrize(("facts", "expected", "why"), CASES, ids=[c[2] for c in CASES])
def test_the_decision(facts: ShardFacts, expected: Decision, why: str) -> None:
    assert decide(facts) == expected, why


def test_a_worker_starts_at_its_checkpoint_or_the_start() -> None:
    assert start_position("s", None, 24.0, 1e9) == (Position.trim_horizon(), None)
    cp = Checkpoint("s", Position.after_sequence("7"), arrival=1e9 - 3600)
    assert start_position("s", cp, 24.0, 1e9) == (Position.after_sequence("7"), None)
    # No arrival known, or no retention known: the checkpoint as it is.
    assert start_position("s", Checkpoint("s", Position.after_sequence("7")), 24.0, 1e9)[1] is None
    assert start_position("s", cp, None, 1e9 + 10**6)[1] is None


def test_a_checkpoint_past_the_retention_reads_on_from_the_start_and_says_so() -> None:
    now = 1e9
    old = Checkpoint("s", Position.after_sequence("7"), arrival=now - 24 * 3600 - 1)
    position, lost = start_position("s", old, 24.0, now)
    assert position == Position.trim_horizon()
    assert lost == (
        "s: checkpoint from 2001-09-08T01:46:39.000Z is older than the stream's retention (24 h); "
        "continuing at TRIM_HORIZON: records after it may have been lost"
    )
    # Exactly at the edge it is still held; a time (not a record) is never "lost" so.
    edge = Checkpoint("s", Position.after_sequence("7"), arrival=now - 24 * 3600)
    assert start_position("s", edge, 24.0, now) == (Position.after_sequence("7"), None)
    at_time = Checkpoint("s", Position.at_timestamp(5.0), arrival=5.0)
    assert start_position("s", at_time, 24.0, now) == (Position.at_timestamp(5.0), None)
