"""The headless program as an operator runs it: a subprocess, real endpoints, real files."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Kinesis, checkpoints_in, numbered, run_cli, unique


def past(instant: float) -> float:
    """Until the clock is past ``instant``; returns it."""
    while time.time() <= instant + 0.01:
        time.sleep(0.002)
    return instant


def one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0], lines[0]


def test_without_a_terminal_the_console_says_to_run_headless(tmp_path: Path) -> None:
    result = run_cli("demo", env={"SHARD_CONSOLE_NO_UI": "0"})
    one_line_error(result, "needs a terminal: pass --no-ui")


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.startswith("shard-console ")
    out = run_cli("run", "--help").stdout
    for flag in ("--endpoint-url", "--initial-position", "--processor", "--max-records"):
        assert flag in out


@pytest.fixture
async def stream(kinesalite: str) -> str:
    name = unique()
    await Kinesis(kinesalite).create(name, 2)
    await Kinesis(kinesalite).put(name, numbered(100))
    return name


def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    db = tmp_path / "c.db"
    base = ["run", stream, "--endpoint-url", kinesalite, "--db", str(db), "--no-ui"]
    cases = [
        (
            ["run", "no-such-stream", "--endpoint-url", kinesalite, "--db", str(db)],
            set(),
            "not found",
        ),
        (
            ["run", stream, "--endpoint-url", "http://127.0.0.1:9", "--db", str(db)],
            set(),
            "cannot reach",
        ),
        (base, {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}, "no AWS credentials"),
        ([*base, "--initial-position", "yesterday"], set(), "invalid initial position"),
        ([*base, "--initial-position", "at_timestamp:soon"], set(), "ISO 8601"),
        ([*base, "--processor", "frobnicate"], set(), "unknown processor"),
        (
            [*base, "--processor", "no_such_module_xyz:handle"],
            set(),
            "cannot import processor module",
        ),
        ([*base, "--processor", "json:nope"], set(), "has no attribute"),
        ([*base, "--processor", "json:decoder"], set(), "is not callable"),
        ([*base, "--duration", "-5"], set(), "positive"),
        ([*base, "--db", str(tmp_path / "missing" / "c.db")], set(), "does not exist"),
        ([*base, "--db", str(tmp_path)], set(), "is not a file"),
    ]
    for args, unset, needle in cases:
        full_env = {k: v for k, v in os.environ.items() if k not in unset}
        result = subprocess.run(
            [sys.executable, "-m", "console", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=full_env,
            check=False,
        )
        one_line_error(result, needle)
        assert not db.exists(), f"{args} wrote {db}"


def test_processor_that_fails_to_import_is_a_usage_error(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    (tmp_path / "broken_proc.py").write_text("raise RuntimeError('boom at import')\n")
    result = run_cli(
        "run",
        stream,
        "--endpoint-url",
        kinesalite,
        "--db",
        str(tmp_path / "c.db"),
        "--processor",
        "broken_proc:handle",
        env={"PYTHONPATH": str(tmp_path)},
    )
    one_line_error(result, "failed to import: RuntimeError: boom at import")
    assert not (tmp_path / "c.db").exists()


def test_corrupt_and_foreign_databases_are_refused_untouched(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100 + b"garbage" * 1000)
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE accounts (id INTEGER)")
    conn.commit()
    conn.close()
    for path, needle in ((corrupt, "corrupt"), (foreign, "another application")):
        before = path.read_bytes()
        result = run_cli("run", stream, "--endpoint-url", kinesalite, "--db", str(path))
        one_line_error(result, needle)
        assert path.read_bytes() == before


def test_config_file_and_environment_layers(kinesalite: str, stream: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("flush_interval = [")
    one_line_error(run_cli("run", stream, "--config", str(bad)), "not valid TOML")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("flush_intervall = 5\n")
    one_line_error(
        run_cli("run", stream, "--config", str(unknown)), "unknown key(s) flush_intervall"
    )
    one_line_error(run_cli("run", stream, env={"SHARD_CONSOLE_FLUSH_INTERVAL": "-1"}), "positive")
    good = tmp_path / "good.toml"
    out = tmp_path / "out.jsonl"
    good.write_text(
        f'endpoint_url = "{kinesalite}"\ndb = "{tmp_path / "c.db"}"\n'
        f'processor = "jsonl:{out}"\nmax_records = 100\nduration = 20\n'
    )
    result = run_cli(
        "run", stream, "--config", str(good), env={"SHARD_CONSOLE_MAX_RECORDS": "40"}, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # The environment (40) won over the file (100).
    assert len(out.read_text().splitlines()) == 40


def test_headless_run_writes_jsonl_and_exits_cleanly(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    db = tmp_path / "c.db"
    result = run_cli(
        "run",
        stream,
        "--endpoint-url",
        kinesalite,
        "--db",
        str(db),
        "--processor",
        f"jsonl:{out}",
        "--max-records",
        "100",
        "--log-format",
        "json",
        "--status-interval",
        "0.5",
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 100
    assert set(rows[0]) == {
        "stream",
        "shard_id",
        "sequence_number",
        "sub_sequence_number",
        "partition_key",
        "approximate_arrival",
        "data",
    }
    assert sorted(r["data"] for r in rows) == sorted(d.decode() for _, d in numbered(100))
    logs = [json.loads(line) for line in result.stderr.splitlines()]
    assert {"started", "stopped", "status"} <= {entry["event"] for entry in logs}
    assert logs[-1]["event"] == "status" and logs[-1]["records"] == 100
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    assert oct(out.stat().st_mode & 0o777) == "0o600"


def test_a_second_consumer_of_the_same_stream_is_refused(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    db = tmp_path / "c.db"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "console",
            "run",
            stream,
            "--endpoint-url",
            kinesalite,
            "--db",
            str(db),
            "--duration",
            "30",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stderr is not None
        for line in first.stderr:
            if "consuming" in line:
                break
        before = sqlite3.connect(db).execute("SELECT count(*) FROM history").fetchone()
        second = run_cli("run", stream, "--endpoint-url", kinesalite, "--db", str(db))
        one_line_error(second, f"being consumed by pid {first.pid}")
        after = sqlite3.connect(db).execute("SELECT count(*) FROM history").fetchone()
        assert before == after
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(10)


def test_sigterm_finishes_flushes_and_exits_0_within_5_s(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    db = tmp_path / "c.db"
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "console",
                "run",
                stream,
                "--endpoint-url",
                kinesalite,
                "--db",
                str(db),
                "--processor",
                f"jsonl:{out}",
                "--flush-interval",
                "60",
                "--status-interval",
                "0.2",
            ],
            stderr=err,
            text=True,
        )

    def records_read() -> int:
        counts = re.findall(r"\| (\d+) records", log.read_text())
        return int(counts[-1]) if counts else 0

    # Records are read, none flushed (the processor's file and the checkpoints wait for a
    # flush, every 60 s): the status line says how many.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and records_read() < 100:
        time.sleep(0.05)
    if records_read() < 100:
        proc.kill()  # not left running behind a failed test
        proc.wait()
    assert records_read() >= 100, log.read_text()
    assert (
        not sqlite3.connect(db)
        .execute("SELECT count(*) FROM checkpoints WHERE position LIKE 'after_sequence:%'")
        .fetchone()[0]
    )
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(10)
    elapsed = time.monotonic() - t0
    assert rc == 0, log.read_text()
    assert elapsed < 5, elapsed
    # The flush interval was 60 s: only the shutdown flush can have written these.
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) >= 100
    last: dict[str, str] = {}
    for r in rows:
        last[r["shard_id"]] = r["sequence_number"]
    conn = sqlite3.connect(db)
    saved = dict(conn.execute("SELECT shard_id, position FROM checkpoints").fetchall())
    for shard_id, seq in last.items():
        assert saved[shard_id] == f"after_sequence:{seq}"


def test_demo_runs_headless_with_nothing_but_the_package(tmp_path: Path) -> None:
    result = run_cli("demo", "--no-ui", "--duration", "4", "--rate", "50", "--status-interval", "1")
    assert result.returncode == 0, result.stderr
    assert "demo endpoint http://127.0.0.1:" in result.stderr
    assert "stream 'demo' with 4 shards" in result.stderr
    status = [line for line in result.stderr.splitlines() if " STATUS " in line]
    assert status and "active=4" in status[-1]
    records = int(status[-1].split(" records")[0].rsplit("| ", 1)[-1])
    assert records >= 100


def test_initial_position_at_a_timestamp_on_a_fresh_stream(demo_endpoint, tmp_path: Path) -> None:
    e = demo_endpoint
    e.call(e.kinesis.create_stream, "fresh", 2)
    for i in range(10):
        e.call(e.kinesis.put, "fresh", f"k{i}", f"old:{i}".encode())
    instant = past(time.time()) + 0.01  # instants go in milliseconds: keep records clear
    past(instant)
    for i in range(10):
        e.call(e.kinesis.put, "fresh", f"k{i}", f"new:{i}".encode())
    out = tmp_path / "out.jsonl"
    from console.model import format_ts

    result = run_cli(
        "run", "fresh", "--endpoint-url", e.url, "--db", str(tmp_path / "c.db"),
        "--processor", f"jsonl:{out}", "--initial-position", f"at_timestamp:{format_ts(instant)}",
        "--max-records", "10",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    got = sorted(json.loads(line)["data"] for line in out.read_text().splitlines())
    assert got == sorted(f"new:{i}" for i in range(10))


def test_initial_position_latest_on_a_fresh_stream_reads_only_what_comes(
    demo_endpoint, tmp_path: Path
) -> None:
    e = demo_endpoint
    e.call(e.kinesis.create_stream, "fresh", 2)
    for i in range(10):
        e.call(e.kinesis.put, "fresh", f"k{i}", f"old:{i}".encode())
    out = tmp_path / "out.txt"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "console", "run", "fresh", "--endpoint-url", e.url,
                "--db", str(tmp_path / "c.db"), "--processor", "print",
                "--initial-position", "latest", "--idle-interval", "0.1",
            ],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if "consuming 'fresh'" in line:
                    break
            for i in range(5):
                e.call(e.kinesis.put, "fresh", f"k{i}", f"new:{i}".encode())
            deadline = time.monotonic() + 30
            while len(out.read_text().splitlines()) < 5:
                assert time.monotonic() < deadline, out.read_text()
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
    # The new ones, and none of what was there before the first start (that would come first).
    got = sorted(line.split()[-1] for line in out.read_text().splitlines())
    assert got == [f"new:{i}" for i in range(5)]


def test_a_fatal_error_while_running_exits_1_with_one_error_line(
    kinesalite: str, tmp_path: Path
) -> None:
    """The stream is deleted under a running consumer: the run stops, exit 1, and one ERROR
    line says why the run failed; the checkpoints keep what was processed."""
    import asyncio

    name = unique("gone")
    k = Kinesis(kinesalite)
    asyncio.run(k.create(name, 1))
    asyncio.run(k.put(name, numbered(10)))
    db = tmp_path / "c.db"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "console", "run", name, "--endpoint-url", kinesalite,
            "--db", str(db), "--no-ui", "--discovery-interval", "0.3", "--flush-interval", "0.2",
            "--log-format", "json",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        tips = {sid: f"after_sequence:{seq}" for sid, seq in Kinesis.tips[name].items()}
        deadline = time.monotonic() + 30
        while checkpoints_in(db) != tips:  # read and flushed to its end
            assert time.monotonic() < deadline and proc.poll() is None, checkpoints_in(db)
            time.sleep(0.05)

        async def delete() -> None:
            async with k.client() as client:
                await client.delete_stream(StreamName=name)

        asyncio.run(delete())
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    lines = [json.loads(line) for line in err.splitlines()]
    [failed] = [e for e in lines if e["event"] == "run_failed"]
    assert failed["level"] == "error" and failed["message"].startswith("shard discovery failed")
    assert f"stream '{name}' not found" in failed["message"]
    assert checkpoints_in(db) == tips  # what was processed stays checkpointed


def test_the_default_database_lives_in_a_private_folder(
    kinesalite: str, stream: str, tmp_path: Path
) -> None:
    data = tmp_path / "xdg-data"
    result = run_cli(
        "run", stream, "--endpoint-url", kinesalite, "--no-ui", "--max-records", "10",
        env={"XDG_DATA_HOME": str(data)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    folder = data / "shard-console"
    db = folder / "checkpoints.db"
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    assert len(checkpoints_in(db)) == 2
    info = run_cli("info", env={"XDG_DATA_HOME": str(data)})
    assert str(db) in info.stdout


def test_every_flag_of_every_command_says_what_it_does() -> None:
    """--help is the first thing a newcomer reads: no option without a line of help."""
    import argparse

    from console.cli.commands import build_parser

    def parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield parser.prog, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    silent = [
        f"{prog} {'/'.join(action.option_strings) or action.dest}"
        for prog, parser in parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        and action.help is None
    ]
    assert silent == []


def test_a_word_flag_is_parsed_as_its_variable_is() -> None:
    """--log-format JSON is SHARD_CONSOLE_LOG_FORMAT=JSON: one parser for both, not argparse's
    choices for one of them."""
    from console.cli.commands import build_parser
    from console.errors import UsageError
    from console.settings import flags_given, load_settings

    parser = build_parser()
    args = parser.parse_args(["run", "s", "--log-format", "JSON", "--read-path", "Botocore"])
    settings = load_settings(flags_given(args), env={})[0]
    assert (settings.log_format, settings.read_path) == ("json", "botocore")
    bad = parser.parse_args(["run", "s", "--log-format", "xml"])
    with pytest.raises(UsageError, match="--log-format must be one of text, json, not 'xml'"):
        load_settings(flags_given(bad), env={})
    assert "{text,json}" in parser._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]


def test_a_dumb_terminal_is_told_to_run_headless(monkeypatch: pytest.MonkeyPatch) -> None:
    from console.cli.launch import check_ui
    from console.errors import UsageError
    from console.settings import Settings

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setenv("TERM", "dumb")
    with pytest.raises(UsageError, match=r"dumb terminal.*--no-ui"):
        check_ui(Settings())
    monkeypatch.setenv("TERM", "xterm-256color")
    check_ui(Settings())
    check_ui(Settings(no_ui=True))  # headless needs no terminal at all
    # ... but a configuration is refused whole, headless too.
    with pytest.raises(UsageError, match="nonsense"):
        check_ui(Settings(no_ui=True, keys={"nonsense": "x"}))
    with pytest.raises(UsageError, match="unknown theme 'no-such-theme'"):
        check_ui(Settings(no_ui=True, theme="no-such-theme"))
