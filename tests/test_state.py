"""The versioned snapshot: rows are values the state stamps, so a reader that remembers a
version redraws exactly what changed since. Pure, in microseconds."""

from __future__ import annotations

import pytest

from console.engine.state import EngineState, ShardView
from console.model import Position, ShardStatus

AFTER = Position.after_sequence


def fresh() -> EngineState:
    state = EngineState("s", "kinesis", "test")
    for sid in ("a", "b", "c"):
        state.update(sid, lag_ms=0)
    return state


def test_an_update_that_changes_nothing_keeps_the_row_and_its_version() -> None:
    state = fresh()
    row, version = state.view("a"), state.version
    assert state.update("a", lag_ms=0) is row
    assert state.update("a", lag_ms=0, position=None) is row  # several fields, none different
    assert state.version == version and state.changed_since(version) == []


def test_an_update_stamps_the_next_version_on_that_row_only() -> None:
    state = fresh()
    version = state.version
    row = state.update("b", lag_ms=5, position=AFTER("7"))
    assert (row.lag_ms, row.position, row.version) == (5, AFTER("7"), version + 1)
    assert state.view("b") is row and state.version == version + 1
    assert [v.shard_id for v in state.changed_since(version)] == ["b"]
    assert state.view("a").version <= version  # the others keep theirs
    # One field the same and one not: still a change, and the same field kept.
    again = state.update("b", lag_ms=5, rate=2.0)
    assert (again.lag_ms, again.rate, again.version) == (5, 2.0, version + 2)


def test_a_row_put_equal_to_the_one_held_keeps_its_version() -> None:
    state = fresh()
    held = state.view("c")
    version = state.version
    assert state.put(held._replace(version=0)) is held  # the version is not content
    changed = state.put(held._replace(status=ShardStatus.PAUSED))
    assert changed.version == version + 1 and state.view("c") is changed


def test_a_flush_remakes_each_row_it_wrote() -> None:
    state = fresh()
    version = state.version
    state.checkpointed([("a", AFTER("1"), False), ("c", AFTER("3"), True)], 100.0)
    a, c = state.view("a"), state.view("c")
    assert (a.checkpoint, a.checkpoint_at, a.position) == (AFTER("1"), 100.0, None)
    assert (c.checkpoint, c.checkpoint_at, c.position) == (AFTER("3"), 100.0, AFTER("3"))
    assert sorted(v.shard_id for v in state.changed_since(version)) == ["a", "c"]
    assert isinstance(a, ShardView) and a.version != c.version


def test_the_totals_sum_every_row_once_per_version() -> None:
    state = EngineState("s", "kinesis", "test")
    empty = state.totals()
    assert (empty.max_lag_ms, empty.total_lag_ms, empty.oldest_checkpoint_at) == (None, None, None)
    assert empty.counts[ShardStatus.ACTIVE] == 0  # a status no shard has counts 0
    state.update("a", status=ShardStatus.ACTIVE, lag_ms=300, checkpoint_at=50.0)
    state.update("b", status=ShardStatus.ACTIVE, lag_ms=0, checkpoint_at=20.0)
    state.update("c", status=ShardStatus.DONE, checkpoint_at=5.0)  # finished: not "oldest"
    state.update("d", status=ShardStatus.SKIPPED, lag_ms=7)
    totals = state.totals()
    assert dict(totals.counts) == {
        ShardStatus.ACTIVE: 2,
        ShardStatus.DONE: 1,
        ShardStatus.SKIPPED: 1,
    }
    assert (totals.max_lag_ms, totals.total_lag_ms) == (300, 307)
    assert totals.oldest_checkpoint_at == 20.0
    assert state.totals() is totals  # nothing changed: not summed again
    assert (state.counts(), state.max_lag_ms(), state.oldest_checkpoint_at()) == (
        totals.counts,
        300,
        20.0,
    )
    state.update("b", lag_ms=900)
    assert state.totals().max_lag_ms == 900 and state.totals().total_lag_ms == 1207
    state.remove("a")
    assert state.totals().counts[ShardStatus.ACTIVE] == 1


def test_a_prepared_writer_sets_its_fields_and_keeps_an_unchanged_row() -> None:
    state = fresh()
    write = state.writer("lag_ms", "checkpoint")
    version = state.version
    row = state.view("a")
    assert write(row, (0, None)) is row and state.version == version  # as it was
    new = write(row, (40, AFTER("4")))
    assert (new.lag_ms, new.checkpoint, new.version) == (40, AFTER("4"), version + 1)
    assert state.view("a") is new and state.view("b").lag_ms == 0
    with pytest.raises(ValueError):
        write(new, (1,))  # a value short: refused, not half-written
    assert state.view("a") is new
