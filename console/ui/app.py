"""The console: a Textual app over a running engine.

It reads ``engine.state`` on a timer (4 Hz by default) and redraws only the rows whose version
changed; it sends every change through ``engine.control`` after a dialog that defaults to No.
It never calls AWS or the store itself. Quitting asks the engine to stop (finish the batch in
hand, flush) and exits when it has.
"""

from __future__ import annotations

import shlex
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import ModalScreen
from textual.system_commands import SystemCommandsProvider
from textual.worker import Worker, WorkerState

from console.engine.api import Engine
from console.engine.changes.plan import (
    Action,
    ControlError,
    ControlRequest,
    SkipTo,
    parse_target,
)
from console.identity import actor_name
from console.model import PositionError, ShardStatus, parse_when
from console.settings import Settings
from console.ui.actions import ACTIONS, BY_ID, NAVIGATION, allowed, app_bindings, command_help
from console.ui.screens.dashboard import DashboardScreen
from console.ui.screens.detail import ShardDetailScreen
from console.ui.screens.dialogs import (
    ConfirmDialog,
    Dialog,
    ReplayDialog,
    RewindDialog,
    SkipDialog,
)
from console.ui.screens.help import HelpScreen
from console.ui.screens.workers import WorkersScreen
from console.ui.theme import DEFAULT_THEME, load_themes
from console.ui.widgets.shard_table import ShardTable

SHEET = Path(__file__).with_name("console.tcss")


class ConsoleCommands(Provider):
    """The command palette offers the same actions as the keys (and honours read-only)."""

    def _commands(self) -> list[tuple[str, Callable[[], Any], str]]:
        app = self.app
        assert isinstance(app, ShardConsoleApp)
        return [
            (action.palette, getattr(app, f"action_{action.id}"), action.help)
            for action in ACTIONS
            # Judged against the screen the palette was opened over, not the palette itself.
            if action.palette is not None and app.allowed(action.id, self.screen)
        ]

    async def discover(self) -> Hits:
        for title, callback, help_text in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, callback, help_text in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)


