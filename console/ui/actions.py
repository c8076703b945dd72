"""Every action of the console, in one place.

The app's key bindings, the command palette, the help screen, the ``:`` command line and the
read-only gating are all made from :data:`ACTIONS`, so an action cannot appear in one of them
and be missing from another. ``changes`` says whether the action changes checkpoints:
``--read-only`` hides and refuses exactly those. :data:`NAVIGATION` holds the keys of the shard
table and the screens, which the help screen lists and remapping reaches too.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType


@dataclass(frozen=True, slots=True)
class Action:
    id: str  # binding id, the app's action_<id>, and the word the ':' command line takes
    key: str | None  # default key(s), comma-separated; None: on the command line only
    label: str  # the footer's word
    help: str  # the help screen's line
    palette: str | None = None  # the command palette's title; None: not in the palette
    changes: bool = False  # changes checkpoints: read-only hides and refuses it
    footer: bool = True
    command: str | None = None  # the ':' command line's syntax; None: not a command

    @property
    def binding(self) -> Binding:
        assert self.key is not None
        return Binding(self.key, self.id, self.label, show=self.footer, id=self.id)


ACTIONS: tuple[Action, ...] = (
    Action(
        "rewind",
        "r",
        "Rewind",
        "rewind the shard: start, a time, a sequence number, a previous checkpoint",
        palette="Rewind the selected shard…",
        changes=True,
        command="rewind [SHARD] TARGET (trim_horizon, -15m, time, sequence:N, checkpoint:ENTRY)",
    ),
    Action(
        "skip",
        "s",
        "Skip",
        "skip: to the tip, past the failing record, or mark done",
        palette="Skip the selected shard…",
        changes=True,
        command="skip [SHARD] latest|next-record|done",
    ),
    Action(
        "pause",
        "p",
        "Pause/resume",
        "pause or resume the shard",
        palette="Pause or resume the selected shard",
        changes=True,
        command="pause [SHARD]",
    ),
    Action(
        "resume",
        None,
        "Resume",
        "resume a paused shard",
        changes=True,
        command="resume [SHARD]",
    ),
    Action(
        "undo",
        "u",
        "Undo",
        "undo the last change (or change ID)",
        palette="Undo the last change",
        changes=True,
        command="undo [ID]",
    ),
    Action(
        "replay",
        "R",
        "Replay all",
        "replay every shard from a time (type the stream name to confirm)",
        palette="Replay every shard from a time…",
        changes=True,
        command="replay [TIME]",
    ),
    Action(
        "filter",
        "slash",
        "Filter",
        "filter shards by id or status",
        palette="Filter shards…",
        command="filter TEXT",
    ),
    Action(
        "command",
        "colon",
        "Command",
        "command line: every action here by its word",
        palette="Command line…",
        footer=False,
    ),
    Action(
        "workers",
        "w",
        "Workers",
        "fleet mode: every worker, its host, leases, records/s and last heartbeat",
        palette="Show the fleet's workers",
        footer=False,
        command="workers",
    ),
    Action("theme", None, "Theme", "switch the colour theme", command="theme NAME"),
    Action("help", "question_mark", "Help", "this help", palette="Show the keys", command="help"),
    Action(
        "quit",
        "q",
        "Quit",
        "quit: finish batches in hand, flush checkpoints",
        palette="Quit (flush checkpoints)",
        command="quit",
    ),
)

BY_ID = {a.id: a for a in ACTIONS}
CHANGES = frozenset(a.id for a in ACTIONS if a.changes)


@dataclass(frozen=True, slots=True)
class Navigation:
    id: str
    key: str  # default key(s) as the help screen shows them
    help: str


NAVIGATION: tuple[Navigation, ...] = (
    Navigation("up", "↑ k", "move up"),
    Navigation("down", "↓ j", "move down"),
    Navigation("detail", "enter", "open the shard's detail"),
    Navigation("back", "esc", "back / close"),
    Navigation("fold", "space", "fold or unfold a subtree"),
    Navigation("records", "o", "in a shard's detail: its records, page by page (n, b, / search)"),
    Navigation("palette", "ctrl+p", "command palette: every action by name"),
)


def app_bindings() -> list[BindingType]:
    """The app's bindings: every action that has a key; the footer starts with the ways out."""
    first = ("quit", "help")
    keyed = [a for a in ACTIONS if a.key is not None]
    ordered = [BY_ID[i] for i in first] + [a for a in keyed if a.id not in first]
    return [a.binding for a in ordered]


def allowed(action_id: str, read_only: bool, in_dialog: bool) -> bool:
    """Read-only hides and refuses changes; a dialog in front blocks every action but quit."""
    action = BY_ID.get(action_id)
    if action is None:
        return True  # not ours (Textual's own, a widget's)
    if action.changes and read_only:
        return False
    return not (in_dialog and action.id != "quit")


def command_help() -> str:
    """The ':' commands, for the command line's placeholder and its errors."""
    return " · ".join(a.command for a in ACTIONS if a.command)
