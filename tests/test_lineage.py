from console.engine.consume.discovery import resharding_text
from console.engine.lineage import Lineage
from console.engine.ownership.lock import initial_checkpoints
from console.model import CheckpointStatus, Position, Shard


def tree() -> Lineage:
    # 0 split into 4, 5; 2 and 3 merged into 6; 1 untouched; 7 is a child of gone shard 9.
    return Lineage.build(
        [
            Shard("s0", ending_sequence_number="9"),
            Shard("s1"),
            Shard("s2", ending_sequence_number="9"),
            Shard("s3", ending_sequence_number="9"),
            Shard("s4", parent_id="s0"),
            Shard("s5", parent_id="s0"),
            Shard("s6", parent_id="s2", adjacent_parent_id="s3"),
            Shard("s7", parent_id="s9"),
        ]
    )


def test_children_wait_for_every_parent() -> None:
    t = tree()
    assert set(t.ready(finished=set())) == {"s0", "s1", "s2", "s3", "s7"}
    assert set(t.ready(finished={"s0"})) == {"s1", "s2", "s3", "s4", "s5", "s7"}
    # A merge needs both parents done.
    assert "s6" not in t.ready(finished={"s2"})
    assert "s6" in t.ready(finished={"s2", "s3"})


def test_a_parent_that_left_the_stream_does_not_block() -> None:
    t = tree()
    assert t.gone_parents("s7") == ("s9",)
    assert t.is_ready("s7", finished=set())


def test_descendants_and_tree_order() -> None:
    t = tree()
    assert t.descendants("s0") == ["s4", "s5"]
    assert t.descendants("s3") == ["s6"]
    walk = list(t.walk())
    assert [sid for sid, _ in walk] == ["s0", "s4", "s5", "s1", "s2", "s6", "s3", "s7"]
    assert dict(walk)["s4"] == 1
    # The merged child appears once, under its first parent.
    assert [sid for sid, _ in walk].count("s6") == 1


def test_a_merge_below_a_split_is_one_descendant() -> None:
    # 0 split into 1 and 2, which merged again into 3: 3 is reached twice, listed once.
    t = Lineage.build(
        [
            Shard("s0", ending_sequence_number="9"),
            Shard("s1", parent_id="s0", ending_sequence_number="9"),
            Shard("s2", parent_id="s0", ending_sequence_number="9"),
            Shard("s3", parent_id="s1", adjacent_parent_id="s2"),
            Shard("s4", parent_id="s3"),
        ]
    )
    assert t.descendants("s0") == ["s1", "s2", "s3", "s4"]


def test_ten_thousand_shards_build() -> None:
    shards = [Shard(f"r{i:05d}", ending_sequence_number="1") for i in range(5000)]
    shards += [Shard(f"c{i:05d}", parent_id=f"r{i:05d}") for i in range(5000)]
    t = Lineage.build(shards)
    assert len(t) == 10000
    assert len(t.ready(finished=set())) == 5000
    assert len(list(t.walk())) == 10000


# -- what discovery decides, pure -------------------------------------------------------------


def test_resharding_is_told_in_one_line() -> None:
    kids = [Shard("s4", parent_id="s0"), Shard("s6", parent_id="s2", adjacent_parent_id="s3")]
    assert (
        resharding_text(kids, ["s0"]) == "resharding: new s4 (from s0), s6 (from s2+s3); closed s0"
    )
    assert resharding_text([], ["s1"]) == "resharding: closed s1"
    assert resharding_text([], []) is None


def test_the_first_start_gives_every_shard_a_checkpoint() -> None:
    shards = [Shard("open"), Shard("closed", ending_sequence_number="9")]
    at_start = initial_checkpoints(shards, Position.trim_horizon(), now=100.0)
    assert [
        (c.checkpoint.shard_id, c.checkpoint.position, c.checkpoint.status) for c in at_start
    ] == [
        ("open", Position.trim_horizon(), CheckpointStatus.OPEN),
        ("closed", Position.trim_horizon(), CheckpointStatus.OPEN),
    ]
    # LATEST is stored as "from this instant"; closed shards are not read at all.
    latest = initial_checkpoints(shards, Position.latest(), now=100.0)
    assert [(c.checkpoint.position, c.checkpoint.status) for c in latest] == [
        (Position.at_timestamp(100.0), CheckpointStatus.OPEN),
        (Position.at_timestamp(100.0), CheckpointStatus.DONE),
    ]
    assert all(c.history is not None and c.history.cause == "start" for c in latest)
