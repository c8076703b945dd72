"""The Textual console. Imported only when the TUI runs: the engine never imports it."""
