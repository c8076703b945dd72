"""The records browser (console/ui/screens/records.py) with Textual's pilot over a live consumer
reading the embedded endpoint; the shard's read budget it shares."""

from __future__ import annotations

from typing import Any

from console.engine.read.pacing import Pacer
from console.model import Position
from console.processors.base import RecordFailed
from console.ui.screens.detail import ShardDetailScreen
from console.ui.screens.records import RecordsScreen
from tests.conftest import wait_for
from tests.test_ui_pilot import S0, console


async def open_records(live: Any, shard: str) -> RecordsScreen:
    pilot, app = live.pilot, live.app
    rows = [r.shard_id for r in app.dashboard.table.rows]
    for _ in range(rows.index(shard)):
        await pilot.press("down")
    await pilot.press("enter")
    assert isinstance(app.screen, ShardDetailScreen) and app.screen.shard_id == shard
    await pilot.press("o")
    screen = app.screen
    assert isinstance(screen, RecordsScreen)
    return screen


async def test_pages_from_the_start_back_and_forth_and_search(demo_endpoint: Any, db: str) -> None:
    async with console(demo_endpoint, db, records=140) as live:
        pilot = live.pilot
        mine = [r.data.decode() for sid, r in live.processor.seen if sid == S0]
        assert len(mine) > 50  # more than a page
        checkpoint = live.consumer.checkpointer.get(S0)
        screen = await open_records(live, S0)
        # At the checkpoint: everything was processed, so nothing after it yet.
        await wait_for(lambda: screen.page is not None, what="the first page")
        assert screen.page is not None and screen.page.records == ()
        assert screen.page.start == live.consumer.checkpointer.get(S0).position  # type: ignore[union-attr]

        await pilot.press("f", *"trim_horizon", "enter")
        await wait_for(lambda: screen.page is not None and len(screen.page.records) == 50)
        first = screen.page
        assert [r.data.decode() for r in first.records] == mine[:50]
        await pilot.press("n")
        await wait_for(lambda: screen.page is not first and screen.page is not None)
        assert [r.data.decode() for r in screen.page.records] == mine[50:100]
        await pilot.press("b")
        await wait_for(lambda: screen.page is not None and screen.page.start == first.start)
        assert [r.data.decode() for r in screen.page.records] == mine[:50]

        # Search: a record on the next page; the cursor lands on it.
        target = mine[-1]  # on the second page

        def under_cursor() -> str | None:
            page, row = screen.page, screen.query_one("DataTable").cursor_row  # type: ignore[attr-defined]
            if page is None or not 0 <= row < len(page.records):
                return None
            return page.records[row].data.decode()

        await pilot.press("slash", *f"^{target}$", "enter")
        await wait_for(lambda: under_cursor() == target, what="the cursor on the match")
        await wait_for(
            lambda: str(screen.query_one("#records-detail").render()).endswith(f"\n{target}"),
            what="the match shown in full",
        )
        # A search that finds nothing says so (the text as typed), and the browser stays.
        await pilot.press("slash", *"[/]x", "enter")
        await wait_for(lambda: any("[/]x" in str(n.message) for n in live.app._notifications))
        assert isinstance(live.app.screen, RecordsScreen)
        # Reading never moved the checkpoint.
        now = live.consumer.checkpointer.get(S0)
        assert checkpoint is not None and now is not None
        assert now.position == checkpoint.position
        await pilot.press("escape")
        assert isinstance(live.app.screen, ShardDetailScreen)


async def test_a_failing_shard_opens_at_the_record_it_fails_on(demo_endpoint: Any, db: str) -> None:
    async with console(demo_endpoint, db) as live:
        processor, consumer = live.processor, live.consumer

        def fail(records: list[Any], ctx: Any) -> None:
            for r in records:
                if r.data == b"poison":
                    raise RecordFailed(r, "cannot parse 'poison'")

        processor.fail = fail
        demo_endpoint.call(demo_endpoint.kinesis.put, "s", "k1", b"before")
        demo_endpoint.call(demo_endpoint.kinesis.put, "s", "k1", b"poison")
        demo_endpoint.call(demo_endpoint.kinesis.put, "s", "k1", b"after")
        await wait_for(
            lambda: any(v.status.value == "failing" for v in consumer.state.shards.values()),
            what="the shard failing",
        )
        shard = next(s for s, v in consumer.state.shards.items() if v.status.value == "failing")
        before = consumer.checkpointer.get(shard)
        screen = await open_records(live, shard)
        await wait_for(lambda: screen.page is not None, what="the page")
        assert screen.page is not None
        assert [r.data for r in screen.page.records] == [b"poison", b"after"]
        title = str(screen.query_one("#records-title").render())
        assert "the record the processor fails on: processor raised RecordFailed" in title
        assert "cannot parse 'poison'" in title
        after = consumer.checkpointer.get(shard)
        assert before is not None and after is not None
        assert after.position == before.position  # reading moved nothing


def test_the_browser_and_the_worker_share_one_budget() -> None:
    pacer = Pacer(0.2)
    waits = [pacer.reserve() for _ in range(3)]
    assert waits[0] == 0 and 0.19 < waits[1] <= 0.2 and 0.39 < waits[2] <= 0.4


async def test_the_worker_reads_on_the_shards_shared_pacer(demo_endpoint: Any, db: str) -> None:
    async with console(demo_endpoint, db) as live:
        runner = live.consumer.shards
        await wait_for(lambda: S0 in runner._workers, what="a worker on S0")
        worker, _ = runner._workers[S0]
        assert worker.pacer is runner.pacers[S0]
        before = runner.pacers[S0].next_at
        await live.consumer.browse(S0, Position.trim_horizon())  # the browser's read...
        assert runner.pacers[S0].next_at > before  # ...took its turn from the same budget
