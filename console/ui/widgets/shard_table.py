"""The shard tree as a Line API table: thousands of rows, only the visible ones ever rendered.

Rows come from the lineage walk (children under their parents; subtrees read to the end fold
up, and so do long lines of finished shards above a live one, as a DynamoDB table's roll-overs
make). Each visible row is rendered once per change of what it shows: the strip cache is keyed by
the row's engine version, the sparkline generation, the cursor, the width and the age text.
DataTable would invalidate every row on each update (Textual 8), which is what a console of a
thousand shards at 4 Hz cannot afford.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.engine.lineage import Lineage
from console.engine.state import FINISHED, EngineState, ShardView
from console.model import ShardStatus
from console.ui.format import GLYPHS, age, lag_text, position_text, rate_text, sparkline
from console.ui.widgets.styles import component_style

SPARK_WIDTH = 12
MAX_INDENT = 6


@dataclass(frozen=True, slots=True)
class Row:
    shard_id: str
    depth: int
    folded: int  # descendants hidden under this row (0: none)
    has_children: bool
    chain: bool = False  # the hidden ones are finished ancestors of the next row, not a subtree


def subtree_finished(lineage: Lineage, views: dict[str, ShardView]) -> dict[str, bool]:
    """For every shard: is it and everything below it finished? Iterative: lineages can be
    deep (a DynamoDB stream rolls its shards over every few hours)."""
    done: dict[str, bool] = {}
    for root in lineage.shards:
        if root in done:
            continue
        stack = [(root, False)]
        while stack:
            sid, expanded = stack.pop()
            if sid in done:
                continue
            kids = lineage.children.get(sid, ())
            if not expanded:
                stack.append((sid, True))
                stack.extend((k, False) for k in kids if k not in done)
                continue
            view = views.get(sid)
            own = view is not None and view.status in FINISHED
            done[sid] = own and all(done.get(k, False) for k in kids)
    return done


def build_rows(
    lineage: Lineage,
    views: dict[str, ShardView],
    *,
    query: str = "",
    expanded: set[str] | None = None,
    folded: set[str] | None = None,
) -> list[Row]:
    """The rows to show, in tree order. A filter shows matches only, unfolded."""
    expanded = expanded or set()
    folded = folded or set()
    walk = list(lineage.walk())
    q = query.strip().lower()
    if q:
        out = []
        for sid, depth in walk:
            view = views.get(sid)
            status = view.status.value if view else ""
            if q in sid.lower() or q == status or (q.startswith("status:") and q[7:] == status):
                out.append(Row(sid, depth, 0, bool(lineage.children.get(sid))))
        return out
    finished = subtree_finished(lineage, views)

    def shown_kids(sid: str) -> list[str]:
        return [c for c in lineage.children.get(sid, ()) if lineage.present_parents(c)[0] == sid]

    def link(sid: str) -> bool:
        """Finished, with one child shown below: a step of a rolled-over chain."""
        view = views.get(sid)
        return (
            view is not None
            and view.status in FINISHED
            and sid not in expanded
            and sid not in folded
            and len(shown_kids(sid)) == 1
        )

    rows: list[Row] = []
    skip_below: int | None = None
    shifts: list[tuple[int, int]] = []  # (depth where a shift starts, levels removed)
    i = 0
    while i < len(walk):
        sid, depth = walk[i]
        i += 1
        if skip_below is not None:
            if depth > skip_below:
                continue
            skip_below = None
        while shifts and depth < shifts[-1][0]:
            shifts.pop()
        shown = depth - (shifts[-1][1] if shifts else 0)
        kids = bool(shown_kids(sid))
        if kids and (sid in folded or (finished.get(sid, False) and sid not in expanded)):
            rows.append(Row(sid, shown, len(lineage.descendants(sid)), True))
            skip_below = depth
            continue
        if link(sid):
            # A DynamoDB table's shards roll over every few hours: a long line of finished
            # shards, each the only child of the last, above the one being read. Show the
            # first and the live end; the finished steps between fold into the first.
            hidden = 0
            while i < len(walk) and walk[i][1] == depth + 1 + hidden and link(walk[i][0]):
                hidden += 1
                i += 1
            if hidden:
                rows.append(Row(sid, shown, hidden, True, chain=True))
                shifts.append((depth + hidden + 1, (shifts[-1][1] if shifts else 0) + hidden))
                continue
        rows.append(Row(sid, shown, 0, kids))
    return rows


def row_name(row: Row, view: ShardView | None) -> str:
    """The shard column's text: indent, fold marker, id, merge mark, what is folded."""
    indent = "  " * min(row.depth, MAX_INDENT)
    marker = ("▸ " if row.folded else "▾ ") if row.has_children else "  "
    name = f"{indent}{marker}{row.shard_id}"
    if view is not None and len(view.parents) > 1:
        name += " ⋈"
    if row.chain:
        name += f" ⋯{row.folded} done"
    elif row.folded:
        name += f" +{row.folded}"
    return name


