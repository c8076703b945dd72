"""Every setting, declared once: its name, flag, environment variable, TOML key, parser,
default, help and the commands that take it. Flags win over the environment
(``SHARD_CONSOLE_`` + the name in capitals), which wins over the TOML file (``--config FILE``,
``SHARD_CONSOLE_CONFIG``, or ~/.config/shard-console/config.toml), which wins over the defaults.

:class:`Settings` is the table: each field's metadata is its row. From it come the command
line's flags (:func:`add_flags`), the loader (:func:`load_settings`, one parser per setting
for a flag, a variable and a key alike, so all three say the same thing of a bad value), the
consumer's options (console.engine.consume.options takes its defaults from here, and
console.cli.launch fills it), ``shard-console info`` and the README's table (:func:`markdown`,
checked against README.md by the tests).

An unknown key, an unknown ``SHARD_CONSOLE_*`` variable, a malformed file or a value that
makes no sense (a negative, infinite or non-numeric duration) is an exit-2 usage error. AWS
credentials are never read here: boto3's credential chain finds them, as it always does.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from console.config import default_config_path
from console.errors import UsageError
from console.setting_values import (
    assignment_interval,
    choice,
    dead_letter,
    failover,
    fan_out,
    flag,
    keymap,
    max_records,
    non_negative,
    port,
    positive,
    records_per_call,
    refresh_rate,
    retries,
    text,
)

ENV_PREFIX = "SHARD_CONSOLE_"
# Variables of ours that are not settings: where the settings are, a serve token, tracebacks.
OTHER_VARIABLES = frozenset({"CONFIG", "TOKEN", "DEBUG"})

# The commands a setting can be a flag of.
RUN, DEMO, ATTACH, SERVE = "run", "demo", "attach", "serve"
CHANGE = "change"  # rewind, skip, pause, resume, replay, undo
READ = "read"  # checkpoints [list|history]
LEASES = "leases"  # leases list|show
TAIL = "tail"
CONSUMERS = frozenset({RUN, DEMO})
CONSOLES = frozenset({RUN, DEMO, ATTACH})
STORES = frozenset({RUN, ATTACH, SERVE, CHANGE, READ, LEASES})
AWS = STORES | {TAIL}


# -- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One setting's row (a field of :class:`Settings` carries it)."""

    parse: Callable[[str, Any], Any]
    help: str
    scope: frozenset[str]  # the commands it is a flag of (none: the file only)
    metavar: str | None = None  # None: a flag that takes no value (true when given)
    group: str | None = None  # run's flag group
    const: Any = None  # a value the flag may omit (nargs="?"): this is used then
    shown: str | None = None  # the default, in words, where the value says little


def setting(
    default: Any,
    parse: Callable[[str, Any], Any],
    help: str,
    scope: Iterable[str],
    metavar: str | None = None,
    **more: Any,
) -> Any:
    return field(
        default=default, metadata={"row": Row(parse, help, frozenset(scope), metavar, **more)}
    )


FLEET = "fleet mode"