class ShardConsoleApp(App[int]):
    CSS_PATH = str(SHEET)
    TITLE = "shard-console"
    COMMANDS: ClassVar[set[Any]] = {SystemCommandsProvider, ConsoleCommands}
    BINDINGS = app_bindings()

    def __init__(
        self,
        engine: Engine,
        *,
        refresh_rate: float = 4.0,
        theme: str = DEFAULT_THEME,
        keymap: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        run_engine: bool = True,
        duration: float | None = None,
        sample_every: float = 5.0,
        actor: str | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.refresh_rate = refresh_rate
        self.theme_name = theme
        self.user_keymap = dict(keymap or {})
        self.clock = clock
        self.run_engine = run_engine
        self.duration = duration
        self.sample_every = sample_every
        self.actor = actor or f"{actor_name()} (tui)"
        self.dashboard = DashboardScreen(engine, clock)
        self._seen_version = -1
        self._seen_lineage = -1
        self._seen_findings = 0
        self.tick_seconds: deque[float] = deque(maxlen=10_000)  # for the benchmark
        self.stopping = False

    # -- life -------------------------------------------------------------------------------

    def on_mount(self) -> None:
        for theme in load_themes().values():
            self.register_theme(theme)
        self.theme = self.theme_name
        if self.user_keymap:
            self.set_keymap(self.user_keymap)
        self.push_screen(self.dashboard)
        self.set_interval(1 / self.refresh_rate, self.tick)
        self.set_interval(self.sample_every, self.dashboard.table.sample_lag)
        if self.run_engine:
            self.run_worker(self._engine(), name="engine", group="engine", exit_on_error=False)

    async def _engine(self) -> None:
        await self.engine.run(self.duration)
        self.exit(1 if self.engine.failure else 0)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group == "engine" and event.state is WorkerState.ERROR:
            self.notify(f"the engine failed: {worker.error}", severity="error", timeout=30)
            self.exit(1)
        elif worker.group == "control" and event.state is WorkerState.ERROR:
            self.notify(f"the change failed: {worker.error}", severity="error", timeout=15)

    # -- the snapshot, at our own rate --------------------------------------------------------

    def tick(self) -> None:
        if not self.dashboard.is_attached:
            return  # not composed yet
        started = time.perf_counter()
        state = self.engine.state
        table = self.dashboard.table
        if state.lineage_version != self._seen_lineage:
            self._seen_lineage = state.lineage_version
            table.rebuild()
        elif state.version != self._seen_version:
            changed = state.changed_since(self._seen_version)
            if table.folding_changed(changed):
                table.rebuild()
            else:
                table.refresh_shards(v.shard_id for v in changed)
        table.refresh_visible_ages()
        if state.diagnoses_version != self._seen_findings:
            self._seen_findings = state.diagnoses_version
            self.dashboard.show_findings(state.diagnoses)
        self._seen_version = state.version
        self.dashboard.header.update_from_state()
        pane = self.dashboard.events
        fresh = self.engine.events.since(pane.last_seq)
        if fresh:
            pane.add(fresh)
        if isinstance(self.screen, ShardDetailScreen):
            self.screen.update_from_state()
        self.tick_seconds.append(time.perf_counter() - started)

    # -- what the keys do ---------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.allowed(action, self.screen)

    def allowed(self, action: str, screen: object) -> bool:
        """Read-only hides and refuses changes; a dialog in front blocks the screen's keys."""
        return allowed(action, self.engine.read_only, isinstance(screen, ModalScreen))

    @property
    def selected_shard(self) -> str | None:
        return getattr(self.screen, "selected_shard", None)

    def _need_shard(self) -> str | None:
        sid = self.selected_shard
        if sid is None:
            self.notify("select a shard first", severity="warning")
        return sid

    def _ask(self, dialog: Dialog) -> None:
        self.push_screen(dialog, callback=self._submit)

    def _submit(self, request: ControlRequest | None) -> None:
        if request is not None:
            self.apply(request)

    @work(group="control", exit_on_error=False)
    async def apply(self, request: ControlRequest) -> None:
        if self.engine.read_only:
            self.notify("read-only: changes are refused", severity="error")
            return
        result = await self.engine.control(request)
        self.notify(
            result.message,
            title="done" if result.ok else "refused",
            severity="information" if result.ok else "error",
            timeout=8,
        )

    def action_rewind(self) -> None:
        if (sid := self._need_shard()) is not None:
            self._ask(RewindDialog(self.engine, self.actor, self.clock, sid))

    def action_skip(self) -> None:
        if (sid := self._need_shard()) is not None:
            self._ask(SkipDialog(self.engine, self.actor, self.clock, sid))

    def action_pause(self) -> None:
        sid = self._need_shard()
        if sid is None:
            return
        view = self.engine.state.shards.get(sid)
        if view is not None and view.status is ShardStatus.PAUSED:
            request = ControlRequest(Action.RESUME, sid, actor=self.actor)
            self._ask(
                ConfirmDialog(
                    self.engine, self.actor, self.clock, request, "Resume", f"Resume {sid}?"
                )
            )
        else:
            request = ControlRequest(Action.PAUSE, sid, actor=self.actor)
            question = f"Pause {sid}? Its records wait until you resume it."
            self._ask(
                ConfirmDialog(self.engine, self.actor, self.clock, request, "Pause", question)
            )

    def action_undo(self, change_id: int | None = None) -> None:
        request = ControlRequest(Action.UNDO, change_id=change_id, actor=self.actor)
        which = f"change #{change_id}" if change_id else "the last change"
        self._ask(
            ConfirmDialog(self.engine, self.actor, self.clock, request, "Undo", f"Undo {which}?")
        )

    def action_replay(self) -> None:
        self._ask(ReplayDialog(self.engine, self.actor, self.clock))

    def action_filter(self) -> None:
        if self.screen is not self.dashboard:
            self.pop_screen()
        self.dashboard.show_filter()

    def action_command(self) -> None:
        if self.screen is not self.dashboard:
            self.pop_screen()
        self.dashboard.show_command()

    def action_workers(self) -> None:
        if not self.engine.state.leased:
            self.notify(
                "no lease table here: one process reads the whole stream (workers share a stream "
                "with --lease-table; attach --lease-table shows theirs)"
            )
            return
        self.push_screen(WorkersScreen(self.engine.state))

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self._effective_keys(), self.engine.read_only))

    async def action_quit(self) -> None:
        if not self.run_engine:
            self.exit(0)
            return
        if not self.stopping:
            self.stopping = True
            self.notify("stopping: finishing batches in hand, flushing checkpoints…", timeout=30)
            self.engine.request_stop("quit from the console")

    @on(ShardTable.Opened)
    def open_detail(self, event: ShardTable.Opened) -> None:
        self.push_screen(ShardDetailScreen(self.engine, event.shard_id, self.clock))

    @on(DashboardScreen.Shown)
    def dashboard_shown(self) -> None:
        self.tick()

    @on(DashboardScreen.CommandEntered)
    def command_entered(self, event: DashboardScreen.CommandEntered) -> None:
        self.run_command_line(event.text)

    def _effective_keys(self) -> dict[str, str]:
        """binding id -> key as shown to the user, remaps applied; read-only hides changes."""
        keys = {nav.id: self.user_keymap.get(nav.id, nav.key) for nav in NAVIGATION}
        for action in ACTIONS:
            if action.key is None or (action.changes and self.engine.read_only):
                continue
            key = self.user_keymap.get(action.id, action.key)
            keys[action.id] = " ".join(
                self.get_key_display(Binding(k.strip(), "")) for k in key.split(",")
            )
        return keys

    # -- the command line ---------------------------------------------------------------------

    def run_command_line(self, text: str) -> None:
        try:
            words = shlex.split(text)
        except ValueError as exc:
            self.notify(f"cannot read that command: {exc}", severity="error")
            return
        if not words:
            return
        verb, args = words[0].lower(), words[1:]
        try:
            self._command(verb, args)
        except (ControlError, PositionError, ValueError) as exc:
            self.notify(str(exc), severity="error", title=verb)

    def _shard_and_rest(self, args: list[str], rest: int) -> tuple[str, list[str]]:
        """[SHARD] then ``rest`` words: the shard defaults to the selected one."""
        if len(args) == rest + 1:
            return args[0], args[1:]
        if len(args) == rest and self.selected_shard is not None:
            return self.selected_shard, args
        raise ControlError(
            f"expected {'[SHARD] ' + ' '.join(['ARG'] * rest) if rest else '[SHARD]'}"
        )

    def _command(self, verb: str, args: list[str]) -> None:
        verb = {"q": "quit"}.get(verb, verb)
        action = BY_ID.get(verb)
        if action is None or action.command is None:
            raise ControlError(f"unknown command '{verb}': {command_help()}")
        if action.changes and self.engine.read_only:
            raise ControlError("read-only: changes are refused")
        if verb == "rewind":
            sid, (target_text,) = self._shard_and_rest(args, 1)
            target = parse_target(target_text, self.clock())
            if target.checkpoint_id is not None:
                self._rewind_to_checkpoint(sid, target.checkpoint_id)
                return
            request = ControlRequest(Action.REWIND, sid, position=target.position, actor=self.actor)
            self._ask(
                ConfirmDialog(
                    self.engine, self.actor, self.clock, request, "Rewind", f"Rewind {sid}?"
                )
            )
        elif verb == "skip":
            sid, (to,) = self._shard_and_rest(args, 1)
            request = ControlRequest(Action.SKIP, sid, skip_to=SkipTo(to), actor=self.actor)
            self._ask(
                ConfirmDialog(
                    self.engine, self.actor, self.clock, request, "Skip", f"Skip {sid} ({to})?"
                )
            )
        elif verb in ("pause", "resume"):
            sid, _ = self._shard_and_rest(args, 0)
            request = ControlRequest(Action(verb), sid, actor=self.actor)
            self._ask(
                ConfirmDialog(
                    self.engine,
                    self.actor,
                    self.clock,
                    request,
                    verb.title(),
                    f"{verb.title()} {sid}?",
                )
            )
        elif verb == "undo":
            self.action_undo(int(args[0].lstrip("#")) if args else None)
        elif verb == "replay":
            dialog = ReplayDialog(self.engine, self.actor, self.clock)
            self._ask(dialog)
            if args:
                parse_when(args[0], self.clock())  # refuse a bad time before the dialog opens
                self.call_after_refresh(lambda: _prefill(dialog, "#time-input", args[0]))
        elif verb == "filter":
            self.dashboard.table.filter_text = " ".join(args)
            self.dashboard.table.rebuild()
        elif verb == "theme":
            if not args or args[0] not in self.available_themes:
                raise ControlError(f"themes: {', '.join(sorted(self.available_themes))}")
            self.theme = args[0]
        elif verb == "help":
            self.action_help()
        elif verb == "workers":
            self.action_workers()
        elif verb == "quit":
            self.run_worker(self.action_quit())

    @work(group="control", exit_on_error=False)
    async def _rewind_to_checkpoint(self, shard_id: str, entry_id: int) -> None:
        try:
            position = await self.engine.checkpoint_position(shard_id, entry_id)
        except ControlError as exc:
            self.notify(str(exc), severity="error")
            return
        request = ControlRequest(Action.REWIND, shard_id, position=position, actor=self.actor)
        self._ask(
            ConfirmDialog(
                self.engine, self.actor, self.clock, request, "Rewind", f"Rewind {shard_id}?"
            )
        )


def _prefill(dialog: Dialog, selector: str, value: str) -> None:
    from textual.widgets import Input

    dialog.query_one(selector, Input).value = value


async def run_tui(engine: Engine, settings: Settings) -> int:
    """Start the engine, run the console over it, stop the engine. Returns the exit code.

    Start-up errors (the stream's lock, say) raise before the screen is taken, so they print
    as one line like everywhere else. Signals are the caller's (console.cli.signals): they stop
    the engine, which closes the console."""
    import sys

    await engine.start()
    if not engine.stopped.is_set():  # else stopped while it started (a signal): no screen
        app = ShardConsoleApp(
            engine,
            refresh_rate=settings.refresh_rate,
            theme=settings.theme,
            keymap=settings.keys,
            duration=settings.duration,
        )
        try:
            await app.run_async()
        finally:
            await engine.stop()
        code = app.return_code  # Textual prints a crash's traceback and sets it non-zero
    else:
        code = 0
    if engine.failure:
        print(f"shard-console: the run failed: {engine.failure}", file=sys.stderr)
        return 1
    return code or 0
