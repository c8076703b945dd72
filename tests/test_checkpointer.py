"""The checkpointer, and the fetch planning a worker resumes with: pure pieces, no stream, no
file (an in-memory store). Runs in milliseconds."""

from __future__ import annotations

import asyncio

import pytest

from console.checkpoints.base import CheckpointChange, CheckpointStore, Lockable
from console.engine.consume.checkpointing import Checkpointer
from console.engine.events import EventLog
from console.engine.ownership.lock import StreamLock
from console.engine.read.resume import drop_through, fetch_plan
from console.engine.state import EngineState
from console.model import (
    Checkpoint,
    CheckpointStatus,
    HistoryEntry,
    Position,
    Record,
)
from tests.memory_store import MemoryStore

AFTER = Position.after_sequence
KEY = "arn:aws:kinesis:us-east-1:1:stream/s"


def test_the_memory_store_has_every_member_of_the_protocol() -> None:
    members = {m for m in vars(CheckpointStore) if not m.startswith("_")} - {"path"}
    members |= {m for m in vars(Lockable) if not m.startswith("_")}
    assert members - set(dir(MemoryStore)) == set()


async def checkpointer(
    store: MemoryStore,
    saved: dict[str, Checkpoint] | None = None,
    state: EngineState | None = None,
    **kw: float,
) -> tuple[Checkpointer, list[str]]:
    """A checkpointer writing through the whole-stream lock, as a consumer on SQLite does."""
    calls: list[str] = []

    async def before_write() -> None:
        calls.append(f"processor flushed before save #{len(store.saves) + 1}")

    state = state or EngineState("s", "kinesis", "test")
    lock = StreamLock(
        store, EventLog(), initial=Position.trim_horizon(), flush_interval=1, command_interval=1
    )
    cp = Checkpointer(lock, state, before_write, history_interval=kw.get("history", 60.0))
    await store.release(KEY)  # a checkpointer made before this one: its consumer stopped
    await lock.join(KEY, cp)
    cp.load(saved or {})
    return cp, calls


async def test_advance_writes_nothing_and_a_flush_writes_every_moved_shard_at_once() -> None:
    store = MemoryStore()
    cp, calls = await checkpointer(store)
    cp.advance("a", AFTER("1"), 10.0)
    cp.advance("b", AFTER("7"), 11.0)
    cp.advance("a", AFTER("3"), 12.0)  # the last of a shard wins
    assert store.saves == []
    assert cp.get("a") == Checkpoint("a", AFTER("3"), arrival=12.0)
    assert await cp.flush() == 2
    assert len(store.saves) == 1  # one transaction
    saved = await store.load(KEY)
    assert {sid: (c.position, c.arrival) for sid, c in saved.items()} == {
        "a": (AFTER("3"), 12.0),
        "b": (AFTER("7"), 11.0),
    }
    assert calls == ["processor flushed before save #1"]  # output durable first
    assert await cp.flush() == 0 and len(store.saves) == 1  # nothing moved: no write


async def test_a_failed_write_keeps_the_progress_for_the_next_flush() -> None:
    store = MemoryStore()
    cp, _ = await checkpointer(store)
    cp.advance("a", AFTER("5"), 1.0)
    store.fail_next_save = OSError("disk full")
    with pytest.raises(OSError):
        await cp.flush()
    assert await store.load(KEY) == {}
    cp.advance("b", AFTER("9"), 2.0)
    assert await cp.flush() == 2
    assert set(await store.load(KEY)) == {"a", "b"}


async def test_an_explicit_change_replaces_the_shards_pending_progress() -> None:
    store = MemoryStore()
    saved = {"a": Checkpoint("a", AFTER("5"), paused=True)}
    cp, _ = await checkpointer(store, saved)
    cp.advance("a", AFTER("8"), 1.0)
    cp.advance("b", AFTER("2"), 1.0)
    rewind = HistoryEntry("a", "rewind", "me", Position.trim_horizon(), "open")
    await cp.write([CheckpointChange(Checkpoint("a", Position.trim_horizon()), rewind)])
    [save] = store.saves
    assert [(c.checkpoint.shard_id, c.checkpoint.position) for c in save] == [
        ("b", AFTER("2")),
        ("a", Position.trim_horizon()),
    ]
    assert cp.get("a") is not None and cp.get("a").position == Position.trim_horizon()  # type: ignore[union-attr]


async def test_the_rows_show_what_a_write_wrote_and_a_change_moves_the_reading_too() -> None:
    store, state = MemoryStore(), EngineState("s", "kinesis", "test")
    cp, _ = await checkpointer(store, state=state)
    state.update("a", position=AFTER("9"))  # read further than the flush will write
    cp.advance("a", AFTER("8"), 1.0)
    cp.advance("b", AFTER("2"), 1.0)
    before = state.version
    await cp.write([CheckpointChange(Checkpoint("b", AFTER("1")), None)])
    a, b = state.view("a"), state.view("b")
    assert (a.checkpoint, a.position) == (AFTER("8"), AFTER("9"))  # progress: reading goes on
    assert (b.checkpoint, b.position) == (AFTER("1"), AFTER("1"))  # a change: read from there
    assert a.checkpoint_at is not None and a.checkpoint_at == b.checkpoint_at
    assert before < a.version != b.version  # each row re-stamped: the console redraws both
    assert {v.shard_id for v in state.changed_since(before)} == {"a", "b"}