@dataclass(frozen=True, slots=True)
class Settings:
    endpoint_url: str | None = setting(
        None, text, "the stream's endpoint: a local or private one (kinesalite, LocalStack)", AWS,
        "URL",
    )  # fmt: skip
    region: str | None = setting(None, text, "AWS region (default: the profile's)", AWS, "R")
    profile: str | None = setting(
        None, text, "AWS profile (credentials as boto3 finds them)", AWS, "P"
    )
    db: str | None = setting(
        None, text, "the SQLite checkpoint database (demo: a temporary one)",
        CONSUMERS | {ATTACH, SERVE, CHANGE, READ, "info"}, "PATH",
        shown="~/.local/share/shard-console/checkpoints.db",
    )  # fmt: skip
    processor: str = setting(
        "null", text, "null, print, jsonl:PATH or package.module:function", CONSUMERS, "SPEC"
    )
    initial_position: str = setting(
        "trim_horizon", text,
        "where a stream new to the store starts: trim_horizon, latest, at_timestamp:ISO8601",
        {RUN}, "POS",
    )  # fmt: skip
    no_ui: bool = setting(False, flag, "run headless: log lines, no console", CONSOLES)
    duration: float | None = setting(
        None, positive, "stop after this long", CONSOLES, "SECONDS", shown="run until stopped"
    )
    max_records: int | None = setting(
        None, max_records, "stop after processing N records", CONSUMERS, "N", shown="no limit"
    )
    log_format: str = setting(
        "text", choice("text", "json"), "headless log lines: text or json", CONSOLES, "FORMAT"
    )
    discovery_interval: float = setting(
        30.0, positive, "seconds between two listings of the stream's shards", CONSUMERS,
        "SECONDS",
    )  # fmt: skip
    flush_interval: float = setting(
        5.0, positive, "seconds between two checkpoint flushes (SQLite; a lease table's follow "
        "its renewals)", CONSUMERS, "SECONDS",
    )  # fmt: skip
    idle_interval: float = setting(
        1.0, positive, "seconds a caught-up shard waits before it reads again", CONSUMERS,
        "SECONDS",
    )  # fmt: skip
    status_interval: float = setting(
        5.0, positive, "seconds between two headless status lines", CONSOLES, "SECONDS"
    )
    processor_timeout: float = setting(
        300.0, non_negative, "a batch not processed within this stops the run (0: wait forever)",
        CONSUMERS, "SECONDS",
    )  # fmt: skip
    retries: int = setting(
        3, retries, "attempts of a batch the processor fails on, with backoff, before "
        "--on-failure park parks what fails in it", CONSUMERS, "N",
    )  # fmt: skip
    on_failure: str = setting(
        "block", choice("block", "park"), "a batch the processor keeps failing on: block "
        "(retry until it passes or an operator skips) or park (after the retries, the failing "
        "records found by bisection and set aside; the shard reads on)", CONSUMERS, "POLICY",
    )  # fmt: skip
    max_record_age: float | None = setting(
        None, positive, "with park: a failing record older than this is parked without "
        "waiting for the retries", CONSUMERS, "SECONDS", shown="no limit",
    )  # fmt: skip
    dead_letter: str | None = setting(
        None, dead_letter, "with park: where parked records also go: jsonl:PATH, "
        "sqs:QUEUE_URL, kinesis:STREAM or s3://bucket/prefix",
        CONSUMERS, "SPEC", shown="the checkpoint database only",
    )  # fmt: skip
    records_per_call: int | None = setting(
        None, records_per_call, "records a read asks for (at most the service's 10,000)",
        CONSUMERS, "N", shown="the service's maximum",
    )  # fmt: skip
    inject_faults: str | None = setting(
        None, text, "rehearse incidents: throttle=0.1,http500=0.05,reset=0.05,timeout=0.05,"
        "expired=0.05[,seed=N], a fraction of the read calls (GetRecords, GetShardIterator, "
        "ListShards, DescribeStream, SubscribeToShard)", CONSUMERS, "SPEC", shown="none",
    )  # fmt: skip
    theme: str = setting(
        "shard-dark", text, "shard-dark, shard-light, or any Textual theme",
        CONSOLES | {SERVE}, "NAME",
    )  # fmt: skip
    refresh_rate: float = setting(
        4.0, refresh_rate, "console redraws per second", CONSOLES | {SERVE}, "HZ"
    )
    read_only: bool = setting(
        False, flag, "watch only: every change (rewind, skip, pause, undo, replay) is refused",
        CONSOLES | {CHANGE},
    )  # fmt: skip
    keys: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "row": Row(
                keymap, "key bindings by binding id ([keys] in the file; ? lists the ids)",
                frozenset(),
            )
        },
    )  # fmt: skip
    lease_table: str | None = setting(
        None, text, "a KCL lease table in DynamoDB (the KCL's application name): run shares the "
        "stream through it (fleet mode; created if absent, unless --no-create-table), the other "
        "commands read and change it", STORES, "TABLE", group=FLEET,
    )  # fmt: skip
    worker_id: str | None = setting(
        None, text, "this worker's name in leaseOwner", {RUN}, "ID", group=FLEET,
        shown="host-pid-random",
    )  # fmt: skip
    failover_time: float = setting(
        10.0, failover, "a lease not renewed for this long is taken over (minimum 3)",
        {RUN, ATTACH, SERVE}, "SECONDS", group=FLEET,
    )  # fmt: skip
    assignment_interval: float | None = setting(
        None, assignment_interval, "KCL 3.x fleets: how often the leader assigns leases and a "
        "worker holding none looks for them (the KCL's leaseAssignmentIntervalMillis, 2 x "
        "failover by default there): shorter moves leases sooner, longer costs fewer requests",
        {RUN}, "SECONDS", group=FLEET, shown="failover/4, at least 1",
    )  # fmt: skip
    dynamodb_endpoint_url: str | None = setting(
        None, text, "the lease table's DynamoDB endpoint", STORES, "URL", group=FLEET,
        shown="--endpoint-url",
    )  # fmt: skip
    no_create_table: bool = setting(
        False, flag, "refuse to start when the lease table does not exist", {RUN}, group=FLEET
    )
    take_over: bool = setting(
        False, flag, "run even though live workers that are not shard-console's (or a KCL 3.x "
        "application) use the table", {RUN}, group=FLEET,
    )  # fmt: skip
    metrics_port: int | None = setting(
        None, port, "serve /metrics, /healthz, /readyz and /status on this port (0: any free "
        "one; the address is logged)", CONSUMERS, "PORT", shown="none",
    )  # fmt: skip
    metrics_host: str = setting(
        "127.0.0.1", text, "the address they listen on (0.0.0.0 in a container)", CONSUMERS,
        "ADDR",
    )  # fmt: skip
    read_path: str = setting(
        "fast", choice("fast", "botocore"), "GetRecords and shard listings: fast (signed by "
        "botocore, decoded past its parser) or botocore (its client methods)", CONSUMERS,
        "PATH",
    )  # fmt: skip
    fan_out: str | None = setting(
        None, fan_out, "read through enhanced fan-out (SubscribeToShard) as the stream "
        "consumer NAME, registered if absent (without NAME: the lease table's name, or "
        "shard-console; in the file or environment true or false)", CONSUMERS, "NAME",
        const=True, shown="polling",
    )  # fmt: skip
    deregister_on_exit: bool = setting(
        False, flag, "with --fan-out: deregister the stream consumer when the run ends",
        CONSUMERS,
    )  # fmt: skip
    scan_interval: float = setting(
        2.0, positive, "seconds between two scans of the lease table", {ATTACH, SERVE},
        "SECONDS",
    )  # fmt: skip
    lag_interval: float = setting(
        10.0, positive, "seconds between two lag reads of one shard (10: 2% of its read limit)",
        {ATTACH, SERVE}, "SECONDS",
    )  # fmt: skip


