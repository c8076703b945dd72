"""The bad-input catalogue: every kind of wrong an operator can hand us, each answered with one
line that says what is wrong and what to do, the documented exit code (2 for usage and
configuration, 1 for a run that fails), and the checkpoints left exactly as they were."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import Kinesis, numbered, read_only, run_cli, unique


def tables(db: Path) -> tuple[list[tuple], list[tuple]]:
    """Checkpoints and history: what an error must never move."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return (
            conn.execute("SELECT * FROM checkpoints ORDER BY 1, 2").fetchall(),
            conn.execute("SELECT * FROM history ORDER BY 1").fetchall(),
        )
    finally:
        conn.close()


@dataclass
class Case:
    name: str
    args: list[str]
    needle: str
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    around: Callable[[], object] | None = None  # a context manager to run the command in


def test_the_catalogue(kinesalite: str, tmp_path: Path) -> None:
    silent, failing = Silent(), Failing()
    try:
        catalogue(kinesalite, tmp_path, silent, failing)
    finally:
        silent.stop()
        failing.stop()


class Silent:
    """An endpoint that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> None:
        self.sock.listen()
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.sock.accept()[0])

    def stop(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class Failing:
    """An endpoint that answers every call with a 500."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def catalogue(kinesalite: str, tmp_path: Path, silent: Silent, failing: Failing) -> None:
    name = unique("bad")
    k = Kinesis(kinesalite)
    asyncio.run(k.create(name, 2))
    asyncio.run(k.put(name, numbered(40, keys=4)))
    db = tmp_path / "c.db"
    first = run_cli(
        "run", name, "--endpoint-url", kinesalite, "--db", str(db), "--no-ui",
        "--max-records", "40",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    shard = tables(db)[0][0][1]
    # New records, so a processor has something to hang on.
    asyncio.run(k.put(name, numbered(10, keys=4, start=40)))

    run = ["run", name, "--endpoint-url", kinesalite, "--db", str(db), "--no-ui"]
    (tmp_path / "broken.toml").write_text("flush_interval = [oops\n")
    (tmp_path / "unknown.toml").write_text("flush_intervall = 5\n")
    (tmp_path / "hang_proc.py").write_text(
        "import asyncio\n\nasync def handle(records, ctx):\n    await asyncio.sleep(3600)\n"
    )
    # A plain function that hangs: its thread must not keep the stopped run alive.
    (tmp_path / "hang_plain.py").write_text(
        "import time\n\ndef handle(records, ctx):\n    time.sleep(3600)\n"
    )
    (tmp_path / "out").mkdir()
    locked = tmp_path / "locked"
    locked.mkdir()
    newer = tmp_path / "newer.db"
    shutil.copy(db, newer)
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100 + b"garbage" * 1000)

    cases = [
        Case("unknown stream", ["run", "no-such-stream", "--endpoint-url", kinesalite,
             "--db", str(db), "--no-ui"], "stream 'no-such-stream' not found"),
        Case("unreachable endpoint", ["run", name, "--endpoint-url", "http://127.0.0.1:9",
             "--db", str(db), "--no-ui"], "cannot reach the endpoint"),
        Case("no credentials", run, "no AWS credentials",
             unset=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")),
        Case("unknown AWS profile", [*run, "--profile", "nobody-has-this"], "profile 'nobody-has-this' not found"),
        Case("malformed TOML", [*run, "--config", str(tmp_path / "broken.toml")], "broken.toml"),
        Case("unknown config key", [*run, "--config", str(tmp_path / "unknown.toml")], "flush_intervall"),
        Case("missing config file", [*run, "--config", str(tmp_path / "none.toml")], "none.toml"),
        Case("negative duration", [*run, "--flush-interval", "-1"], "--flush-interval must be a positive"),
        Case("unknown theme", [*run[:-1], "--theme", "no-such-theme"], "no-such-theme",
             env={"SHARD_CONSOLE_NO_UI": "0"}),
        Case("bad initial position", [*run, "--initial-position", "yesterday"], "invalid initial position"),
        Case("unknown processor", [*run, "--processor", "frobnicate"], "unknown processor"),
        Case("processor not importable", [*run, "--processor", "no_such_mod_xyz:handle"],
             "cannot import processor module"),
        Case("bad fault spec", [*run, "--inject-faults", "gremlins=0.5"], "unknown fault kind"),
        Case("DynamoDB ARN read as Kinesis", ["run", "--source", "kinesis",
             "arn:aws:dynamodb:us-east-1:123456789012:table/tbl/stream/2026-01-01T00:00:00.000",
             "--db", str(db), "--no-ui"], "is a DynamoDB stream ARN"),
        Case("not a Kinesis ARN", ["run", "arn:aws:sqs:us-east-1:123456789012:queue",
             "--db", str(db), "--no-ui"], "is not a Kinesis stream ARN"),
        Case("not a sequence number", ["rewind", shard, "--to", "sequence:12ab", "--db", str(db),
             "--yes"], "not a sequence number"),
        Case("a sequence number the shard never had", ["rewind", shard, "--to", "sequence:1",
             "--db", str(db), "--yes"], "before the first"),
        Case("a time in the future", ["rewind", shard, "--to", "timestamp:2999-01-01T00:00:00Z",
             "--db", str(db), "--yes"], "in the future"),
        Case("unknown shard", ["pause", "shardId-000000000099", "--db", str(db), "--yes"], "unknown shard"),
        Case("a stream the database does not hold", ["pause", shard, "--stream", "other",
             "--db", str(db), "--yes"], "holds no stream 'other'"),
        Case("database from a newer version", [*run[:-3], "--db", str(newer), "--no-ui"], "newer than"),
        Case("corrupt database", [*run[:-3], "--db", str(corrupt), "--no-ui"], "corrupt"),
        Case("processor that hangs", [*run, "--processor", "hang_proc:handle",
             "--processor-timeout", "1"], "did not return within 1 s", code=1,
             env={"PYTHONPATH": str(tmp_path)}),
        Case("plain function that hangs", [*run, "--processor", "hang_plain:handle",
             "--processor-timeout", "1"], "did not return within 1 s", code=1,
             env={"PYTHONPATH": str(tmp_path)}),
        Case("jsonl into a folder", [*run, "--processor", f"jsonl:{tmp_path / 'out'}"],
             "is a folder: name a file in it"),
        Case("jsonl into a folder it cannot write", [*run, "--processor",
             f"jsonl:{locked / 'o.jsonl'}"], "is not writable", around=lambda: read_only(locked)),
        Case("endpoint that never answers", ["run", name, "--endpoint-url", silent.url,
             "--db", str(db), "--no-ui"], "accepted the connection but did not answer"),
        Case("endpoint answering 500", ["run", name, "--endpoint-url", failing.url,
             "--db", str(db), "--no-ui"], "(3 tries): check --endpoint-url"),
        Case("malformed region", [*run, "--region", "us east"], "pass a region name"),
        Case("misspelt variable", run, "unknown environment variable SHARD_CONSOLE_DB_PATH",
             env={"SHARD_CONSOLE_DB_PATH": "x"}),
        Case("infinite interval", [*run, "--flush-interval", "inf"], "--flush-interval must be"),
        Case("a time before 1970", ["rewind", shard, "--to=-99999999d", "--db", str(db),
             "--yes"], "is before 1970"),
    ]  # fmt: skip
    before = tables(db)
    silent.start()
    failing.start()
    files = {p: p.read_bytes() for p in (newer, corrupt)}
    for case in cases:
        env = {k: v for k, v in os.environ.items() if k not in case.unset}
        env.update(case.env)
        t0 = time.monotonic()
        with case.around() if case.around is not None else nullcontext():  # type: ignore[attr-defined]
            result = subprocess.run(
                [sys.executable, "-m", "console", *case.args],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                check=False,
            )
        lines = [line for line in result.stderr.strip().splitlines() if line]
        errors = lines if case.code == 2 else [line for line in lines if "ERROR" in line]
        assert result.returncode == case.code, (case.name, result.returncode, result.stderr)
        assert len(errors) == 1 and case.needle in errors[0], (case.name, result.stderr)
        assert time.monotonic() - t0 < 30, case.name
        assert tables(db) == before, f"{case.name} moved a checkpoint or history"
        for path, content in files.items():
            assert path.read_bytes() == content, f"{case.name} changed {path.name}"


def test_a_locked_database_is_reported_not_waited_on_forever(
    kinesalite: str, tmp_path: Path
) -> None:
    """Another process holds a write transaction open: after SQLite's busy timeout (10 s) the
    run says so in one line, exit 2."""
    name = unique("lock")
    asyncio.run(Kinesis(kinesalite).create(name, 1))
    db = tmp_path / "c.db"
    ok = run_cli(
        "run", name, "--endpoint-url", kinesalite, "--db", str(db), "--no-ui", "--duration", "1"
    )
    assert ok.returncode == 0, ok.stderr
    holder = sqlite3.connect(db, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        result = run_cli(
            "run", name, "--endpoint-url", kinesalite, "--db", str(db), "--no-ui",
            "--duration", "1", timeout=90,
        )  # fmt: skip
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "locked" in lines[0], result.stderr
        assert time.monotonic() - t0 < 60
    finally:
        holder.rollback()
        holder.close()


def test_a_read_only_database_is_refused_untouched(kinesalite: str, tmp_path: Path) -> None:
    name = unique("ro")
    asyncio.run(Kinesis(kinesalite).create(name, 1))
    db = tmp_path / "c.db"
    run = ["run", name, "--endpoint-url", kinesalite, "--db", str(db), "--no-ui"]
    assert run_cli(*run, "--duration", "1").returncode == 0
    before, content = tables(db), db.read_bytes()
    with read_only(db):
        result = run_cli(*run)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "read-only" in lines[0], result.stderr
    assert tables(db) == before and db.read_bytes() == content
