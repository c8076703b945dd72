"""The event pane: resharding, errors, operator actions, as they happen."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from console.engine.events import Event, Level
from console.redact import REDACTOR
from console.ui.widgets.styles import component_style


class EventPane(RichLog):
    COMPONENT_CLASSES = {"event-pane--time", "event-pane--warning", "event-pane--error"}

    def __init__(self) -> None:
        super().__init__(id="events", max_lines=1000, wrap=False, markup=False, auto_scroll=True)
        self.last_seq = 0

    def add(self, events: list[Event]) -> None:
        for event in events:
            self.last_seq = event.seq
            line = Text(
                time.strftime("%H:%M:%S ", time.gmtime(event.at)),
                style=component_style(self, "event-pane--time"),
            )
            style = None
            if event.level is Level.WARNING:
                style = component_style(self, "event-pane--warning")
            elif event.level is Level.ERROR:
                style = component_style(self, "event-pane--error")
            line.append(REDACTOR(event.message), style=style)
            self.write(line)
