"""Every binding, as the keymap has it now, and every command the ':' line takes."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from console.ui.actions import ACTIONS, NAVIGATION


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "app.pop_screen", "Close", id="help-close"),
    ]

    def __init__(self, keys: dict[str, str], read_only: bool) -> None:
        super().__init__()
        self.keys = keys
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        table = Table(box=None, padding=(0, 2), show_edge=False)
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("does")
        table.add_column("binding id", style="dim", no_wrap=True)
        rows = [(n.id, n.help) for n in NAVIGATION] + [(a.id, a.help) for a in ACTIONS if a.key]
        for binding_id, text in rows:
            key = self.keys.get(binding_id)
            if key is None:
                continue
            table.add_row(key, text, binding_id)
        commands = Table(box=None, padding=(0, 2), show_edge=False, show_header=False)
        commands.add_column(no_wrap=True)
        for action in ACTIONS:
            if action.command and not (action.changes and self.read_only):
                commands.add_row(f":{action.command}")
        title = "Keys" + ("  (read-only: changes are disabled)" if self.read_only else "")
        with VerticalScroll(id="help"):
            yield Static(Text(title + "\n", style="bold"))
            yield Static(table)
            yield Static(Text("\nCommands", style="bold"))
            yield Static(commands)
            yield Static(
                "\nEvery change asks first, and No is the default. Remap a key in the config "
                'file, under [keys], by its binding id: rewind = "ctrl+r".',
                markup=False,
            )
