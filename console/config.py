"""Where shard-console keeps things: its configuration folder (the TOML file, user themes) and
its data folder (the default checkpoint database). The settings themselves are console.settings.
"""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "shard-console"


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "shard-console"


def default_config_path() -> Path:
    return config_dir() / "config.toml"


def default_db_path() -> str:
    return str(data_dir() / "checkpoints.db")
