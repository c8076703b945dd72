"""The ``[keys]`` of the config file, checked before the console starts: every id must be a
binding's, and a key given to one must not already be another's where both are active (a key
bound twice silently loses one of them in the footer and in use)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from textual.binding import Binding, BindingType

from console.errors import UsageError
from console.ui.actions import app_bindings
from console.ui.screens.detail import ShardDetailScreen
from console.ui.screens.records import RecordsScreen
from console.ui.widgets.shard_table import ShardTable


def _keys(text: str) -> set[str]:
    return {k.strip() for k in text.split(",") if k.strip()}


def _with_ids(bindings: Iterable[BindingType]) -> dict[str, str]:
    return {b.id: b.key for b in bindings if isinstance(b, Binding) and b.id is not None}


def contexts() -> dict[str, dict[str, str]]:
    """Where bindings are active together (binding id -> its default keys): the app's actions
    over the shard table, a shard's detail, its records."""
    app = _with_ids(app_bindings())
    return {
        "the shard table": {**app, **_with_ids(ShardTable.BINDINGS)},
        "a shard's detail": {**app, **_with_ids(ShardDetailScreen.BINDINGS)},
        "the records browser": {**app, **_with_ids(RecordsScreen.BINDINGS)},
    }


def check_keymap(keymap: Mapping[str, str]) -> None:
    """A UsageError naming what is wrong: an unknown id, or a key taken twice."""
    where = contexts()
    known = sorted({i for bindings in where.values() for i in bindings})
    unknown = sorted(set(keymap) - set(known))
    if unknown:
        raise UsageError(
            f"[keys]: unknown binding id(s) {', '.join(unknown)}; the ids are "
            f"{', '.join(known)} (? in the console lists them)"
        )
    for context, defaults in where.items():
        bound = {i: _keys(keymap.get(i, key)) for i, key in defaults.items()}
        for given in sorted(set(keymap) & set(bound)):
            for other, keys in sorted(bound.items()):
                both = bound[given] & keys
                if other != given and both:
                    raise UsageError(
                        f"[keys]: {', '.join(sorted(both))} would be both {given} and {other} "
                        f"in {context}: give one of them another key"
                    )
