"""Themes shipped with shard-console: one TOML file per Textual theme.

Installed as the package ``console.themes`` (see pyproject.toml) and loaded by
``console.ui.theme``. Users add their own in ``~/.config/shard-console/themes/*.toml``.
"""
