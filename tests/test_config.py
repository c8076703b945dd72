from pathlib import Path

import pytest

from console.config import load_settings
from console.errors import UsageError


def test_defaults_without_any_layer(tmp_path: Path) -> None:
    """The defaults the README documents, one by one."""
    settings, path = load_settings({}, env={})
    assert path is None
    assert (settings.db, settings.processor, settings.initial_position) == (
        None,  # the default path: ~/.local/share/shard-console/checkpoints.db
        "null",
        "trim_horizon",
    )
    assert (
        settings.flush_interval,
        settings.discovery_interval,
        settings.idle_interval,
        settings.status_interval,
        settings.processor_timeout,
    ) == (5.0, 30.0, 1.0, 5.0, 300.0)
    assert (settings.theme, settings.refresh_rate, settings.log_format) == (
        "shard-dark",
        4.0,
        "text",
    )
    assert not settings.no_ui and not settings.read_only and settings.keys == {}
    assert settings.max_records is None and settings.duration is None
    assert settings.records_per_call is None and settings.inject_faults is None
    assert (settings.metrics_port, settings.metrics_host) == (None, "127.0.0.1")


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'flush_interval = 7\nprocessor = "print"\ndb = "from-file.db"\n[keys]\nquit = "ctrl+q"\n'
    )
    env = {"SHARD_CONSOLE_FLUSH_INTERVAL": "3", "SHARD_CONSOLE_PROCESSOR": "null"}
    settings, path = load_settings({"flush_interval": 1.5}, env=env, config=str(cfg))
    assert path == cfg
    assert settings.flush_interval == 1.5
    assert settings.processor == "null"
    assert settings.db == "from-file.db"
    assert settings.keys == {"quit": "ctrl+q"}


def test_metrics_settings_from_the_file_and_the_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('metrics_port = 9108\nmetrics_host = "0.0.0.0"\n')
    settings, _ = load_settings({}, env={}, config=str(cfg))
    assert (settings.metrics_port, settings.metrics_host) == (9108, "0.0.0.0")
    settings, _ = load_settings({}, env={"SHARD_CONSOLE_METRICS_PORT": "0"}, config=str(cfg))
    assert settings.metrics_port == 0


def test_config_from_environment_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("no_ui = true\nmax_records = 10\n")
    settings, _ = load_settings({}, env={"SHARD_CONSOLE_CONFIG": str(cfg)})
    assert settings.no_ui is True and settings.max_records == 10


@pytest.mark.parametrize(
    ("flags", "env", "text", "message"),
    [
        ({}, {}, "duration = -1\n", "positive"),
        ({}, {}, "max_records = 2.5\n", "whole number"),
        ({}, {}, "log_format = 'xml'\n", "one of text, json"),
        ({}, {}, "records_per_call = 20000\n", "between 1 and 10000"),
        ({}, {}, "no_ui = 'maybe'\n", "true or false"),
        ({}, {}, "keys = 3\n", "binding ids"),
        ({}, {}, "[run]\nstream = 'x'\n", r"unknown key\(s\) run"),
        ({}, {}, "flush_interval = \n", "not valid TOML"),
        ({}, {"SHARD_CONSOLE_IDLE_INTERVAL": "soon"}, "", "number of seconds"),
        ({"processor_timeout": -1.0}, {}, "", "zero or more"),
        ({}, {"SHARD_CONSOLE_METRICS_PORT": "http"}, "", "must be a port number"),
        ({}, {}, "metrics_port = 70000\n", "between 0 and 65535"),
    ],
)
def test_bad_values_are_usage_errors(
    tmp_path: Path, flags: dict, env: dict, text: str, message: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(UsageError, match=message):
        load_settings(flags, env=env, config=str(cfg))


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_settings({}, env={}, config=str(tmp_path / "nope.toml"))