def rows() -> list[tuple[Field[Any], Row]]:
    return [(f, f.metadata["row"]) for f in fields(Settings)]


def default(name: str) -> Any:
    """A setting's default: what the engine's own options start from."""
    for f, _ in rows():
        if f.name == name:
            return f.default
    raise KeyError(name)


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    return ENV_PREFIX + name.upper()


# -- the command line -----------------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser, command: str, *, given_only: bool = False) -> None:
    """The settings that are flags of ``command``, and ``--config``. Values stay text: the
    loader parses them as it parses the environment and the file. ``given_only``: a
    sub-command's copy of its parent's flags, set only when given there."""
    extra: dict[str, Any] = {"default": argparse.SUPPRESS} if given_only else {}
    groups: dict[str, Any] = {}
    for f, row in rows():
        if command not in row.scope:
            continue
        target: Any = parser
        if row.group is not None and command == RUN:
            if row.group not in groups:
                groups[row.group] = parser.add_argument_group(
                    row.group,
                    "several processes share the stream through a KCL lease table in DynamoDB",
                )
            target = groups[row.group]
        name = flag_of(f.name)
        if row.metavar is None:
            target.add_argument(name, action="store_const", const=True, help=row.help, **extra)
            continue
        kwargs: dict[str, Any] = {"metavar": row.metavar, "help": _help(f, row)}
        choices = getattr(row.parse, "choices", None)
        if choices is not None:  # shown as argparse shows choices; checked by the setting's parser
            kwargs["metavar"] = "{" + ",".join(choices) + "}"
        if row.const is not None:
            kwargs.update(nargs="?", const=row.const)
        target.add_argument(name, **kwargs, **extra)
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file", **extra)