OWNER_WIDTH = 16
READ_WIDTH = 9  # "fan-out" or "polling", with fan-out on


class ShardTable(ScrollView, can_focus=True):
    """Columns: shard (tree), status, lag, lag over the last minutes, records/s, checkpoint,
    its age, last error. The first line is the column header and does not scroll."""

    COMPONENT_CLASSES = {
        "shard-table--header",
        "shard-table--cursor",
        "shard-table--dim",
        "shard-table--error",
        "shard-table--spark",
        *(f"shard-table--{s.value}" for s in ShardStatus),
    }

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False, id="up"),
        Binding("down,j", "cursor(1)", "Down", show=False, id="down"),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home,g", "jump(0)", show=False),
        Binding("end,G", "jump(-1)", show=False),
        Binding("space", "fold", "Fold", show=False, id="fold"),
        Binding("enter", "open", "Detail", id="detail"),
    ]

    class Moved(Message):
        def __init__(self, shard_id: str | None) -> None:
            super().__init__()
            self.shard_id = shard_id

    class Opened(Message):
        def __init__(self, shard_id: str) -> None:
            super().__init__()
            self.shard_id = shard_id

    def __init__(
        self,
        state: EngineState,
        clock: Callable[[], float],
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.state = state
        self.clock = clock
        self.rows: list[Row] = []
        self._index: dict[str, int] = {}
        self.cursor = 0
        self.filter_text = ""
        self.expanded: set[str] = set()
        self.folded: set[str] = set()
        self.lag_history: dict[str, deque[int | None]] = {}
        self.spark_generation = 0
        self._cache: dict[str, tuple[tuple[object, ...], Strip]] = {}
        self.renders = 0  # rows rendered, for the benchmark
        self._finished: set[str] = set()  # finished when the rows were built: folding follows it
        self._name_width = 0  # the longest shard column text of the rows built
        self._age_second = 0

    # -- data -------------------------------------------------------------------------------

    @property
    def selected(self) -> str | None:
        if 0 <= self.cursor < len(self.rows):
            return self.rows[self.cursor].shard_id
        return None

    def rebuild(self) -> None:
        """Recompute the rows (lineage, filter or folding changed); the cursor stays on its
        shard when it is still shown."""
        keep = self.selected
        self.rows = build_rows(
            self.state.lineage,
            self.state.shards,
            query=self.filter_text,
            expanded=self.expanded,
            folded=self.folded,
        )
        self._index = {row.shard_id: i for i, row in enumerate(self.rows)}
        views = self.state.shards
        self._name_width = 1 + max(
            (len(row_name(r, views.get(r.shard_id))) for r in self.rows), default=0
        )
        self._finished = {sid for sid, v in self.state.shards.items() if v.status in FINISHED}
        if keep is not None and keep in self._index:
            self.cursor = self._index[keep]
        else:
            self.cursor = min(self.cursor, max(0, len(self.rows) - 1))
        self.virtual_size = Size(self.size.width, len(self.rows) + 1)
        self._cache.clear()
        self.refresh()
        self.post_message(self.Moved(self.selected))

    def folding_changed(self, views: Iterable[ShardView]) -> bool:
        """Did one of these shards finish (or re-open) since the rows were built? Then what
        folds has changed, and the rows must be rebuilt."""
        finished = self._finished
        return any((v.status in FINISHED) != (v.shard_id in finished) for v in views)

    def refresh_shards(self, shard_ids: Iterable[str]) -> None:
        """Redraw the visible rows of these shards, and only those."""
        top = int(self.scroll_y)
        height = self.size.height
        for sid in shard_ids:
            i = self._index.get(sid)
            if i is not None and top <= i < top + height - 1:
                self.refresh_line(i - top + 1)

    def refresh_visible_ages(self) -> None:
        """Checkpoint ages are shown in whole seconds: redraw the visible rows when the second
        turns (each row re-renders only if its age text actually changed)."""
        second = int(self.clock())
        if second != self._age_second:
            self._age_second = second
            self.refresh_visible()

    def refresh_visible(self) -> None:
        self.refresh(Region(0, 1, self.size.width, max(0, self.size.height - 1)))

    def sample_lag(self) -> None:
        """One point of every shard's lag sparkline (called every few seconds)."""
        for sid, view in self.state.shards.items():
            history = self.lag_history.get(sid)
            if history is None:
                history = self.lag_history[sid] = deque(maxlen=SPARK_WIDTH)
            history.append(view.lag_ms if view.status is ShardStatus.ACTIVE else None)
        self.spark_generation += 1
        self.refresh_visible()

    # -- movement ---------------------------------------------------------------------------

    def _move_to(self, index: int) -> None:
        if not self.rows:
            return
        old = self.cursor
        self.cursor = max(0, min(len(self.rows) - 1, index))
        if old == self.cursor:
            return
        top = int(self.scroll_y)
        body = max(1, self.size.height - 1)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False)
        elif self.cursor >= top + body:
            self.scroll_to(y=self.cursor - body + 1, animate=False)
        for i in (old, self.cursor):
            row = self.rows[i] if i < len(self.rows) else None
            if row is not None:
                self._cache.pop(row.shard_id, None)
        self.refresh_visible()
        self.post_message(self.Moved(self.selected))

    def action_cursor(self, delta: int) -> None:
        self._move_to(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor + direction * max(1, self.size.height - 2))

    def action_jump(self, index: int) -> None:
        self._move_to(index if index >= 0 else len(self.rows) - 1)

    def action_fold(self) -> None:
        sid = self.selected
        if sid is None or not self.rows[self.cursor].has_children:
            return
        row = self.rows[self.cursor]
        if row.chain:
            # Open the whole line of finished shards, not one step of it.
            lineage = self.state.lineage
            step: str | None = sid
            for _ in range(row.folded + 1):
                if step is None:
                    break
                self.folded.discard(step)
                self.expanded.add(step)
                kids = [
                    c
                    for c in lineage.children.get(step, ())
                    if lineage.present_parents(c)[0] == step
                ]
                step = kids[0] if len(kids) == 1 else None
        elif row.folded:
            self.folded.discard(sid)
            self.expanded.add(sid)
        else:
            self.expanded.discard(sid)
            self.folded.add(sid)
        self.rebuild()

    def action_open(self) -> None:
        if self.selected is not None:
            self.post_message(self.Opened(self.selected))

    def on_click(self, event: object) -> None:
        y = getattr(event, "y", None)
        if isinstance(y, int) and y >= 1:
            self._move_to(int(self.scroll_y) + y - 1)

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, len(self.rows) + 1)
        self._cache.clear()

    # -- rendering --------------------------------------------------------------------------

    @property
    def fleet(self) -> bool:
        """Fleet mode: an owner column shows who holds each shard's lease."""
        return self.state.leased

    @property
    def fan_out(self) -> bool:
        """Enhanced fan-out on: a column shows how each shard reads (fan-out or polling)."""
        return self.state.fan_out is not None

    def _widths(self, width: int) -> tuple[int, int]:
        """(shard column, error column); the fixed columns take 60 cells (76 in fleet mode,
        9 more with fan-out)."""
        fixed = 10 + 7 + SPARK_WIDTH + 7 + 15 + 5 + 6  # statuses, gaps included
        if self.fleet:
            fixed += OWNER_WIDTH
        if self.fan_out:
            fixed += READ_WIDTH
        room = width - fixed - 16
        # 44 cells hold a Kinesis tree; DynamoDB's longer shard ids widen it, while there is room.
        shard = max(24, min(44, room), min(self._name_width, room, 64))
        return shard, max(0, width - fixed - shard)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y == 0:
            return self._header(width)
        index = int(self.scroll_y) + y - 1
        if index >= len(self.rows):
            return Strip.blank(width, self.rich_style)
        return self._row(self.rows[index], index == self.cursor, width)

    def _header(self, width: int) -> Strip:
        shard_w, error_w = self._widths(width)
        owner = f"{'owner':<{OWNER_WIDTH}}" if self.fleet else ""
        owner += f"{'reads':<{READ_WIDTH}}" if self.fan_out else ""
        text = (
            f" {'shard':<{shard_w}}{'status':<10}{owner}{'lag':>7} {'last minutes':<{SPARK_WIDTH}}"
            f"{'rec/s':>7} {'checkpoint':<15}{'age':>5} {'last error':<{error_w}}"
        )
        style = component_style(self, "shard-table--header")
        return Strip([Segment(text[:width].ljust(width), style)], width)

    def _owner(self, view: ShardView | None) -> Segment:
        """Who holds the lease: "this worker", another's id, or nobody; a lease nobody renews
        is marked and shown as an error."""
        owner = view.owner if view else None
        if owner is None and view is not None and view.status is ShardStatus.READY:
            # Ready to read and nobody holds it: the next worker to look takes it.
            style = component_style(self, "shard-table--paused")
            return Segment(f"{'nobody':<{OWNER_WIDTH}}", style)
        if owner is None:
            text = "-"
        elif owner == self.state.worker_id:
            text = "this worker"
        else:
            text = owner
        if view is not None and view.lease is not None and view.lease.expired and owner:
            text = "! " + text
            style = component_style(self, "shard-table--error")
        else:
            style = component_style(self, "shard-table--dim")
        if len(text) > OWNER_WIDTH - 1:
            text = text[: OWNER_WIDTH - 2] + "…"
        return Segment(f"{text:<{OWNER_WIDTH}}", style)

    def _row(self, row: Row, selected: bool, width: int) -> Strip:
        view = self.state.shards.get(row.shard_id)
        now = self.clock()
        checkpoint_age = (
            age(now - view.checkpoint_at) if view and view.checkpoint_at is not None else "-"
        )
        key = (view.version if view else -1, self.spark_generation, selected, width, checkpoint_age)
        cached = self._cache.get(row.shard_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        strip = self._render_row(row, view, selected, width, checkpoint_age)
        self._cache[row.shard_id] = (key, strip)
        self.renders += 1
        return strip

    def _render_row(
        self, row: Row, view: ShardView | None, selected: bool, width: int, checkpoint_age: str
    ) -> Strip:
        shard_w, error_w = self._widths(width)
        base = self.rich_style
        status = view.status if view else ShardStatus.WAITING
        status_style = component_style(self, f"shard-table--{status.value}")
        dim = component_style(self, "shard-table--dim")
        name = row_name(row, view)[:shard_w].ljust(shard_w)
        history = self.lag_history.get(row.shard_id, ())
        spark = sparkline(list(history), SPARK_WIDTH)
        error = (view.last_error or "") if view else ""
        if not error and view is not None and view.parked:
            error = f"{view.parked} parked"  # the detail screen says where
        if len(error) > error_w:
            error = error[: max(0, error_w - 1)] + "…"
        segments = [
            Segment(" " + name, base),
            Segment(f"{GLYPHS[status]} {status.value:<8}", status_style),
        ]
        if self.fleet:
            segments.append(self._owner(view))
        if self.fan_out:
            mode = view.mode if view is not None and view.mode is not None else ""
            style = base if mode == "fan-out" else dim
            segments.append(Segment(f"{mode:<{READ_WIDTH}}", style))
        segments += [
            Segment(f"{lag_text(view.lag_ms if view else None):>7} ", base),
            Segment(spark, component_style(self, "shard-table--spark")),
            Segment(f"{rate_text(view.rate if view else 0.0):>7} ", base),
            Segment(f"{position_text(view.checkpoint if view else None, 14):<15}", base),
            Segment(f"{checkpoint_age:>5} ", dim),
            Segment(error.ljust(error_w), component_style(self, "shard-table--error")),
        ]
        strip = Strip(segments).crop_extend(0, width, base)
        if selected:
            cursor: Style = component_style(self, "shard-table--cursor")
            strip = strip.apply_style(cursor)
        return strip
