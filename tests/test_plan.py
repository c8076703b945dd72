"""plan_change, table-driven: what each operator request writes, or why it is refused. Pure: no
store, no stream, no clock but the one passed in. Runs in milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from console.checkpoints.base import CheckpointChange, Command
from console.engine.changes.plan import (
    Action,
    ControlError,
    ControlRequest,
    Plan,
    SkipTo,
    Target,
    TargetTooOld,
    check_sequence,
    check_time,
    explain,
    parse_target,
    plan_change,
    status_word,
)
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


def default_position(sid: str) -> Position:
    return Position.trim_horizon()


def plan(request: ControlRequest, **kw: object) -> tuple[list[tuple[str, Checkpoint, str]], str]:
    """(shard, new checkpoint, history cause) per change, and the summary. Every change's
    history row is checked too: it says who, when, why, and from what to what."""
    request = replace(request, actor="alice", note="deploy 42 was bad")
    args: dict[str, object] = {
        "checkpoints": CHECKPOINTS,
        "lineage": LINEAGE,
        "default_position": default_position,
        "now": NOW,
        "command_id": 7,
        "retention_hours": 24.0,
        **kw,
    }
    result = plan_change(request, **args)  # type: ignore[arg-type]
    checkpoints: dict[str, Checkpoint] = args["checkpoints"]  # type: ignore[assignment]
    rows = []
    for change in result.changes:
        cp, h = change.checkpoint, change.history
        sid = cp.shard_id
        old = checkpoints.get(sid) or Checkpoint(sid, default_position(sid))
        if h is None:
            raise AssertionError(f"{sid}: no history row")
        if h.cause == "reset":
            note = f"ancestor {request.shard_id} rewound"
        elif h.cause == "undo":
            note = f"undo of change #{request.change_id}"
        else:
            note = request.note
        assert h == HistoryEntry(
            shard_id=sid,
            cause=h.cause,
            actor="alice",
            old_position=old.position,
            old_status=status_word(old),
            new_position=cp.position,
            new_status=status_word(cp),
            note=note,
            at=NOW,
            command_id=7,
        )
        rows.append((sid, cp, h.cause))
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


# -- targets as operators type them ----------------------------------------------------------------

TARGETS = [
    ("trim_horizon", Target(Position.trim_horizon())),
    (" START ", Target(Position.trim_horizon())),
    ("latest", Target(Position.at_timestamp(NOW))),  # the tip: a time, resolved when applied
    ("Tip", Target(Position.at_timestamp(NOW))),
    ("sequence:515", Target(Position.at_sequence("515"))),
    ("SEQUENCE: 515/3", Target(Position.at_sequence("515", 3))),
    ("checkpoint:12", Target(checkpoint_id=12)),
    ("Checkpoint: 12", Target(checkpoint_id=12)),
    ("-15m", Target(Position.at_timestamp(NOW - 900))),
    ("-2h", Target(Position.at_timestamp(NOW - 7200))),
    ("2027-01-15T07:00:00Z", Target(Position.at_timestamp(NOW - 3600))),
    ("timestamp:2027-01-15T07:00:00Z", Target(Position.at_timestamp(NOW - 3600))),
    ("AT_TIMESTAMP:2027-01-15T07:00:00Z", Target(Position.at_timestamp(NOW - 3600))),
]


@pytest.mark.parametrize(("text", "target"), TARGETS, ids=[t[0] for t in TARGETS])
def test_a_target_as_typed(text: str, target: Target) -> None:
    assert parse_target(text, now=NOW) == target


NOT_TARGETS = [
    ("sequence:abc", "'abc' is not a sequence number (1 to 128 decimal digits)", ControlError),
    ("sequence:515/x", "'515/x' is not a sequence number (1 to 128 decimal digits)", ControlError),
    ("sequence:" + "9" * 129, "is not a sequence number (1 to 128 decimal digits)", ControlError),
    ("checkpoint:last", "'last' is not a history entry number", ControlError),
    (
        "yesterday",
        "'yesterday' is not a target: use trim_horizon, latest, timestamp:ISO, -15m, sequence:N "
        "or checkpoint:ENTRY",
        ControlError,
    ),
    ("-99999999d", "'-99999999d' is before 1970: no stream holds records that old", TargetTooOld),
]


@pytest.mark.parametrize(("text", "message", "kind"), NOT_TARGETS, ids=[t[0] for t in NOT_TARGETS])
def test_what_is_not_a_target_says_what_is(text: str, message: str, kind: type) -> None:
    with pytest.raises(ControlError) as caught:
        parse_target(text, now=NOW)
    assert type(caught.value) is kind
    assert str(caught.value).endswith(message)


def test_latest_is_now_when_no_clock_is_given() -> None:
    import time

    before = time.time()
    target = parse_target("latest")
    assert target.position is not None and target.position.timestamp is not None
    assert before <= target.position.timestamp <= time.time()


# -- a request through the command table and back -------------------------------------------------

REQUESTS = [
    ControlRequest(Action.REWIND, S1, position=Position.at_sequence("250", 2), actor="a"),
    ControlRequest(Action.REWIND, S1, position=Position.at_timestamp(NOW - 60), note="why"),
    ControlRequest(Action.SKIP, S4, skip_to=SkipTo.NEXT_RECORD, actor="b"),
    ControlRequest(Action.PAUSE, S4),
    ControlRequest(Action.UNDO, change_id=3, actor="c", note="oops"),
    ControlRequest(Action.REPLAY, position=Position.at_timestamp(NOW - 3600)),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=[r.action.value for r in REQUESTS])
def test_a_request_survives_the_command_table(request_: ControlRequest) -> None:
    args = request_.to_args()
    command = Command(
        9, "stream", request_.shard_id, request_.action.value, args, request_.actor, NOW
    )
    assert ControlRequest.from_command(command) == request_


def test_a_request_s_arguments_are_only_what_it_carries() -> None:
    assert ControlRequest(Action.PAUSE, S4, note="").to_args() == {}
    assert ControlRequest(
        Action.REWIND, S1, Position.after_sequence("7"), SkipTo.DONE, 0, note="n"
    ).to_args() == {
        "position": "after_sequence:7",
        "skip_to": "done",
        "change_id": 0,
        "note": "n",
    }


@pytest.mark.parametrize(
    ("action", "args", "message"),
    [
        ("explode", {}, "'explode' is not a valid Action"),
        ("rewind", {"position": "SOMEWHERE:1"}, "unknown position 'SOMEWHERE:1'"),
        ("skip", {"skip_to": "nowhere"}, "'nowhere' is not a valid SkipTo"),
    ],
)
def test_a_malformed_command_is_refused_by_number(
    action: str, args: dict[str, object], message: str
) -> None:
    with pytest.raises(ControlError) as caught:
        ControlRequest.from_command(Command(9, "stream", S1, action, args, "x", NOW))
    assert str(caught.value) == f"command #9 is malformed: {message}"


# -- the plan in words ---------------------------------------------------------------------------


def test_a_plan_in_an_operator_s_words() -> None:
    result = plan_change(
        ControlRequest(Action.REWIND, S0, position=Position.at_sequence("150")),
        checkpoints=CHECKPOINTS,
        lineage=LINEAGE,
        default_position=default_position,
        now=NOW,
    )
    summary = "rewind s0 to sequence at 150; reset 3 descendant(s) to wait for it: s1, s2, s3"
    assert explain(result) == "\n".join(
        [
            summary,
            "  s0: after_sequence:199 -> at_sequence:150; done -> open",
            "  s1: after_sequence:250 -> trim_horizon",
            "  s2: after_sequence:399 -> trim_horizon; done -> open",
            "  s3: after_sequence:410 -> trim_horizon",
        ]
    )
    holders = {"s0": "held by w1", "s2": "held by w2"}
    counts = {"s1": "42"}
    assert explain(result, holders, counts, "nobody holds it").splitlines()[1:3] == [
        "  s0: after_sequence:199 -> at_sequence:150; done -> open; held by w1",
        "  s1: after_sequence:250 -> trim_horizon; 42 read again; nobody holds it",
    ]
    paused = plan_change(
        ControlRequest(Action.PAUSE, S4),
        checkpoints=CHECKPOINTS,
        lineage=LINEAGE,
        default_position=default_position,
        now=NOW,
    )
    assert explain(paused) == "pause s4\n  s4: stays after_sequence:520; open -> paused"
    # A row with no history (none is written so today) is not listed; no position reads "-".
    assert explain(Plan((CheckpointChange(CHECKPOINTS[S4], None),), "x")) == "x"
    fresh = HistoryEntry(
        S4,
        "rewind",
        "a",
        old_position=None,
        new_position=Position.trim_horizon(),
        new_status="open",
    )
    assert explain(Plan((CheckpointChange(CHECKPOINTS[S4], fresh),), "x")) == (
        "x\n  s4: - -> trim_horizon; None -> open"
    )


def test_status_words_both_ways() -> None:
    assert status_word(None) is None
    assert status_word(Checkpoint(S4, AFTER("1"))) == "open"
    assert status_word(Checkpoint(S4, AFTER("1"), paused=True)) == "paused"
    # Finished wins over paused: a done shard is not "paused".
    assert status_word(Checkpoint(S4, AFTER("1"), CheckpointStatus.DONE, paused=True)) == "done"
    assert status_word(Checkpoint(S4, AFTER("1"), CheckpointStatus.SKIPPED)) == "skipped"


def test_the_edges_of_a_shard_s_range_and_of_the_retention() -> None:
    for seq in ("200", "250"):
        check_sequence(LINEAGE, S1, Position.at_sequence(seq))  # open: no last
    for seq in ("300", "399"):
        check_sequence(LINEAGE, S2, Position.at_sequence(seq))
    check_sequence(LINEAGE, "unknown", Position.at_sequence("1"))  # a range not known
    check_sequence(LINEAGE, S2, Position.trim_horizon())
    check_time(Position.at_timestamp(NOW + 1), NOW, 24.0)  # a clock a second ahead
    check_time(Position.at_timestamp(NOW - 24 * 3600), NOW, 24.0)  # the retention's edge
    check_time(Position.at_timestamp(NOW - 10**6), NOW, None)  # retention not known
    check_time(Position.after_sequence("5"), NOW, 24.0)
    with pytest.raises(ControlError) as caught:
        check_time(Position.at_timestamp(NOW + 1.5), NOW, 24.0)
    assert str(caught.value) == "2027-01-15T08:00:01.500Z is in the future"
    with pytest.raises(ControlError) as caught:
        check_time(Position.at_timestamp(NOW - 24 * 3600 - 1), NOW, 24.0)
    assert str(caught.value) == (
        "2027-01-14T07:59:59.000Z is older than the stream's retention (24 h): those records "
        "are gone; choose a later time"
    )
