"""Settings: flags > environment (``SHARD_CONSOLE_*``) > TOML file > defaults.

The TOML file has the same keys as the long flags, with underscores (``flush_interval = 5``),
plus a ``[keys]`` table for key bindings. An unknown key is an error, not a silent typo.
AWS credentials are never read here: boto3's credential chain finds them, as it always does.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from console.errors import UsageError

ENV_PREFIX = "SHARD_CONSOLE_"


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


# -- value parsers: each takes a TOML value or an environment string ---------------------------


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{name} must be a non-empty string")
    return value.strip()


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    return float(value)


def _positive(name: str, value: Any) -> float:
    try:
        number = _number(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number of seconds, not {value!r}") from None
    if not number > 0:
        raise UsageError(f"{name} must be a positive number of seconds, not {value!r}")
    return number


def _non_negative(name: str, value: Any) -> float:
    try:
        number = _number(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number of seconds, not {value!r}") from None
    if number < 0:
        raise UsageError(f"{name} must be zero or more seconds, not {value!r}")
    return number


def _count(name: str, value: Any, high: int | None = None) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a whole number, not {value!r}") from None
    if number < 1 or (high is not None and number > high):
        bound = f"between 1 and {high}" if high else "1 or more"
        raise UsageError(f"{name} must be {bound}, not {value!r}")
    return number


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise UsageError(f"{name} must be true or false, not {value!r}")


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise UsageError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return text

    return parse


def _fan_out(name: str, value: Any) -> str | None:
    """A stream consumer's name, or true for the default one; false for polling."""
    if isinstance(value, bool):
        return "" if value else None
    text = str(value).strip()
    if text.lower() in ("1", "true", "yes", "on"):
        return ""
    if text.lower() in ("0", "false", "no", "off", ""):
        return None
    return text


def _records_per_call(name: str, value: Any) -> int:
    return _count(name, value, 10_000)


def _max_records(name: str, value: Any) -> int:
    return _count(name, value)


def _rate(name: str, value: Any) -> float:
    try:
        number = _number(value)
    except (TypeError, ValueError):
        raise UsageError(
            f"{name} must be a number of refreshes per second, not {value!r}"
        ) from None
    if not 0.2 <= number <= 60:
        raise UsageError(f"{name} must be between 0.2 and 60 per second, not {value!r}")
    return number


def _port(name: str, value: Any) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a port number, not {value!r}") from None
    if not 0 <= number <= 65535:
        raise UsageError(f"{name} must be a port between 0 and 65535 (0: any free one)")
    return number


def _keymap(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UsageError(f'[{name}] must map binding ids to keys, as in quit = "ctrl+q"')
    return dict(value)


@dataclass(frozen=True, slots=True)
class Settings:
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    db: str | None = None  # None: the default path (demo: a temporary file)
    processor: str = "null"
    initial_position: str = "trim_horizon"
    no_ui: bool = False
    duration: float | None = None
    max_records: int | None = None
    log_format: str = "text"
    discovery_interval: float = 30.0
    flush_interval: float = 5.0
    idle_interval: float = 1.0
    status_interval: float = 5.0
    processor_timeout: float = 300.0  # 0: wait forever
    records_per_call: int | None = None
    inject_faults: str | None = None
    theme: str = "shard-dark"
    refresh_rate: float = 4.0  # UI snapshot reads per second
    read_only: bool = False
    keys: dict[str, str] = field(default_factory=dict)
    # Fleet mode: several processes share the stream through a KCL lease table.
    lease_table: str | None = None
    worker_id: str | None = None
    failover_time: float = 10.0
    dynamodb_endpoint_url: str | None = None  # default: endpoint_url
    no_create_table: bool = False
    take_over: bool = False
    # /metrics, /healthz, /readyz, /status on one HTTP server in the process (None: none).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # How GetRecords and the shard listings are read: "fast" (past botocore's parser) or
    # "botocore" (through the client's methods, as every other call).
    read_path: str = "fast"
    # Enhanced fan-out: the stream consumer's name ("" for the default one; None: polling).
    fan_out: str | None = None
    deregister_on_exit: bool = False


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "endpoint_url": _text,
    "region": _text,
    "profile": _text,
    "db": _text,
    "processor": _text,
    "initial_position": _text,
    "no_ui": _flag,
    "duration": _positive,
    "max_records": _max_records,
    "log_format": _choice("text", "json"),
    "discovery_interval": _positive,
    "flush_interval": _positive,
    "idle_interval": _positive,
    "status_interval": _positive,
    "processor_timeout": _non_negative,
    "records_per_call": _records_per_call,
    "inject_faults": _text,
    "theme": _text,
    "refresh_rate": _rate,
    "read_only": _flag,
    "keys": _keymap,
    "lease_table": _text,
    "worker_id": _text,
    "failover_time": _positive,
    "dynamodb_endpoint_url": _text,
    "no_create_table": _flag,
    "take_over": _flag,
    "metrics_port": _port,
    "metrics_host": _text,
    "read_path": _choice("fast", "botocore"),
    "fan_out": _fan_out,
    "deregister_on_exit": _flag,
}
assert set(_PARSERS) == {f.name for f in fields(Settings)}


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except PermissionError:
        raise UsageError(f"cannot read config file {path}: permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(_PARSERS))
    if unknown:
        raise UsageError(
            f"config file {path}: unknown key(s) {', '.join(unknown)}; known keys: "
            f"{', '.join(sorted(_PARSERS))}"
        )
    return data


def load_settings(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    config: str | None = None,
) -> tuple[Settings, Path | None]:
    """Merge the three layers; returns the settings and the config file used, if any.

    ``flags`` holds only what was given on the command line (None means "not given")."""
    env = os.environ if env is None else env
    path: Path | None = None
    explicit = config or env.get(f"{ENV_PREFIX}CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        file_values = read_toml(path)
    elif default_config_path().is_file():
        path = default_config_path()
        file_values = read_toml(path)
    else:
        file_values = {}
    values: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        flag = flags.get(name)
        env_value = env.get(f"{ENV_PREFIX}{name.upper()}")
        if flag is not None:
            values[name] = parse(f"--{name.replace('_', '-')}", flag)
        elif env_value is not None and name != "keys":
            values[name] = parse(f"{ENV_PREFIX}{name.upper()}", env_value)
        elif name in file_values:
            values[name] = parse(f"{name} (in {path})", file_values[name])
    return Settings(**values), path
