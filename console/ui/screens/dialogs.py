"""Every change asks first, and "No" is where the focus starts.

Each dialog builds a :class:`ControlRequest` and shows what it would do, computed by the engine
(``engine.preview``: the same validation and plan the change itself would use). Dismissing with
None changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, RadioButton, RadioSet, Static
from textual.widgets.option_list import Option

from console.engine.api import Engine
from console.engine.changes.plan import Action, ControlError, ControlRequest, SkipTo
from console.model import HistoryEntry, Position, PositionError, PositionKind, format_ts, parse_when
from console.ui.format import age, position_text


class Dialog(ModalScreen[ControlRequest | None]):
    """A framed question with No (focused) and a verb button, plus a live preview."""

    BINDINGS = [Binding("escape", "no", "No", id="dialog-no")]
    verb = "Apply"
    # The operator types the stream's name to enable the verb: for bulk changes, and for every
    # change to a consumer this console does not run (engine.confirm_by_name).
    confirm_name = False

    def __init__(self, engine: Engine, actor: str, clock: Callable[[], float]) -> None:
        super().__init__()
        self.engine = engine
        self.actor = actor
        self.clock = clock
        self.request: ControlRequest | None = None
        self.planned = ""  # the last preview's text

    def body(self) -> ComposeResult:
        yield from ()

    def title_text(self) -> str:
        return self.verb

    @property
    def needs_name(self) -> bool:
        return self.confirm_name or self.engine.confirm_by_name

    def compose(self) -> ComposeResult:
        stream = self.engine.state.stream
        with Vertical(id="dialog"):
            yield Label(self.title_text(), id="dialog-title")
            yield from self.body()
            if self.needs_name:
                yield Label(f"Type the stream's name to confirm: {stream}", classes="dim")
                yield Input(placeholder=stream, id="confirm-input")
            yield Static("", id="preview")
            with Horizontal(id="buttons"):
                yield Button("No", id="no", variant="primary")
                yield Button(self.verb, id="yes", variant="error", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()
        self.refresh_preview()

    def build(self) -> ControlRequest:
        """The request the dialog's fields describe; raise ControlError or PositionError."""
        raise ControlError("nothing to do")

    def describe(self, request: ControlRequest, summary: str) -> str:
        return summary

    def blocked(self) -> str | None:
        """Why the verb stays disabled although the request is valid (typed confirmations)."""
        if not self.needs_name:
            return None
        if self.query_one("#confirm-input", Input).value.strip() != self.engine.state.stream:
            return f"Type the stream's name above to enable {self.verb}."
        return None

    @work(exclusive=True, group="preview")
    async def refresh_preview(self) -> None:
        preview = self.query_one("#preview", Static)
        yes = self.query_one("#yes", Button)
        # Until this preview is done, Yes must not apply the one before it.
        self.request = None
        yes.disabled = True
        try:
            request = self.build()
            plan = await self.engine.preview(request)
        except (ControlError, PositionError) as exc:
            self.request = None
            preview.update(f"✖ {exc}")
            preview.set_class(True, "invalid")
            yes.disabled = True
            return
        self.request = request
        preview.set_class(False, "invalid")
        self.planned = self.describe(request, plan.summary)
        self.show_blocked()

    def show_blocked(self) -> None:
        """The plan last previewed, and whether the verb may be pressed: typing the stream's
        name changes only this (no new preview, which may read the store)."""
        if self.request is None:
            return
        reason = self.blocked()
        text = self.planned
        self.query_one("#preview", Static).update(text if reason is None else f"{text}\n{reason}")
        self.query_one("#yes", Button).disabled = reason is not None

    @on(Button.Pressed, "#no")
    def action_no(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#yes")
    def yes(self) -> None:
        if self.request is not None:
            self.dismiss(self.request)

    @on(Input.Changed)
    @on(RadioSet.Changed)
    @on(OptionList.OptionHighlighted)
    def changed(self, event: Message) -> None:
        if isinstance(event, Input.Changed) and event.input.id == "confirm-input":
            self.show_blocked()
        else:
            self.refresh_preview()


class ConfirmDialog(Dialog):
    """A fixed request, shown with its preview: pause, resume, undo."""

    def __init__(
        self,
        engine: Engine,
        actor: str,
        clock: Callable[[], float],
        request: ControlRequest,
        verb: str,
        question: str,
    ) -> None:
        super().__init__(engine, actor, clock)
        self.fixed = request
        self.verb = verb
        self.question = question

    def title_text(self) -> str:
        return self.question

    def build(self) -> ControlRequest:
        return self.fixed


class RewindDialog(Dialog):
    verb = "Rewind"

    def __init__(
        self, engine: Engine, actor: str, clock: Callable[[], float], shard_id: str
    ) -> None:
        super().__init__(engine, actor, clock)
        self.shard_id = shard_id
        self.entries: list[HistoryEntry] = []

    def title_text(self) -> str:
        return f"Rewind {self.shard_id}"

    def body(self) -> ComposeResult:
        view = self.engine.state.shards.get(self.shard_id)
        shard = self.engine.lineage.shards.get(self.shard_id)
        now = view.position.describe() if view and view.position else "not started"
        yield Label(f"Read up to: {now}", classes="dim")
        if shard is not None and shard.starting_sequence_number:
            last = shard.ending_sequence_number or "open"
            yield Label(
                f"Sequence numbers: {shard.starting_sequence_number} … {last}", classes="dim"
            )
        with RadioSet(id="kind"):
            yield RadioButton("to the start of the shard (TRIM_HORIZON)", value=True, id="start")
            yield RadioButton("to a time", id="time")
            yield RadioButton("to a sequence number", id="sequence")
            yield RadioButton("to a previous checkpoint", id="checkpoint")
        yield Input(
            placeholder="time: 2026-11-23T08:00:00Z, or -15m, -2h", id="time-input", classes="field"
        )
        yield Input(placeholder="sequence number", id="sequence-input", classes="field")
        yield OptionList(id="checkpoint-input", classes="field")

    def on_mount(self) -> None:
        super().on_mount()
        self.show_field()
        self.load_history()

    @on(RadioSet.Changed)
    def show_field(self) -> None:
        """Only the field the chosen kind needs is shown."""
        kind = self._kind()
        for field in self.query(".field"):
            field.display = field.id == f"{kind}-input"

    @work(group="history")
    async def load_history(self) -> None:
        entries = await self.engine.history(self.shard_id, limit=50)
        self.entries = [e for e in entries if e.new_position is not None and e.id is not None]
        options = self.query_one("#checkpoint-input", OptionList)
        options.clear_options()
        for e in self.entries:
            assert e.new_position is not None
            when = time.strftime("%m-%d %H:%M:%S", time.gmtime(e.at))
            options.add_option(
                Option(f"#{e.id} {when} {e.cause:<8} {e.new_position.describe()}", id=str(e.id))
            )

    def _kind(self) -> str:
        pressed = self.query_one("#kind", RadioSet).pressed_button
        if pressed is None or pressed.id is None:
            return "start"
        return pressed.id

    def build(self) -> ControlRequest:
        kind = self._kind()
        if kind == "time":
            ts = parse_when(self.query_one("#time-input", Input).value, self.clock())
            position = Position.at_timestamp(ts)
        elif kind == "sequence":
            text = self.query_one("#sequence-input", Input).value.strip()
            try:
                position = Position.decode(f"at_sequence:{text}")
            except PositionError:
                raise ControlError(f"'{text}' is not a sequence number") from None
        elif kind == "checkpoint":
            options = self.query_one("#checkpoint-input", OptionList)
            index = options.highlighted
            if index is None or index >= len(self.entries):
                raise ControlError("choose a checkpoint from the list")
            chosen = self.entries[index].new_position
            assert chosen is not None
            position = chosen
        else:
            position = Position.trim_horizon()
        return ControlRequest(Action.REWIND, self.shard_id, position=position, actor=self.actor)

    def describe(self, request: ControlRequest, summary: str) -> str:
        return f"{summary}\n{replay_extent(self.engine, self.shard_id, request.position)}"


def replay_extent(engine: Engine, shard_id: str, target: Position | None) -> str:
    """What a rewind will process again, in an operator's words."""
    view = engine.state.shards.get(shard_id)
    upto = "where it has read to"
    if view is not None and view.position is not None and view.position.sequence_number:
        upto += f" ({position_text(view.position, 16)})"
    if target is None:
        return ""
    if target.kind is PositionKind.TRIM_HORIZON:
        return f"Replays everything the shard still holds, up to {upto}, and on."
    if target.kind is PositionKind.AT_TIMESTAMP and target.timestamp is not None:
        span = ""
        if view is not None and view.last_arrival is not None:
            span = f" (about {age(view.last_arrival - target.timestamp)} of data)"
        return f"Replays records from {format_ts(target.timestamp)} up to {upto}{span}."
    return f"Replays records from {target.describe()} up to {upto}."


class SkipDialog(Dialog):
    verb = "Skip"

    def __init__(
        self, engine: Engine, actor: str, clock: Callable[[], float], shard_id: str
    ) -> None:
        super().__init__(engine, actor, clock)
        self.shard_id = shard_id

    def title_text(self) -> str:
        return f"Skip {self.shard_id}"

    def body(self) -> ComposeResult:
        view = self.engine.state.shards.get(self.shard_id)
        failing = view is not None and (view.last_error or "").startswith("processor")
        with RadioSet(id="kind"):
            yield RadioButton(
                "to the tip: records not read yet are never processed", value=True, id="latest"
            )
            yield RadioButton(
                "past the failing record" + ("" if failing else " (the processor is not failing)"),
                id="next-record",
                disabled=not failing,
            )
            yield RadioButton("mark the shard done: its children start", id="done")

    def build(self) -> ControlRequest:
        pressed = self.query_one("#kind", RadioSet).pressed_button
        to = SkipTo((pressed.id if pressed is not None else None) or "latest")
        return ControlRequest(Action.SKIP, self.shard_id, skip_to=to, actor=self.actor)


class ReplayDialog(Dialog):
    """Every shard from a time: a bulk change, so the operator types the stream's name."""

    verb = "Replay"
    confirm_name = True

    def title_text(self) -> str:
        return f"Replay every shard of '{self.engine.state.stream}' from a time"

    def body(self) -> ComposeResult:
        yield Input(placeholder="from: 2026-11-23T08:00:00Z or -1h", id="time-input")

    def build(self) -> ControlRequest:
        ts = parse_when(self.query_one("#time-input", Input).value, self.clock())
        return ControlRequest(Action.REPLAY, position=Position.at_timestamp(ts), actor=self.actor)
