"""The dashboard: header, shard tree, events; the filter and command lines slide in below."""

from __future__ import annotations

from collections.abc import Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from console.engine.api import Engine
from console.engine.findings import Diagnosis
from console.ui.actions import command_help
from console.ui.widgets.events import EventPane
from console.ui.widgets.header import HeaderBar
from console.ui.widgets.shard_table import ShardTable


class DashboardScreen(Screen[None]):
    BINDINGS = [Binding("escape", "close_lines", show=False)]

    class Shown(Message):
        """The dashboard is on screen: time to draw the snapshot."""

    class CommandEntered(Message):
        """A line typed at ``:``, for the app to run."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, engine: Engine, clock: Callable[[], float]) -> None:
        super().__init__()
        self.engine = engine
        self.clock = clock
        self.header = HeaderBar(engine.state, clock, engine.read_only)
        self.table = ShardTable(engine.state, clock, id="shards")
        self.events = EventPane()
        self.findings = Static("", id="findings", markup=False)

    @property
    def selected_shard(self) -> str | None:
        return self.table.selected

    def compose(self) -> ComposeResult:
        yield self.header
        yield self.findings
        yield self.table
        yield self.events
        yield Input(
            placeholder="filter: part of a shard id, or a status (failing, paused…)", id="filter"
        )
        yield Input(
            placeholder=f"command: {command_help()}",
            id="command",
        )
        yield Footer()

    def on_mount(self) -> None:
        self.table.focus()
        self.call_after_refresh(self.post_message, self.Shown())

    def show_findings(self, found: tuple[Diagnosis, ...], limit: int = 6) -> None:
        """What an attached console finds wrong, worst first, above the shard tree."""
        box = self.findings
        box.set_class(bool(found), "shown")
        box.set_class(any(d.severe for d in found), "severe")
        lines = [f"⚠ {d.line()}" for d in found[:limit]]
        if len(found) > limit:
            lines.append(f"… and {len(found) - limit} more (the detail screen of each shard says)")
        box.update("\n".join(lines))

    def show_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    def show_command(self) -> None:
        box = self.query_one("#command", Input)
        box.value = ""
        box.add_class("shown")
        box.focus()

    def action_close_lines(self) -> None:
        filt = self.query_one("#filter", Input)
        if filt.has_focus and filt.value:
            filt.value = ""
        for box in self.query(Input):
            box.remove_class("shown")
        self.table.focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.table.filter_text = event.value
        self.table.rebuild()

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.query_one("#filter", Input).remove_class("shown")
        self.table.focus()

    @on(Input.Submitted, "#command")
    def command_done(self, event: Input.Submitted) -> None:
        event.input.remove_class("shown")
        self.table.focus()
        if event.value.strip():
            self.post_message(self.CommandEntered(event.value))
