"""A shard's records, page by page, from any position: the records browser.

Opened from a shard's detail screen (``o``): from the record the processor fails on when the
shard is failing (its error above), else from the checkpoint. ``n``/``b`` page forward and back,
``/`` searches the decoded text (this page, then up to five more), ``f`` reads from another
position (start, latest, a time, a sequence number). Reading never moves the checkpoint and
takes its turns from the shard's read budget, shared with its worker.
"""

from __future__ import annotations

import re

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from console.decode import Decoded, decode, printable
from console.engine.api import Engine
from console.engine.changes.plan import ControlError, parse_target
from console.engine.read.browse import Page
from console.model import Position, Record, format_ts
from console.redact import REDACTOR
from console.sources.base import SourceError
from console.ui.format import decode_data, position_text, shown

SEARCH_PAGES = 5


def preview(record: Record, decoded: Decoded, width: int = 60) -> str:
    """The start of the decoded record, on one line (how it was decoded has its own column)."""
    lines = shown(decoded, record.data).splitlines()
    if lines and lines[0].startswith("[") and decoded.how in lines[0]:
        lines = lines[1:]
    text = " ".join(line.strip() for line in lines[:4])
    return printable(text[:width])


class RecordsScreen(Screen[None]):
    # The table takes what the record under the cursor leaves it: that record in full below,
    # up to 45% of the screen, scrolled when longer.
    DEFAULT_CSS = """
    RecordsScreen #records-table { height: 1fr; }
    RecordsScreen #records-detail-box { height: auto; max-height: 45%; border-top: solid $primary; }
    """

    BINDINGS = [
        Binding("escape", "close", "Back", id="back"),
        Binding("n", "next_page", "Next page", id="records-next"),
        Binding("b", "previous_page", "Previous page", id="records-previous"),
        Binding("slash", "search", "Search", id="records-search"),
        Binding("f", "read_from", "From…", id="records-from"),
    ]

    def __init__(self, engine: Engine, shard_id: str) -> None:
        super().__init__()
        self.engine = engine
        self.shard_id = shard_id
        self.page: Page | None = None
        self.starts: list[Position | None] = []  # the pages read before this one
        self.note: str | None = None
        self._asking: str | None = None  # "search" or "from" while the input is open

    def compose(self) -> ComposeResult:
        yield Static(id="records-title")
        yield DataTable(id="records-table", cursor_type="row", zebra_stripes=True)
        yield Input(id="records-input")
        with VerticalScroll(id="records-detail-box"):
            yield Static(id="records-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("#", "sequence", "key", "arrival (UTC)", "decoded", "data")
        self.query_one("#records-input", Input).display = False
        self.load(None)

    # -- reading ----------------------------------------------------------------------------

    @work(exclusive=True, group="records")
    async def load(self, start: Position | None) -> None:
        title = self.query_one("#records-title", Static)
        title.update(Text(f"Records of {self.shard_id}: reading…", style="bold"))
        try:
            page = await self.engine.browse(self.shard_id, start)
        except (ControlError, SourceError) as exc:
            title.update(Text(f"Records of {self.shard_id}: {REDACTOR(str(exc))}", style="bold"))
            return
        if start is None:
            self.note = page.note
        self.show(page)

    def show(self, page: Page) -> None:
        self.page = page
        table = self.query_one(DataTable)
        table.clear()
        for i, r in enumerate(page.records, 1):
            decoded = decode(r.data)  # once a row: its column and its preview
            sub = "" if r.sub_sequence_number is None else f"/{r.sub_sequence_number}"
            # Text cells, never markup: a record's bytes are not the console's to style.
            table.add_row(
                Text(str(i)),
                Text(f"…{r.sequence_number[-14:]}{sub}"),
                Text(printable(r.partition_key)),
                Text(format_ts(r.approximate_arrival)),
                Text(decoded.how),
                Text(REDACTOR(preview(r, decoded))),
            )
        more = "the shard ends here" if page.next is None else "n: next page"
        if page.at_tip:
            more = "at the tip: nothing more to read now"
        head = Text(f"Records of {self.shard_id} from {position_text(page.start, 40)}", "bold")
        head.append(f" · {len(page.records)} read · {more}", style="dim")
        if self.note and not self.starts:
            head.append("\n" + REDACTOR(self.note), style="bold red")
        self.query_one("#records-title", Static).update(head)
        self._show_selected(0)

    def _show_selected(self, row: int) -> None:
        detail = self.query_one("#records-detail", Static)
        if self.page is None or not self.page.records:
            detail.update(Text("no records here", style="dim"))
            return
        r = self.page.records[min(row, len(self.page.records) - 1)]
        sub = "" if r.sub_sequence_number is None else f"/{r.sub_sequence_number}"
        head = Text(f"{r.sequence_number}{sub}  key {printable(r.partition_key)}  ", style="dim")
        head.append(format_ts(r.approximate_arrival), style="dim")
        detail.update(Text.assemble(head, "\n", REDACTOR(decode_data(r.data))))

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        # The cursor as it is now: a page shown and a search's move come as two events.
        self._show_selected(self.query_one(DataTable).cursor_row)

    # -- keys -------------------------------------------------------------------------------

    def action_close(self) -> None:
        if self._asking is not None:
            self._close_input()
            return
        self.app.pop_screen()

    def action_next_page(self) -> None:
        if self.page is None or self.page.next is None:
            self.notify("the shard ends here: no next page")
            return
        self.starts.append(self.page.start)
        self.load(self.page.next)

    def action_previous_page(self) -> None:
        if not self.starts:
            self.notify("this is the first page read")
            return
        self.load(self.starts.pop())

    def action_search(self) -> None:
        self._ask("search", "search the decoded records (a regular expression)")

    def action_read_from(self) -> None:
        self._ask("from", "read from: trim_horizon, latest, -15m, an ISO time, sequence:N")

    def _ask(self, what: str, placeholder: str) -> None:
        field = self.query_one("#records-input", Input)
        self._asking = what
        field.placeholder = placeholder
        field.value = ""
        field.display = True
        field.focus()

    def _close_input(self) -> None:
        self._asking = None
        field = self.query_one("#records-input", Input)
        field.display = False
        self.query_one(DataTable).focus()

    @on(Input.Submitted, "#records-input")
    async def _submitted(self, event: Input.Submitted) -> None:
        what, text = self._asking, event.value.strip()
        self._close_input()
        if not text:
            return
        if what == "from":
            try:
                start = (
                    Position.latest()
                    if text.lower() in ("latest", "tip")
                    else parse_target(text).position
                )
            except ControlError as exc:
                self.notify(str(exc), severity="error", markup=False)
                return
            if start is None:
                self.notify("checkpoint:ENTRY: use the detail screen's history", severity="error")
                return
            self.starts.clear()
            self.note = None
            self.load(start)
        elif what == "search":
            await self._search(text)

    async def _search(self, text: str, pages: int = SEARCH_PAGES) -> None:
        """The next record matching ``text`` (the one under the cursor when it is not one
        itself), on this page or the next ``pages``."""
        try:
            pattern = re.compile(text)
        except re.error as exc:
            self.notify(
                f"'{text}' is not a regular expression: {exc}", severity="error", markup=False
            )
            return
        table = self.query_one(DataTable)
        page = self.page
        if page is None:
            return

        def matches(record: Record) -> bool:
            return pattern.search(decode(record.data).searchable) is not None

        row = table.cursor_row
        on_match = 0 <= row < len(page.records) and matches(page.records[row])
        first = row + 1 if on_match else max(row, 0)
        passed: list[Position] = []  # pages read past: the way back, once one matches
        for _ in range(pages + 1):
            for i in range(first, len(page.records)):
                if matches(page.records[i]):
                    if page is not self.page:
                        self.starts.extend(passed)
                        self.show(page)
                    table.move_cursor(row=i)
                    self._show_selected(i)
                    return
            if page.next is None or page.at_tip:
                break
            passed.append(page.start)
            try:
                page = await self.engine.browse(self.shard_id, page.next)
            except (ControlError, SourceError) as exc:
                self.notify(f"search stopped: {exc}", severity="error", markup=False)
                return
            first = 0
        self.notify(f"'{text}' is not in this page or the next {pages}", markup=False)
