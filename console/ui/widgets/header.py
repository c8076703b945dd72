"""The two header lines: where we read from, and how it is going."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.widgets import Static

from console.engine.state import STATUS_ORDER, EngineState
from console.ui.format import GLYPHS, age, lag_text, rate_text
from console.ui.widgets.styles import component_style


class HeaderBar(Static):
    COMPONENT_CLASSES = {"header-bar--title", "header-bar--stream", "header-bar--strong"}

    def __init__(
        self, state: EngineState, clock: Callable[[], float], read_only: bool = False
    ) -> None:
        super().__init__(id="header")
        self.state = state
        self.clock = clock
        self.read_only = read_only
        self._shown = ""

    def on_mount(self) -> None:
        self.update_from_state()

    def update_from_state(self) -> None:
        s = self.state
        first = Text()
        strong = component_style(self, "header-bar--strong")
        first.append(
            " shard-console ",
            style=component_style(self, "header-bar--title"),
        )
        first.append(
            f" {s.stream} ",
            style=component_style(self, "header-bar--stream"),
        )
        first.append(f"  {s.source_kind} · {s.location}")
        if s.info is not None:
            first.append(f" · retention {s.info.retention_hours:g} h")
        if s.attached_to is not None:
            first.append(f" · attached to {s.attached_to}", style=strong)
            first.append(f" ({len(s.workers)} workers)" if s.workers else "")
        if s.worker_id is not None:
            first.append(f" · worker {s.worker_id}")
            first.append(f" ({len(s.workers)} in the fleet)" if s.workers else "")
        if self.read_only:
            first.append("  READ-ONLY", style=strong)
        totals = s.totals()
        counts = totals.counts
        second = Text(" ")
        second.append(f"{rate_text(s.rate)} rec/s", style=strong)
        second.append(f" · {s.records_total:,} records")
        most, total = totals.max_lag_ms, totals.total_lag_ms
        second.append(f" · lag max {lag_text(most)} total {lag_text(total)}")
        second.append(" · ")
        shown = [st for st in STATUS_ORDER if counts[st]]
        for i, st in enumerate(shown):
            if i:
                second.append(" ")
            second.append(f"{GLYPHS[st]}{counts[st]} {st.value}")
        if not shown:
            second.append("no shards yet")
        oldest = totals.oldest_checkpoint_at
        second.append(f" · oldest checkpoint {age(self.clock() - oldest) if oldest else '-'}")
        retries = s.retries_text()
        if retries:  # what the stream put us through: throttling, 5xx, resets, expiries
            second.append(f" · retries {retries}", style=strong)
        text = Text("\n").join([first, second])
        key = f"{self.app.theme}\n{text.plain}"  # a theme change restyles it too
        if key != self._shown:
            self._shown = key
            self.update(text, layout=False)  # two fixed lines: no layout pass needed
