"""One shard in full: ranges, lineage, checkpoint and its history, the last records, the error."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from console.engine.api import Engine
from console.engine.state import ShardView
from console.model import HistoryEntry, Position, format_ts
from console.redact import REDACTOR
from console.ui.format import GLYPHS, age, decode_data, lag_text, position_text, rate_text


def _compact(position: Position | None, status: str | None) -> str:
    text = position_text(position, 14)
    return f"{text} {status}" if status and status != "open" else text


def lease_text(view: ShardView, me: str | None, now: float) -> Text:
    """Fleet mode: who holds the shard's lease, its counter and when it last moved."""
    lease = view.lease
    if lease is None or lease.owner is None:
        text = Text("nobody holds it: the next worker to look takes it")
    else:
        who = "this worker" if lease.owner == me else f"worker {lease.owner}"
        text = Text(f"held by {who}")
    if lease is not None and lease.counter is not None:
        ago = lease.counter_age(now)
        moved = "" if ago is None else f", moved {age(ago)} ago"
        text.append(f" · counter {lease.counter}{moved}")
    if lease is not None and lease.expired and lease.owner is not None:
        text.append("  expired: its owner stopped renewing it", style="bold")
    return text


def read_text(mode: str, consumer: str | None) -> str:
    if mode == "fan-out":
        return f"enhanced fan-out: pushed to stream consumer '{consumer}' (SubscribeToShard)"
    return "polling (GetRecords)"


class ShardDetailScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="back"),
        Binding("o", "records", "Records", id="records"),
    ]

    def __init__(self, engine: Engine, shard_id: str, clock: Callable[[], float]) -> None:
        super().__init__()
        self.engine = engine
        self.shard_id = shard_id
        self.clock = clock
        self.history: list[HistoryEntry] | None = None
        self._seen = -1

    @property
    def selected_shard(self) -> str:
        return self.shard_id

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="detail"):
            yield Static(id="detail-summary")
            yield Static(id="detail-history")
            yield Static(id="detail-records")
        yield Footer()

    def action_records(self) -> None:
        from console.ui.screens.records import RecordsScreen

        self.app.push_screen(RecordsScreen(self.engine, self.shard_id))

    def on_mount(self) -> None:
        self.update_from_state(force=True)
        self.load_history()

    @work(exclusive=True, group="history")
    async def load_history(self) -> None:
        self.history = await self.engine.history(self.shard_id, limit=30)
        self.query_one("#detail-history", Static).update(self._history())

    def update_from_state(self, force: bool = False) -> None:
        view = self.engine.state.shards.get(self.shard_id)
        version = view.version if view else -1
        if version == self._seen and not force:
            return
        if self._seen not in (version, -1):
            self.load_history()  # a change of state may be a new history row
        self._seen = version
        self.query_one("#detail-summary", Static).update(self._summary())
        self.query_one("#detail-records", Static).update(self._records())

    def _summary(self) -> RenderableType:
        view = self.engine.state.shards.get(self.shard_id)
        lineage = self.engine.lineage
        shard = lineage.shards.get(self.shard_id)
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold", no_wrap=True)
        t.add_column()
        status = view.status if view else None
        title = Text(f"{self.shard_id}  ", style="bold")
        if status is not None:
            title.append(f"{GLYPHS[status]} {status.value}")
        if shard is not None:
            title.append("  closed" if shard.is_closed else "  open")
            if shard.starting_hash_key is not None:
                t.add_row("hash keys", f"{shard.starting_hash_key} … {shard.ending_hash_key}")
            if shard.starting_sequence_number is not None:
                last = shard.ending_sequence_number or "(open)"
                t.add_row("sequence numbers", f"{shard.starting_sequence_number} … {last}")
        parents = shard.parents if shard else (view.parents if view else ())
        t.add_row("parents", ", ".join(parents) or "none")
        t.add_row("children", ", ".join(lineage.children.get(self.shard_id, ())) or "none")
        if view is not None:
            now = self.clock()
            ckpt = view.checkpoint.describe() if view.checkpoint else "none yet"
            when = f" ({age(now - view.checkpoint_at)} ago)" if view.checkpoint_at else ""
            t.add_row("checkpoint", ckpt + when)
            t.add_row("read up to", view.position.describe() if view.position else "-")
            if view.mode is not None:
                t.add_row("reads", read_text(view.mode, self.engine.state.fan_out))
            state = self.engine.state
            if state.leased:
                t.add_row("lease", lease_text(view, state.worker_id, now))
            rate, lag = rate_text(view.rate), lag_text(view.lag_ms)
            if state.lease_table is not None:
                t.add_row("lag", f"{lag} (the age of the oldest record not processed yet)")
                for d in state.diagnoses:
                    if d.subject == self.shard_id:
                        t.add_row("finding", Text(d.line(), style="bold"))
            else:
                t.add_row("this run", f"{view.records:,} records · {rate} rec/s · lag {lag}")
            if view.parked:
                t.add_row("parked", f"{view.parked:,} records this run: the processor kept "
                          "failing on them (shard-console parked list)")  # fmt: skip
            if view.last_error:
                stamp = f" (since {format_ts(view.error_at)})" if view.error_at else ""
                t.add_row("error", Text(REDACTOR(view.last_error) + stamp, style="bold"))
        return Group(title, t)

    def _records(self) -> RenderableType:
        view = self.engine.state.shards.get(self.shard_id)
        title = "Last records read"
        if self.engine.state.lease_table is not None:
            title = "The oldest record not processed yet (from the last lag read)"
        out: list[RenderableType] = [Text(f"\n{title}", style="bold")]
        if view is None or not view.recent:
            attached = self.engine.state.lease_table is not None
            if not attached:
                text = "none this run"
            elif view is not None and view.lag_ms == 0:
                text = "none: caught up at the last lag read"
            else:
                text = "not read yet since the checkpoint last moved"
            out.append(Text(text, style="dim"))
            return Group(*out)
        for r in reversed(view.recent):
            sub = "" if r.sub_sequence_number is None else f"/{r.sub_sequence_number}"
            head = Text(f"{r.sequence_number}{sub}  key {r.partition_key}  ", style="dim")
            head.append(format_ts(r.approximate_arrival), style="dim")
            out.append(head)
            out.append(Text(REDACTOR(decode_data(r.data))))
        return Group(*out)

    def _history(self) -> RenderableType:
        out: list[RenderableType] = [Text("\nCheckpoint history", style="bold")]
        if not self.history:
            out.append(Text("no changes recorded", style="dim"))
            return Group(*out)
        t = Table(box=None, padding=(0, 1), show_edge=False)
        for col in ("#", "when (UTC)", "cause", "who", "from", "to", "note"):
            t.add_column(
                col, no_wrap=col != "note", overflow="fold" if col == "note" else "ellipsis"
            )
        for h in self.history:
            t.add_row(
                str(h.id),
                time.strftime("%m-%d %H:%M:%S", time.gmtime(h.at)),
                h.cause,
                h.actor,
                _compact(h.old_position, h.old_status),
                _compact(h.new_position, h.new_status),
                h.note or "",
            )
        out.append(t)
        return Group(*out)
