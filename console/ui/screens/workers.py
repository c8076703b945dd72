"""The fleet's workers (fleet mode): each with its host, leases held, records/s and the age of
its last heartbeat, refreshed once a second from the engine's snapshot."""

from __future__ import annotations

import math

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from console.engine.state import EngineState
from console.ui.format import age, rate_text


def workers_table(state: EngineState) -> Table:
    table = Table(box=None, padding=(0, 2), show_edge=False)
    metrics = any(w.metrics for w in state.workers)
    columns = [
        ("worker", "left"),
        ("host", "left"),
        ("pid", "right"),
        ("leases", "right"),
        ("rec/s", "right"),
        ("records", "right"),
        ("heartbeat", "right"),
    ]
    if metrics:
        columns.append(("metrics (KCL 3.x)", "left"))
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True, min_width=len(name))  # type: ignore[arg-type]
    for w in sorted(state.workers, key=lambda w: w.worker):
        me = "● " if w.worker == state.worker_id else "  "
        beat = "-" if math.isnan(w.heartbeat_age) else age(w.heartbeat_age) + " ago"
        row = [
            me + w.worker,
            w.host,
            str(w.pid) if w.pid else "-",
            str(w.leases),
            rate_text(w.rate),
            str(w.records),
            beat,
        ]
        if metrics:
            row.append(" ".join(f"{k} {v:g}" for k, v in sorted(w.metrics.items())))
        table.add_row(*row)
    return table


class WorkersScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,w,q", "app.pop_screen", "Close", id="workers-close")]

    def __init__(self, state: EngineState) -> None:
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="workers"):
            yield Static(Text("Workers of the fleet\n", style="bold"))
            yield Static(workers_table(self.state), id="workers-table")
            yield Static(
                "\nFrom the lease table: a worker's heartbeat is the last renewal seen of a lease "
                "it holds (a shard-console worker's own heartbeat when it sends one)."
                if self.state.lease_table is not None
                else "\n● this worker. From each worker's heartbeat in shard-console's table "
                "beside the lease table.",
                markup=False,
            )

    def on_mount(self) -> None:
        self.set_interval(1.0, self._refresh)

    def _refresh(self) -> None:
        self.query_one("#workers-table", Static).update(workers_table(self.state))
