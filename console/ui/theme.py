"""Themes: ours (top-level themes/, installed as console.themes), the user's
(~/.config/shard-console/themes/*.toml) and Textual's built-in ones, all by name."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from textual.theme import BUILTIN_THEMES, Theme

from console.config import config_dir
from console.errors import UsageError

DEFAULT_THEME = "shard-dark"
_FIELDS = {
    "name", "primary", "secondary", "warning", "error", "success", "accent", "foreground",
    "background", "surface", "panel", "boost", "dark", "luminosity_spread", "text_alpha",
    "variables",
}  # fmt: skip


def theme_from_toml(text: str, origin: str) -> Theme:
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"theme {origin} is not valid TOML: {exc}") from None
    unknown = set(data) - _FIELDS
    if unknown:
        raise UsageError(f"theme {origin}: unknown key(s) {', '.join(sorted(unknown))}")
    if not isinstance(data.get("name"), str) or not isinstance(data.get("primary"), str):
        raise UsageError(f"theme {origin} needs at least a name and a primary colour")
    try:
        return Theme(**data)
    except Exception as exc:
        raise UsageError(f"theme {origin} is invalid: {exc}") from None


def load_themes() -> dict[str, Theme]:
    """Ours, then the user's (a user theme may replace one of ours by name)."""
    themes: dict[str, Theme] = {}
    for entry in sorted(resources.files("console.themes").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            theme = theme_from_toml(entry.read_text(encoding="utf-8"), entry.name)
            themes[theme.name] = theme
    user = config_dir() / "themes"
    if user.is_dir():
        for path in sorted(Path(user).glob("*.toml")):
            theme = theme_from_toml(path.read_text(encoding="utf-8"), str(path))
            themes[theme.name] = theme
    return themes


def available_themes() -> list[str]:
    return sorted({*load_themes(), *BUILTIN_THEMES})


def check_theme(name: str) -> None:
    names = available_themes()
    if name not in names:
        raise UsageError(f"unknown theme '{name}': choose one of {', '.join(names)}")