def _help(f: Field[Any], row: Row) -> str:
    shown = row.shown or (None if f.default is None else _plain(f.default))
    return row.help + (f" (default: {shown})" if shown else "")


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def flags_given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (None: not given)."""
    return {f.name: getattr(args, f.name, None) for f, _ in rows()}


# -- loading --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loaded:
    settings: Settings
    path: Path | None  # the TOML file read, if any
    sources: dict[str, str]  # setting -> where its value came from: flag, environment, file


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except PermissionError:
        raise UsageError(f"cannot read config file {path}: permission denied") from None
    except IsADirectoryError:
        raise UsageError(f"config file {path} is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from None
    known = {f.name for f, _ in rows()}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(
            f"config file {path}: unknown key(s) {', '.join(unknown)}; known keys: "
            f"{', '.join(sorted(known))}"
        )
    return data


def config_path(config: str | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    """The TOML file settings come from, and whether it was named (a named one must exist)."""
    explicit = config or env.get(f"{ENV_PREFIX}CONFIG")
    if explicit:
        return Path(explicit).expanduser(), True
    return default_config_path(), False


def check_environment(env: Mapping[str, str]) -> None:
    """A ``SHARD_CONSOLE_*`` variable that is no setting of ours is a typo: said, not
    ignored."""
    known = {f.name.upper() for f, _ in rows() if f.name != "keys"}
    for name in sorted(env):
        if name.startswith(ENV_PREFIX):
            rest = name[len(ENV_PREFIX) :]
            if rest not in known and rest not in OTHER_VARIABLES:
                close = sorted(k for k in known if _near(k, rest))
                hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
                raise UsageError(
                    f"unknown environment variable {name}{hint}: unset it, or see "
                    "shard-console info for the settings"
                )


def _near(a: str, b: str) -> bool:
    """Within one insertion, deletion or substitution."""
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b, strict=True)) <= 1
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


def load(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    config: str | None = None,
    *,
    read_file: bool = True,
) -> Loaded:
    """Merge the three layers over the defaults. ``flags`` holds what was given on the command
    line (None: not given). ``read_file`` False: no file at all (``info`` showing the rest
    when the named one is missing)."""
    env = os.environ if env is None else env
    check_environment(env)
    candidate, named = config_path(config, env)
    path = candidate if read_file and (named or candidate.is_file()) else None
    file_values = read_toml(path) if path is not None else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for f, row in rows():
        name = f.name
        given = flags.get(name)
        from_env = env.get(env_of(name)) if name != "keys" else None
        if given is not None:
            if name == "fan_out" and isinstance(given, str):
                values[name] = given  # a name on the command line is a name, even "no"
            else:
                values[name] = row.parse(flag_of(name), given)
            sources[name] = "flag"
        elif from_env is not None:
            values[name] = row.parse(env_of(name), from_env)
            sources[name] = "environment"
        elif name in file_values:
            values[name] = row.parse(f"{name} (in {path})", file_values[name])
            sources[name] = "file"
    return Loaded(Settings(**values), path, sources)


def load_settings(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    config: str | None = None,
) -> tuple[Settings, Path | None]:
    """The settings, and the config file used, if any."""
    loaded = load(flags, env, config)
    return loaded.settings, loaded.path


# -- what people read -----------------------------------------------------------------------------

_COMMAND_WORDS = {
    RUN: "run",
    DEMO: "demo",
    ATTACH: "attach",
    SERVE: "serve",
    CHANGE: "changes",
    READ: "checkpoints",
    LEASES: "leases",
    TAIL: "tail",
    "info": "info",
}


def markdown() -> str:
    """The README's table of settings."""
    lines = [
        "| setting (TOML key) | flag | environment | default | what | commands |",
        "|---|---|---|---|---|---|",
    ]
    order = list(_COMMAND_WORDS)
    for f, row in rows():
        name = f.name
        flag_text = f"`{flag_of(name)}`" if row.scope else "-"
        env_text = f"`{env_of(name)}`" if name != "keys" else "-"
        key = "`[keys]`" if name == "keys" else f"`{name}`"
        shown = row.shown or ("" if f.default is None else _plain(f.default))
        if name == "keys":
            shown = "none"
        commands = ", ".join(_COMMAND_WORDS[c] for c in order if c in row.scope) or "file only"
        lines.append(
            f"| {key} | {flag_text} | {env_text} | {shown or '-'} | {row.help} | {commands} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m console.settings: the README's table
    print(markdown(), end="")
