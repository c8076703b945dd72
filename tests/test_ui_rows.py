"""Which rows the shard tree shows: finished subtrees fold, and so do the long lines of finished
shards a DynamoDB table's roll-overs leave above each live shard."""

from console.engine.lineage import Lineage
from console.engine.state import ShardView
from console.model import Shard, ShardStatus
from console.ui.widgets.shard_table import build_rows

DONE, ACTIVE = ShardStatus.DONE, ShardStatus.ACTIVE


def chains(length: int, partitions: int, *, live: bool = True) -> tuple[Lineage, dict]:
    shards, views = [], {}
    for p in range(partitions):
        for step in range(length):
            sid = f"s{p}-{step:04d}"
            parent = f"s{p}-{step - 1:04d}" if step else None
            shards.append(Shard(sid, parent_id=parent))
            last = step == length - 1
            views[sid] = ShardView(sid, status=ACTIVE if last and live else DONE)
    return Lineage.build(shards), views


def test_a_line_of_finished_shards_folds_into_its_first_above_the_live_one() -> None:
    lineage, views = chains(1_000, 3)
    rows = build_rows(lineage, views)
    assert [(r.shard_id, r.depth, r.folded, r.chain) for r in rows] == [
        ("s0-0000", 0, 998, True),
        ("s0-0999", 1, 0, False),
        ("s1-0000", 0, 998, True),
        ("s1-0999", 1, 0, False),
        ("s2-0000", 0, 998, True),
        ("s2-0999", 1, 0, False),
    ]


def test_a_wholly_finished_line_folds_as_a_subtree() -> None:
    lineage, views = chains(50, 1, live=False)
    rows = build_rows(lineage, views)
    assert [(r.shard_id, r.folded, r.chain) for r in rows] == [("s0-0000", 49, False)]


def test_expanding_the_line_shows_every_step_and_a_branch_below_keeps_its_depth() -> None:
    lineage, views = chains(5, 1)
    # The live end splits into two children: they sit under it, one level down.
    extra = [Shard("kid-a", parent_id="s0-0004"), Shard("kid-b", parent_id="s0-0004")]
    lineage = Lineage.build([*lineage.shards.values(), *extra])
    views.update({s.shard_id: ShardView(s.shard_id, status=ShardStatus.WAITING) for s in extra})
    rows = build_rows(lineage, views)
    assert [(r.shard_id, r.depth, r.folded) for r in rows] == [
        ("s0-0000", 0, 3),
        ("s0-0004", 1, 0),
        ("kid-a", 2, 0),
        ("kid-b", 2, 0),
    ]
    opened = build_rows(lineage, views, expanded={f"s0-{i:04d}" for i in range(4)})
    assert [r.shard_id for r in opened][:5] == [f"s0-{i:04d}" for i in range(5)]
    assert [r.depth for r in opened] == [0, 1, 2, 3, 4, 5, 5]


def test_a_short_step_is_shown_as_it_is() -> None:
    lineage, views = chains(2, 1)
    assert [(r.shard_id, r.folded) for r in build_rows(lineage, views)] == [
        ("s0-0000", 0),
        ("s0-0001", 0),
    ]


def test_a_checkpoint_with_its_sub_sequence_fits_its_column() -> None:
    """A KCL checkpoint carries a sub-sequence number (0 for a plain record): the column keeps
    the sequence number's tail and the sub-sequence, within its width."""
    from console.model import Position
    from console.ui.format import position_text

    seq = "49680644384380684377501773527828937201359348687263760386"
    text = position_text(Position.after_sequence(seq, 0), 14)
    assert len(text) == 14 and text.endswith("760386/0") and text.startswith("…")
    assert position_text(Position.after_sequence(seq), 14) == "…" + seq[-13:]
