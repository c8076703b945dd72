"""Component styles, safe to ask for before the stylesheet has reached the widget."""

from __future__ import annotations

from rich.style import Style
from textual.widget import Widget

_PLAIN = Style()


def component_style(widget: Widget, name: str) -> Style:
    """The Rich style of a component class from the theme's TCSS, or plain until the widget's
    styles exist (the first tick can come before they do)."""
    return widget.get_component_rich_style(name, default=_PLAIN)
