"""plan_change, table-driven: what each operator request writes, or why it is refused. Pure: no
store, no stream, no clock but the one passed in. Runs in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from console.engine.changes.plan import Action, ControlError, ControlRequest, SkipTo, plan_change
from console.engine.lineage import Lineage
from console.model import (
    Checkpoint,
    CheckpointStatus,
    HistoryEntry,
    Position,
    Record,
    Shard,
)

NOW = 1_800_000_000.0
S0, S1, S2, S3, S4 = "s0", "s1", "s2", "s3", "s4"
# s0 split into s1 and s2; s2 split into s3. s4 stands alone. Sequence ranges: 100..199 etc.
LINEAGE = Lineage.build(
    [
        Shard(S0, starting_sequence_number="100", ending_sequence_number="199"),
        Shard(S1, parent_id=S0, starting_sequence_number="200"),
        Shard(S2, parent_id=S0, starting_sequence_number="300", ending_sequence_number="399"),
        Shard(S3, parent_id=S2, starting_sequence_number="400"),
        Shard(S4, starting_sequence_number="500"),
    ]
)
AFTER = Position.after_sequence
CHECKPOINTS = {
    S0: Checkpoint(S0, AFTER("199"), CheckpointStatus.DONE),
    S1: Checkpoint(S1, AFTER("250")),
    S2: Checkpoint(S2, AFTER("399"), CheckpointStatus.DONE),
    S3: Checkpoint(S3, AFTER("410"), paused=True),
    S4: Checkpoint(S4, AFTER("520")),
}
T60 = Position.at_timestamp(NOW - 60)
POISON = Record("515", "k", b"x", NOW - 60)


def plan(request: ControlRequest, **kw: object) -> tuple[list[tuple[str, Checkpoint, str]], str]:
    """(shard, new checkpoint, history cause) per change, and the summary."""
    args: dict[str, object] = {
        "checkpoints": CHECKPOINTS,
        "lineage": LINEAGE,
        "default_position": lambda sid: Position.trim_horizon(),
        "now": NOW,
        "command_id": 7,
        "retention_hours": 24.0,
        **kw,
    }
    result = plan_change(request, **args)  # type: ignore[arg-type]
    rows = []
    for change in result.changes:
        assert change.history is not None and change.history.command_id == 7
        rows.append((change.checkpoint.shard_id, change.checkpoint, change.history.cause))
    return rows, result.summary


@dataclass
class Case:
    name: str
    request: ControlRequest
    expect: list[tuple[str, Checkpoint, str]]
    summary: str
    kw: dict[str, object] = field(default_factory=dict)


OPEN = CheckpointStatus.OPEN
CASES = [
    Case(
        "rewind an open shard to its start",
        ControlRequest(Action.REWIND, S4, position=Position.trim_horizon()),
        [(S4, Checkpoint(S4, Position.trim_horizon()), "rewind")],
        "rewind s4 to the start (TRIM_HORIZON)",
    ),
    Case(
        "rewind a closed parent: it opens again, every descendant waits for it from its start",
        ControlRequest(Action.REWIND, S0, position=Position.at_sequence("150")),
        [
            (S0, Checkpoint(S0, Position.at_sequence("150"), OPEN), "rewind"),
            (S1, Checkpoint(S1, Position.trim_horizon(), OPEN), "reset"),
            (S2, Checkpoint(S2, Position.trim_horizon(), OPEN), "reset"),
            (S3, Checkpoint(S3, Position.trim_horizon(), OPEN, paused=True), "reset"),
        ],
        "rewind s0 to sequence at 150; reset 3 descendant(s) to wait for it: s1, s2, s3",
    ),
    Case(
        "rewind to a time inside the retention",
        ControlRequest(Action.REWIND, S1, position=Position.at_timestamp(NOW - 3600)),
        [(S1, Checkpoint(S1, Position.at_timestamp(NOW - 3600)), "rewind")],
        "rewind s1 to 2027-01-15T07:00:00.000Z",
    ),
    Case(
        "skip to the tip: from now on",
        ControlRequest(Action.SKIP, S4, skip_to=SkipTo.LATEST),
        [(S4, Checkpoint(S4, Position.at_timestamp(NOW)), "skip")],
        "skip s4 to the tip (records from now on)",
    ),
    Case(
        "skip: mark done, so its children start",
        ControlRequest(Action.SKIP, S1, skip_to=SkipTo.DONE),
        [(S1, Checkpoint(S1, AFTER("250"), CheckpointStatus.SKIPPED), "skip")],
        "skip s1: marked done; its children may start",
    ),
    Case(
        "skip past the record the processor fails on",
        ControlRequest(Action.SKIP, S4, skip_to=SkipTo.NEXT_RECORD),
        [(S4, Checkpoint(S4, AFTER("515"), arrival=NOW - 60), "skip")],
        "skip s4 past record 515",
        {"failing_record": POISON},
    ),
    Case(
        "pause",
        ControlRequest(Action.PAUSE, S4),
        [(S4, Checkpoint(S4, AFTER("520"), paused=True), "pause")],
        "pause s4",
    ),
    Case(
        "resume",
        ControlRequest(Action.RESUME, S3),
        [(S3, Checkpoint(S3, AFTER("410")), "resume")],
        "resume s3",
    ),
    Case(
        "replay: every shard at the instant, open again",
        ControlRequest(Action.REPLAY, position=Position.at_timestamp(NOW - 60)),
        [
            (
                sid,
                Checkpoint(sid, Position.at_timestamp(NOW - 60), OPEN, paused=sid == S3),
                "replay",
            )
            for sid in (S0, S1, S2, S3, S4)
        ],
        "replay 5 shard(s) from 2027-01-15T07:59:00.000Z",
    ),
    Case(
        "undo: every row of the change back to what it replaced, paused included",
        ControlRequest(Action.UNDO, change_id=3),
        [
            (S0, Checkpoint(S0, AFTER("199"), CheckpointStatus.DONE), "undo"),
            (S3, Checkpoint(S3, AFTER("401"), OPEN, paused=True), "undo"),
        ],
        "undo change #3 (s0, s3)",
        {
            "undo_entries": [
                HistoryEntry(
                    S0,
                    "rewind",
                    "me",
                    Position.trim_horizon(),
                    "open",
                    AFTER("199"),
                    "done",
                    command_id=3,
                ),
                HistoryEntry(
                    S3,
                    "reset",
                    "me",
                    Position.trim_horizon(),
                    "open",
                    AFTER("401"),
                    "paused",
                    command_id=3,
                ),
            ]
        },
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_what_a_request_writes(case: Case) -> None:
    rows, summary = plan(case.request, **case.kw)
    assert rows == case.expect
    assert summary == case.summary


REFUSED = [
    ("no shard", ControlRequest(Action.PAUSE), {}, "pause needs a shard id"),
    ("unknown shard", ControlRequest(Action.PAUSE, "s9"), {}, "unknown shard 's9'"),
    (
        "sequence before the shard's first",
        ControlRequest(Action.REWIND, S1, position=Position.at_sequence("199")),
        {},
        "before the first of s1 (200)",
    ),
    (
        "sequence after a closed shard's last",
        ControlRequest(Action.REWIND, S2, position=Position.at_sequence("400")),
        {},
        "after the last of s2 (399)",
    ),
    (
        "a time in the future",
        ControlRequest(Action.REWIND, S1, position=Position.at_timestamp(NOW + 60)),
        {},
        "in the future",
    ),
    (
        "a time the stream no longer holds",
        ControlRequest(Action.REWIND, S1, position=Position.at_timestamp(NOW - 25 * 3600)),
        {},
        "older than the stream's retention (24 h)",
    ),
    ("rewind with no target", ControlRequest(Action.REWIND, S1), {}, "needs a target"),
    (
        "skip a finished shard",
        ControlRequest(Action.SKIP, S0, skip_to=SkipTo.LATEST),
        {},
        "s0 is already done",
    ),
    (
        "skip past a record when none fails",
        ControlRequest(Action.SKIP, S4, skip_to=SkipTo.NEXT_RECORD),
        {},
        "no failing record",
    ),
    ("skip with no target", ControlRequest(Action.SKIP, S4), {}, "skip needs --to"),
    ("pause a paused shard", ControlRequest(Action.PAUSE, S3), {}, "already paused"),
    ("pause a finished shard", ControlRequest(Action.PAUSE, S2), {}, "s2 is done"),
    (
        "replay without a time",
        ControlRequest(Action.REPLAY, position=Position.trim_horizon()),
        {},
        "replay needs a time",
    ),
    (
        "replay an empty stream",
        ControlRequest(Action.REPLAY, position=Position.at_timestamp(NOW - 60)),
        {"lineage": Lineage.build(())},
        "no shards",
    ),
    ("undo with nothing to undo", ControlRequest(Action.UNDO), {}, "there is no change to undo"),
    (
        "undo an unknown change",
        ControlRequest(Action.UNDO, change_id=42),
        {},
        "there is no change #42 to undo",
    ),
]


@pytest.mark.parametrize(
    ("request_", "kw", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_what_is_refused(request_: ControlRequest, kw: dict[str, object], message: str) -> None:
    with pytest.raises(ControlError) as caught:
        plan(request_, **kw)
    assert message in str(caught.value)