async def test_routine_progress_enters_the_history_at_most_once_per_interval() -> None:
    store = MemoryStore()
    cp, _ = await checkpointer(store, {"a": Checkpoint("a", AFTER("1"))}, history=3600.0)
    for seq in ("2", "3"):
        cp.advance("a", AFTER(seq), 1.0)
        await cp.flush()
    assert await store.history(KEY) == []  # loaded just now: the next row is an hour away
    cp, _ = await checkpointer(store, {"a": Checkpoint("a", AFTER("3"))}, history=0.0)
    cp.advance("a", AFTER("4"), 1.0)
    await cp.flush()
    [row] = await store.history(KEY)
    assert (row.cause, row.old_position, row.new_position) == ("progress", AFTER("3"), AFTER("4"))


async def test_finished_shards_are_known_from_the_store_and_from_writes() -> None:
    store = MemoryStore()
    saved = {
        "a": Checkpoint("a", AFTER("9"), CheckpointStatus.DONE),
        "b": Checkpoint("b", AFTER("1")),
    }
    cp, _ = await checkpointer(store, saved)
    assert cp.finished == {"a"}
    await cp.write([CheckpointChange(Checkpoint("b", AFTER("4"), CheckpointStatus.SKIPPED))])
    await cp.write([CheckpointChange(Checkpoint("a", Position.trim_horizon()))])  # reopened
    assert cp.finished == {"b"}


async def test_a_slow_write_is_never_overtaken_by_a_later_one() -> None:
    """Writes go to the store one at a time, in order: a flush that starts while an earlier
    one waits on a slow disk must not land first, or the older position would win."""
    gate, in_store = asyncio.Event(), asyncio.Event()

    class SlowFirstSave(MemoryStore):
        calls = 0

        async def save(self, stream, changes, finish=None):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls == 1:  # only the first write meets the slow disk
                in_store.set()
                await gate.wait()
            await super().save(stream, changes, finish)

    store = SlowFirstSave()
    cp, _ = await checkpointer(store)
    cp.advance("a", AFTER("1"), 1.0)
    first = asyncio.create_task(cp.flush())
    await in_store.wait()  # the first flush is in the store, waiting on the disk
    cp.advance("a", AFTER("2"), 2.0)
    second = asyncio.create_task(cp.flush())
    for _ in range(20):  # as far as it may go: all the way to the store, were it allowed
        await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(first, second) == [1, 1]
    assert [[c.checkpoint.position for c in save] for save in store.saves] == [
        [AFTER("1")],
        [AFTER("2")],
    ]
    assert (await store.load(KEY))["a"].position == AFTER("2")


# -- where a worker resumes ------------------------------------------------------------------


def rec(seq: str, sub: int | None = None) -> Record:
    return Record(seq, "k", b"", 0.0, sub)


@pytest.mark.parametrize(
    ("position", "iterator_at", "drop"),
    [
        (Position.trim_horizon(), Position.trim_horizon(), None),
        (AFTER("42"), AFTER("42"), None),
        # Inside a KPL aggregate: read the aggregate again, drop its user records up to 2.
        (AFTER("42", 2), Position.at_sequence("42"), ("42", 2)),
        (Position.at_sequence("42", 2), Position.at_sequence("42", 2), None),
        (Position.at_timestamp(5.0), Position.at_timestamp(5.0), None),
    ],
)
def test_fetch_plan(
    position: Position, iterator_at: Position, drop: tuple[str, int] | None
) -> None:
    assert fetch_plan(position) == (iterator_at, drop)


def test_drop_through_drops_the_aggregates_records_already_processed() -> None:
    batch = [rec("42", 0), rec("42", 1), rec("42", 2), rec("42", 3), rec("43")]
    assert [(r.sequence_number, r.sub_sequence_number) for r in drop_through(batch, "42", 2)] == [
        ("42", 3),
        ("43", None),
    ]
    assert drop_through(batch, "41", 0) == batch  # nothing of it in this batch


async def test_progress_being_written_is_still_the_truth_while_the_store_takes_it() -> None:
    """A change planned, a page opened, during a flush's write: they see the progress in
    flight, not the checkpoint before it (the flush emptied its pending progress already)."""
    gate, in_store = asyncio.Event(), asyncio.Event()

    class SlowSave(MemoryStore):
        async def save(self, stream, changes, finish=None):  # type: ignore[no-untyped-def]
            in_store.set()
            await gate.wait()
            await super().save(stream, changes, finish)

    store = SlowSave()
    cp, _ = await checkpointer(store, {"a": Checkpoint("a", AFTER("1"))})
    cp.advance("a", AFTER("5"), 5.0)
    flush = asyncio.create_task(cp.flush())
    await in_store.wait()
    got = cp.get("a")
    assert got is not None and got.position == AFTER("5")
    assert cp.all()["a"].position == AFTER("5")
    cp.advance("a", AFTER("6"), 6.0)  # newer progress meanwhile wins
    assert cp.get("a").position == AFTER("6")  # type: ignore[union-attr]
    gate.set()
    assert await flush == 1
    assert cp.get("a").position == AFTER("6")  # type: ignore[union-attr]
    await cp.flush()
    assert (await store.load(KEY))["a"].position == AFTER("6")
    # A shard lost to another worker while its progress is written: not ours any more.
    gate.clear()
    in_store.clear()
    cp.advance("a", AFTER("7"), 7.0)
    flush = asyncio.create_task(cp.flush())
    await in_store.wait()
    cp.forget("a")
    assert cp.get("a").position == AFTER("6")  # type: ignore[union-attr]
    gate.set()
    await flush
