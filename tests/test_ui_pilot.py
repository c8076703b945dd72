"""The console's keys, driven with Textual's pilot over a live consumer on the demo endpoint."""

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from console.checkpoints.sqlite import SqliteStore
from console.engine.changes.plan import Action, ControlRequest
from console.engine.consume.consumer import Consumer
from console.model import CheckpointStatus, ShardStatus
from console.sources.kinesis import KinesisSource
from console.ui.app import ShardConsoleApp
from console.ui.screens.detail import ShardDetailScreen
from console.ui.screens.dialogs import Dialog, ReplayDialog, RewindDialog, SkipDialog
from console.ui.screens.help import HelpScreen
from tests.conftest import FAST, Collect, aws, wait_for

SIZE = (140, 40)
S0 = "shardId-000000000000"
S1 = "shardId-000000000001"


class RecordingApp(ShardConsoleApp):
    """The console, keeping every notification it shows (what the operator was told)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.told: list[str] = []

    def notify(self, message: str, **kwargs: Any) -> None:  # type: ignore[override]
        self.told.append(str(message))
        super().notify(message, **kwargs)


@dataclass
class Live:
    pilot: Any
    app: RecordingApp
    consumer: Consumer
    processor: Collect
    store: SqliteStore


@asynccontextmanager
async def console(
    endpoint: Any,
    db: str,
    *,
    shards: int = 2,
    records: int = 20,
    app_options: dict[str, Any] | None = None,
    actor: str | None = "tester (tui)",
    **options: Any,
) -> AsyncIterator[Live]:
    endpoint.call(endpoint.kinesis.create_stream, "s", shards)
    for i in range(records):
        endpoint.call(endpoint.kinesis.put, "s", f"k{i % 7}", f"r{i}".encode())
    processor = Collect()
    store = await SqliteStore.open(db)
    # Pilot waits, after each key, for the process to go idle (up to a second): an engine
    # polling every 50 ms never does, so the console's tests poll at a human pace.
    options = {"idle_interval": 0.5, **options}
    app_options = app_options or {}
    async with KinesisSource("s", aws(endpoint.url)) as source:
        consumer = Consumer(source, store, processor, dataclasses.replace(FAST, **options))
        await consumer.start()
        app = RecordingApp(consumer, refresh_rate=4, actor=actor, **app_options)
        try:
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(lambda: len(processor.seen) == records)
                # ... and the worker has taken its progress (the processor returns first).
                await wait_for(lambda: consumer.state.records_total == records)
                # Until the console has drawn a snapshot taken after the last record.
                read = consumer.state.version
                await wait_for(lambda: app._seen_version >= read, what="the console's redraw")
                yield Live(pilot, app, consumer, processor, store)
        finally:
            await consumer.stop()
            await store.close()


async def type_command(pilot: Any, text: str) -> None:
    """ ":" then the text (set at once: typing it key by key tests Textual, not us), Enter."""
    await pilot.press("colon")
    pilot.app.dashboard.query_one("#command").value = text
    await pilot.press("enter")


async def confirm(pilot: Any) -> None:
    """From the focused No, Tab to the verb and press it, as an operator would."""
    assert isinstance(pilot.app.screen, Dialog)
    assert pilot.app.screen.focused is not None and pilot.app.screen.focused.id == "no"
    dialog = pilot.app.screen
    await wait_for(lambda: not dialog.query_one("#yes").disabled, timeout=5)
    await pilot.press("tab")
    assert dialog.focused is not None and dialog.focused.id == "yes", dialog.focused
    await pilot.press("enter")
    await wait_for(lambda: pilot.app.screen is not dialog, timeout=5, what="the dialog to close")


async def test_pause_and_resume_ask_first_and_no_is_the_default(demo_endpoint, db) -> None:
    async with console(demo_endpoint, db) as live:
        pilot, app, consumer, store = live.pilot, live.app, live.consumer, live.store
        assert app.dashboard.table.selected == S0
        await pilot.press("p")
        assert isinstance(app.screen, Dialog)
        await pilot.press("enter")  # the default: No
        assert not isinstance(app.screen, Dialog)
        assert consumer.state.shards[S0].status is ShardStatus.ACTIVE
        await pilot.press("p")
        await confirm(pilot)
        await wait_for(lambda: consumer.state.shards[S0].status is ShardStatus.PAUSED)
        assert (await store.load(consumer.key))[S0].paused
        await pilot.press("p")
        await confirm(pilot)
        await wait_for(lambda: consumer.state.shards[S0].status is ShardStatus.ACTIVE)
        actors = {
            h.actor for h in await store.history(consumer.key, S0) if h.cause in ("pause", "resume")
        }
        assert actors == {"tester (tui)"}


async def test_rewind_to_the_start_replays_the_shard(demo_endpoint, db) -> None:
    async with console(demo_endpoint, db) as live:
        pilot, app, consumer, processor, store = (
            live.pilot,
            live.app,
            live.consumer,
            live.processor,
            live.store,
        )
        on_s0 = sum(1 for sid, _ in processor.seen if sid == S0)
        await pilot.press("r")
        assert isinstance(app.screen, RewindDialog)
        preview = app.screen.query_one("#preview")
        await wait_for(lambda: "to the start" in str(preview.render()), timeout=5)
        await confirm(pilot)
        await wait_for(
            lambda: len(processor.seen) == 20 + on_s0,
            what=f"the replay; events: {[e.message for e in consumer.events.since(0)][-5:]}",
        )
        assert any(h.cause == "rewind" for h in await store.history(consumer.key, S0))


async def test_rewind_to_a_checkpoint_id_typed_on_the_command_line(demo_endpoint, db) -> None:
    async with console(demo_endpoint, db) as live:
        pilot, app, consumer, store = live.pilot, live.app, live.consumer, live.store
        (start,) = [h for h in await store.history(consumer.key, S0) if h.cause == "start"]
        await type_command(pilot, f"rewind {S1} checkpoint:{start.id}")  # S0's, not S1's
        await wait_for(lambda: any("is not a checkpoint of" in t for t in app.told), timeout=5)
        assert not isinstance(app.screen, Dialog)
        assert not [h for h in await store.history(consumer.key) if h.cause == "rewind"]
        await type_command(pilot, f"rewind {S0} checkpoint:{start.id}")
        await wait_for(lambda: isinstance(app.screen, Dialog), timeout=5, what="the dialog")
        await confirm(pilot)
        rewinds = [h for h in await store.history(consumer.key, S0) if h.cause == "rewind"]
        assert rewinds and rewinds[0].new_position == start.new_position


async def test_rewind_to_a_time_through_the_dialog(demo_endpoint, db) -> None:
    async with console(demo_endpoint, db) as live:
        pilot, app, consumer, processor, store = (
            live.pilot,
            live.app,
            live.consumer,
            live.processor,
            live.store,
        )
        await pilot.press("r")
        dialog = app.screen
        dialog.query_one("#time").value = True
        await pilot.pause()
        assert dialog.query_one("#time-input").display
        assert not dialog.query_one("#sequence-input").display
        dialog.query_one("#time-input").value = "in a while"
        await wait_for(lambda: dialog.query_one("#yes").disabled, timeout=5)
        assert "not a time" in str(dialog.query_one("#preview").render())
        on_s0 = sum(1 for sid, _ in processor.seen if sid == S0)
        dialog.query_one("#time-input").value = "-1h"
        await confirm(pilot)
        # An hour back is before every record: the shard's records once more, exactly.
        await wait_for(lambda: len(processor.seen) >= 20 + on_s0)
        await wait_for(lambda: consumer.state.shards[S0].lag_ms == 0)
        assert len(processor.seen) == 20 + on_s0
        assert {sid for sid, _ in processor.seen[20:]} == {S0}
        [rewind] = [h for h in await store.history(consumer.key, S0) if h.cause == "rewind"]
        assert rewind.new_position is not None and rewind.new_position.timestamp is not None
        assert abs(rewind.new_position.timestamp - (time.time() - 3600)) < 60


async def test_skip_marks_done_and_undo_restores(demo_endpoint, db) -> None:
    async with console(demo_endpoint, db) as live:
        pilot, app, consumer, store = live.pilot, live.app, live.consumer, live.store
        await pilot.press("s")
        assert isinstance(app.screen, SkipDialog)
        assert app.screen.query_one("#next-record").disabled  # nothing is failing
        app.screen.query_one("#done").value = True
        await pilot.pause()
        await confirm(pilot)
        await wait_for(lambda: consumer.state.shards[S0].status is ShardStatus.SKIPPED)
        await pilot.press("u")
        await confirm(pilot)
        await wait_for(lambda: consumer.state.shards[S0].status is ShardStatus.ACTIVE)
        assert (await store.load(consumer.key))[S0].status is CheckpointStatus.OPEN


async def test_filter_detail_and_help(demo_endpoint, db) -> None:
    async with console(demo_endpoint, db) as live:
        pilot, app = live.pilot, live.app
        table = app.dashboard.table
        assert [r.shard_id for r in table.rows] == [S0, S1]
        await pilot.press("slash", *"001", "enter")
        assert [r.shard_id for r in table.rows] == [S1]
        await pilot.press("enter")
        assert isinstance(app.screen, ShardDetailScreen) and app.screen.shard_id == S1
        await pilot.press("escape")
        assert app.screen is app.dashboard
        await pilot.press("slash", "escape")  # esc in an empty-ish filter clears it
        await pilot.press("slash")
        app.dashboard.query_one("#filter").value = ""
        await pilot.press("enter")
        assert len(table.rows) == 2
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert app.screen is app.dashboard


async def test_command_line_and_palette(demo_endpoint, db) -> None:
    async with console(demo_endpoint, db) as live:
        pilot, app, consumer = live.pilot, live.app, live.consumer
        await type_command(pilot, "pause shardId-000000000001")
        await confirm(pilot)
        await wait_for(lambda: consumer.state.shards[S1].status is ShardStatus.PAUSED)
        await type_command(pilot, "rewind nonsense")  # one word: the selected shard
        assert not isinstance(app.screen, Dialog)  # refused before any dialog
        assert any("'nonsense' is not a target" in t for t in app.told), app.told
        from textual.command import CommandList, CommandPalette

        await pilot.press("ctrl+p")
        await wait_for(lambda: isinstance(app.screen, CommandPalette), timeout=5)
        await pilot.press(*"replay every")
        hits = app.screen.query_one(CommandList)
        await wait_for(lambda: hits.option_count == 1, timeout=5, what="the one hit")
        await pilot.press("down", "enter")  # the only hit: chosen and run
        await wait_for(lambda: isinstance(app.screen, ReplayDialog), timeout=5)


async def test_replay_needs_the_stream_name_typed(demo_endpoint, db) -> None:
    async with console(demo_endpoint, db) as live:
        pilot, app, consumer, processor, store = (
            live.pilot,
            live.app,
            live.consumer,
            live.processor,
            live.store,
        )
        await pilot.press("R")
        dialog = app.screen
        assert isinstance(dialog, ReplayDialog)
        dialog.query_one("#time-input").value = "-1h"
        preview = dialog.query_one("#preview")
        await wait_for(lambda: "Type the stream's name" in str(preview.render()), timeout=5)
        assert dialog.query_one("#yes").disabled  # a valid plan, and still no way to apply it
        dialog.query_one("#confirm-input").value = "s"
        await pilot.pause()
        dialog.query_one("#no").focus()
        await confirm(pilot)
        await wait_for(lambda: len(processor.seen) >= 40)
        causes = [h.cause for h in await store.history(consumer.key)]
        assert causes.count("replay") == 2


async def test_read_only_hides_and_refuses_every_change(demo_endpoint, db) -> None:
    from console.ui.actions import ACTIONS

    changes = {a.id for a in ACTIONS if a.changes}
    assert changes == {"rewind", "skip", "pause", "resume", "undo", "replay"}
    async with console(demo_endpoint, db, read_only=True) as live:
        pilot, app, consumer, store = live.pilot, live.app, live.consumer, live.store
        for key in ("r", "s", "p", "u", "R"):
            await pilot.press(key)
            assert app.screen is app.dashboard, key
        shown = {b.binding.action for b in app.screen.active_bindings.values() if b.enabled}
        assert shown & changes == set()
        assert {"quit", "help", "filter", "command"} <= shown
        # The command line refuses each change by name, saying why.
        for verb in ("rewind -15m", "skip latest", "pause", "resume", "undo", "replay -1h"):
            app.told.clear()
            await type_command(pilot, verb)
            assert app.screen is app.dashboard, verb
            assert app.told == ["read-only: changes are refused"], (verb, app.told)
        # The palette offers none of them, and the help lists none.
        from console.ui.app import ConsoleCommands

        provider = ConsoleCommands(app.dashboard)
        titles = [title for title, _, _ in provider._commands()]
        assert titles and not [t for t in titles if t.split()[0].lower() in changes]
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert set(app.screen.keys) & changes == set()
        await pilot.press("escape")
        assert "READ-ONLY" in str(app.dashboard.header.render())
        result = await consumer.control(ControlRequest(Action.PAUSE, S0))
        assert not result.ok and "read-only" in result.message
        assert {h.cause for h in await store.history(consumer.key)} == {"start"}


async def test_quit_finishes_and_flushes_checkpoints(demo_endpoint, db) -> None:
    demo_endpoint.call(demo_endpoint.kinesis.create_stream, "s", 2)
    for i in range(30):
        demo_endpoint.call(demo_endpoint.kinesis.put, "s", f"k{i}", f"r{i}".encode())
    processor = Collect()
    store = await SqliteStore.open(db)
    async with KinesisSource("s", aws(demo_endpoint.url)) as source:
        # A flush interval of a minute: only the shutdown can write these checkpoints.
        options = dataclasses.replace(FAST, flush_interval=60, idle_interval=0.5)
        consumer = Consumer(source, store, processor, options)
        await consumer.start()
        app = ShardConsoleApp(consumer, refresh_rate=4)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(lambda: len(processor.seen) == 30)
            await pilot.press("q")
            await asyncio.wait_for(consumer.stopped.wait(), 5)
            await wait_for(lambda: app.return_code is not None, timeout=5, what="the exit")
        assert app.return_code == 0
        saved = await store.load(consumer.key)
    await store.close()
    last = {sid: r.sequence_number for sid, r in processor.seen}
    for sid, seq in last.items():
        assert saved[sid].position.sequence_number == seq


async def test_a_dynamodb_table_s_rolled_over_shards_fold_and_space_opens_them(
    demo_endpoint, db
) -> None:
    from console.model import ChangeRecord
    from console.sources.dynamodb import DynamoDBSource

    ddb = demo_endpoint.dynamodb
    table = demo_endpoint.call(ddb.create_table, "orders", ("pk",), 1)
    for step in range(4):
        for i in range(3):
            demo_endpoint.call(
                ddb.put_item, "orders", {"pk": {"S": f"k{i}"}, "n": {"N": str(step)}}
            )
        if step < 3:
            demo_endpoint.call(ddb.roll_over, "orders")
    processor = Collect()
    store = await SqliteStore.open(db)
    async with DynamoDBSource(table.stream_arn, aws(demo_endpoint.url)) as source:
        consumer = Consumer(source, store, processor, dataclasses.replace(FAST, idle_interval=0.5))
        await consumer.start()
        app = ShardConsoleApp(consumer, refresh_rate=4, actor="tester (tui)")
        try:
            async with app.run_test(size=SIZE) as pilot:
                await wait_for(lambda: len(processor.seen) == 12)
                assert all(isinstance(r, ChangeRecord) for _, r in processor.seen)
                table_widget = app.dashboard.table
                await wait_for(lambda: len(table_widget.rows) == 2, what="the line to fold")
                head, live = table_widget.rows
                assert head.chain and head.folded == 2 and live.depth == 1
                table_widget.focus()
                table_widget.cursor = 0
                await pilot.press("space")
                assert len(table_widget.rows) == 4
                assert [r.depth for r in table_widget.rows] == [0, 1, 2, 3]
        finally:
            await consumer.stop()
            await store.close()


async def test_every_colon_command_does_what_its_key_does(demo_endpoint, db) -> None:
    async with console(demo_endpoint, db) as live:
        pilot, app, consumer, store = live.pilot, live.app, live.consumer, live.store

        async def run(text: str) -> None:
            await type_command(pilot, text)
            await wait_for(lambda: isinstance(app.screen, Dialog), timeout=5, what=text)
            await confirm(pilot)

        def history(sid: str) -> Any:
            return store.history(consumer.key, sid)

        await run(f"pause {S1}")
        await wait_for(lambda: consumer.state.shards[S1].status is ShardStatus.PAUSED)
        await run(f"resume {S1}")
        await wait_for(lambda: consumer.state.shards[S1].status is ShardStatus.ACTIVE)
        await run(f"skip {S0} latest")
        await wait_for(lambda: consumer.state.shards[S0].position.kind.value == "AT_TIMESTAMP")
        [skip] = [h for h in await history(S0) if h.cause == "skip"]
        assert abs(skip.new_position.timestamp - time.time()) < 60
        await run(f"rewind {S0} -15m")
        await wait_for(lambda: len([h for h in app.told if h.startswith("rewind")]) == 1)
        [rewind] = [h for h in await history(S0) if h.cause == "rewind"]
        assert abs(rewind.new_position.timestamp - (time.time() - 900)) < 60
        await run(f"undo {rewind.command_id}")
        await wait_for(lambda: any(t.startswith("undo change") for t in app.told))
        [undo] = [h for h in await history(S0) if h.cause == "undo"]
        assert undo.note == f"undo of change #{rewind.command_id}"
        assert undo.new_position == skip.new_position  # back where the rewind found it
        await type_command(pilot, "replay -1h")
        await wait_for(lambda: isinstance(app.screen, ReplayDialog), timeout=5)
        await wait_for(lambda: app.screen.query_one("#time-input").value == "-1h", timeout=5)
        await pilot.press("escape")
        await type_command(pilot, "filter 001")
        assert [r.shard_id for r in app.dashboard.table.rows] == [S1]
        await type_command(pilot, "theme shard-light")
        assert app.theme == "shard-light"
        await type_command(pilot, "frobnicate")
        assert any(t.startswith("unknown command 'frobnicate'") for t in app.told)


async def test_keys_remapped_in_the_config_file_drive_the_bindings(tmp_path) -> None:
    from console.settings import load_settings
    from tests.ui_data import frozen_app

    config = tmp_path / "config.toml"
    config.write_text('[keys]\nrewind = "ctrl+r"\nhelp = "f1"\n')
    settings, _ = load_settings({}, env={}, config=str(config))
    app = frozen_app(keymap=settings.keys)
    async with app.run_test(size=SIZE) as pilot:  # type: ignore[attr-defined]
        await pilot.press("j", "r")  # the old key does nothing now
        assert app.screen is app.dashboard  # type: ignore[attr-defined]
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, RewindDialog)  # type: ignore[attr-defined]
        await pilot.press("escape", "f1")
        help_screen = app.screen  # type: ignore[attr-defined]
        assert isinstance(help_screen, HelpScreen)
        assert help_screen.keys["rewind"] == "^r" and help_screen.keys["help"] == "f1"


def test_keys_that_name_no_binding_or_take_anothers_key_are_refused() -> None:
    from console.errors import UsageError
    from console.ui.keymap import check_keymap

    check_keymap({"rewind": "ctrl+r", "help": "f1", "records-next": "right"})
    with pytest.raises(UsageError, match=r"unknown binding id.*rewnd"):
        check_keymap({"rewnd": "ctrl+r"})
    # "q" is quit's: giving it to rewind would lose one of them.
    with pytest.raises(UsageError, match="q would be both rewind and quit"):
        check_keymap({"rewind": "q"})
    with pytest.raises(UsageError, match="j would be both pause and down in the shard table"):
        check_keymap({"pause": "p,j"})
    # Swapped, they are each other's old key: no conflict.
    check_keymap({"rewind": "s", "skip": "r"})
    # Where both are active: n pages on in the records browser, where pause is a key too.
    with pytest.raises(UsageError, match="n would be both pause and records-next in the records"):
        check_keymap({"pause": "n"})
    check_keymap({"pause": "n", "records-next": "right"})


async def test_a_theme_in_the_users_themes_folder_is_offered_and_applies() -> None:
    from console.config import config_dir
    from console.ui.theme import available_themes, check_theme
    from tests.conftest import run_cli
    from tests.ui_data import frozen_app

    folder = config_dir() / "themes"
    folder.mkdir(parents=True, exist_ok=True)
    theme = folder / "harbour.toml"
    theme.write_text('name = "harbour"\nprimary = "#1f6feb"\ndark = true\n')
    try:
        check_theme("harbour")
        assert "harbour" in available_themes()
        assert "harbour" in run_cli("info").stdout
        app = frozen_app(theme="harbour")
        async with app.run_test(size=SIZE):  # type: ignore[attr-defined]
            assert app.theme == "harbour"  # type: ignore[attr-defined]
            assert app.current_theme.primary == "#1f6feb"  # type: ignore[attr-defined]
    finally:
        theme.unlink()


async def test_a_change_from_the_console_is_recorded_as_the_user_at_the_host(
    demo_endpoint, db
) -> None:
    import getpass
    import socket

    async with console(demo_endpoint, db, actor=None) as live:
        pilot, consumer, store = live.pilot, live.consumer, live.store
        await pilot.press("p")
        await confirm(pilot)
        await wait_for(lambda: consumer.state.shards[S0].status is ShardStatus.PAUSED)
        [pause] = [h for h in await store.history(consumer.key, S0) if h.cause == "pause"]
        assert pause.actor == f"{getpass.getuser()}@{socket.gethostname()} (tui)"


async def test_attached_every_change_needs_the_stream_name_and_shows_the_findings() -> None:
    """Attached to a consumer it does not run, the console asks for the stream's name before any
    change (not only a replay), and says what is wrong above the shard tree."""
    from console.ui.screens.dialogs import ConfirmDialog, RewindDialog
    from tests.ui_data import frozen_app

    app = frozen_app(attach=True)
    async with app.run_test(size=(140, 36)) as pilot:
        await pilot.pause()
        findings = app.dashboard.findings
        assert findings.has_class("shown") and findings.has_class("severe")
        text = str(findings.render())
        stuck = "stuck child: child shardId-000000000008 waits on parent shardId-000000000007"
        assert stuck in text
        assert "expired: nobody renews lease shardId-000000000006" in text
        await pilot.press("j", "r")
        dialog = app.screen
        assert isinstance(dialog, RewindDialog)
        preview = dialog.query_one("#preview")
        await wait_for(lambda: "Type the stream's name" in str(preview.render()), timeout=5)
        assert dialog.query_one("#yes").disabled
        engine = app.engine
        previews = engine.previews
        dialog.query_one("#confirm-input").value = "not-orders"
        await pilot.pause()
        assert dialog.query_one("#yes").disabled
        assert "Type the stream's name above to enable Rewind." in str(preview.render())
        dialog.query_one("#confirm-input").value = "orders"
        await wait_for(lambda: not dialog.query_one("#yes").disabled, timeout=5)
        assert "Type the stream's name" not in str(preview.render())
        assert engine.previews == previews  # typing the name reads nothing
        dialog.query_one("#no").focus()
        await confirm(pilot)
        await wait_for(lambda: len(engine.requests) == 1, timeout=5)
        assert engine.requests[0].action.value == "rewind"
        # Pause too: a one-button question gets the same typed confirmation.
        await pilot.press("p")
        pause = app.screen
        assert isinstance(pause, ConfirmDialog)
        text = pause.query_one("#preview")
        await wait_for(lambda: "Type the stream's name" in str(text.render()), timeout=5)
        assert pause.query_one("#yes").disabled
        pause.query_one("#confirm-input").value = "orders"
        await wait_for(lambda: not pause.query_one("#yes").disabled, timeout=5)


async def test_a_small_terminal_still_shows_shard_rows() -> None:
    """40 x 12: the header, a few shard rows, the events squeezed, the footer."""
    from tests.ui_data import frozen_app

    app = frozen_app()
    async with app.run_test(size=(40, 12)) as pilot:  # type: ignore[attr-defined]
        await pilot.pause()
        table = app.dashboard.table  # type: ignore[attr-defined]
        assert table.size.height >= 4, table.size  # its header and three rows at least
        assert app.dashboard.events.size.height <= 3  # type: ignore[attr-defined]


async def test_a_shard_with_parked_records_says_how_many(demo_endpoint, db) -> None:
    async with console(demo_endpoint, db) as live:
        pilot, app = live.pilot, live.app
        table = app.dashboard.table
        live.consumer.state.count_parked(S1, 2)  # as a worker that parked two records does
        read = live.consumer.state.version
        await wait_for(lambda: app._seen_version >= read, what="the console's redraw")
        lines = [table.render_line(y).text for y in range(table.size.height)]
        [row] = [line for line in lines if S1 in line]
        assert "2 parked" in row
        assert not any("parked" in line for line in lines if S0 in line)
        await pilot.press("slash", *"001", "enter", "enter")
        assert isinstance(app.screen, ShardDetailScreen) and app.screen.shard_id == S1
        await pilot.pause()
        summary = app.screen.query_one("#detail-summary")
        shown = "\n".join(summary.render_line(y).text for y in range(summary.size.height))
        assert "2 records this run" in shown and "parked list" in shown
